// A task followed live: GET /task/{id}/events read with fetch() and a stream reader, since an
// EventSource cannot send the Authorization header.
import { failure, request, sleep } from "./api.js";

const MAX_CONNECTIONS = 30;

// Until the task's `result` event, which is returned. On a broken stream it connects again
// from the last event's id (Last-Event-ID), as an EventSource would; past MAX_CONNECTIONS it
// waits for the result with GET /result?wait= instead.
//   onStatus(status, attempt), onOutput("stdout" | "stderr", text),
//   onRestart(): the task runs again (another worker took it over): its output starts over.
export async function follow(taskId, signal, { onStatus, onOutput, onRestart }) {
  let lastId = null;
  let attempt = 0;
  let result = null;
  for (let tries = 0; result === null && tries < MAX_CONNECTIONS; tries++) {
    const headers = { Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const response = await request("GET", `/task/${taskId}/events`, { headers, signal });
    if (response.status === 204) break; // everything was sent already
    if (response.status === 503) {
      await sleep(1000 * Number(response.headers.get("Retry-After") || 5), signal);
      continue;
    }
    if (!response.ok) throw await failure(response);
    try {
      await readEvents(response.body, (event) => {
        if (event.id) lastId = event.id;
        const data = JSON.parse(event.data);
        if (event.type === "status") {
          if (attempt > 0 && data.attempt > attempt) onRestart();
          attempt = Math.max(attempt, data.attempt);
          onStatus(data.status, data.attempt);
        } else if (event.type === "stdout" || event.type === "stderr") {
          onOutput(event.type, data.data);
        } else if (event.type === "result") {
          result = data;
        }
      });
    } catch (error) {
      if (signal.aborted) throw error;
    }
    if (result === null) await sleep(1000, signal);
  }
  return result ?? (await waitForResult(taskId, signal));
}

async function waitForResult(taskId, signal) {
  for (;;) {
    const response = await request("GET", `/result/${taskId}?wait=30`, { signal });
    if (response.status === 200) return response.json();
    if (response.status !== 202) throw await failure(response);
  }
}

// Server-Sent Events from a fetch() body: an event ends at a blank line; `:` lines are comments.
export async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { type: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (event.data.length) onEvent({ type: event.type, id: event.id, data: event.data.join("\n") });
        event = { type: "message", id: null, data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.type = value;
        else if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
      }
    }
  }
}
