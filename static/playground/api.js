// Requests to the API that served the page, with the login token as `Authorization: Bearer`
// (the only credential: no cookies). Errors are the API's {"title", "description"}.

// The token, kept by the page (playground.js); `onUnauthorized` runs when the API refuses it.
export const session = { token: null, onUnauthorized: () => {} };

export class ApiError extends Error {
  constructor(status, title, description) {
    super(description ? `${title}: ${description}` : title);
    this.status = status;
  }
}

export async function request(method, path, { body, headers = {}, signal } = {}) {
  const sent = { ...headers };
  if (session.token) sent.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401 && session.token) session.onUnauthorized();
  return response;
}

export async function failure(response) {
  let title = `HTTP ${response.status}`;
  let description = "";
  try {
    const body = await response.json();
    title = body.title || title;
    description = body.description || "";
  } catch {
    // not the API's JSON (a proxy's page): the status says enough
  }
  return new ApiError(response.status, title, description);
}

// The answer's JSON (null for a 204), or an ApiError.
export async function call(method, path, options) {
  const response = await request(method, path, options);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
