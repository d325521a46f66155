// The playground page (index.html): log in, write code, run it on this API and follow it live,
// re-open earlier tasks. A module; the editor (editor.js, a classic script before it) is the
// global PlaygroundEditor.
//
// Same origin only: every request is a fetch() to a path of this service (api.js), with the
// login token (kept in sessionStorage, gone with the tab) as `Authorization: Bearer`. The live
// output comes from task-events.js, the files out from files-out.js.
import { call, failure, request, session } from "./api.js";
import { FilesOut, byteSize } from "./files-out.js";
import { follow } from "./task-events.js";

const TOKEN_KEY = "taskservice.playground.token";
const LIST_PAGE = 20;
const SAMPLES = {
  python: [
    "import platform",
    "import sys",
    "",
    'print("Hello from Python", platform.python_version())',
    "for line in sys.stdin:",
    '    print("stdin:", line.rstrip())',
    "",
  ].join("\n"),
  "python-data": [
    "import os",
    "",
    "import matplotlib.pyplot as plt",
    "import numpy as np",
    "",
    "x = np.linspace(0, 2 * np.pi, 200)",
    'plt.plot(x, np.sin(x), label="sin")',
    'plt.plot(x, np.cos(x), label="cos")',
    "plt.legend()",
    'os.makedirs("out", exist_ok=True)',
    'plt.savefig("out/plot.png", dpi=100)',
    'print("saved out/plot.png")',
    "",
  ].join("\n"),
  bash: ['echo "Hello from bash $BASH_VERSION"', 'while read -r line; do echo "stdin: $line"; done', ""].join(
    "\n",
  ),
};

const $ = (id) => document.getElementById(id);
const state = {
  editor: null,
  language: "python",
  limits: {}, // GET /languages's entries by name
  files: [], // [{name, content (base64), size}]
  run: null, // {taskId, controller} while a task is followed
  cursor: null, // GET /tasks's next_cursor
};

const filesOut = new FilesOut({
  box: $("artifacts-box"),
  note: $("artifacts-note"),
  images: $("images"),
  downloads: $("downloads"),
  onError: (message) => say(message),
});
// What a followed task's events do to the page.
const liveOutput = {
  onStatus: (status) => showStatus(status),
  onOutput: (stream, text) => append(stream, text),
  onRestart: () => {
    for (const stream of ["stdout", "stderr"]) $(stream).replaceChildren();
  },
};
session.token = sessionStorage.getItem(TOKEN_KEY);
session.onUnauthorized = () => signOut("Your session has ended; log in again.");

// --- Messages and account ---------------------------------------------------------------

function say(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = !text;
}

function showAccount(username) {
  $("login-form").hidden = Boolean(username);
  $("signed-in").hidden = !username;
  $("who").textContent = username || "";
  $("run").disabled = !username || state.run !== null;
  if (!username) {
    $("tasks").replaceChildren();
    $("more").hidden = true;
  }
}

function signOut(why) {
  stopFollowing();
  session.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showAccount(null);
  if (why) say(why);
}

async function logIn(register) {
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username || !password) return say("Give a username and a password.");
  try {
    if (register) await call("POST", "/register", { body: { username, password } });
    const login = await call("POST", "/login", { body: { username, password } });
    session.token = login.token;
    sessionStorage.setItem(TOKEN_KEY, login.token);
    $("password").value = "";
    say(register ? `Registered and signed in as ${username}.` : "", "info");
    showAccount(username);
    await loadTasks(false);
  } catch (error) {
    say(error.message);
  }
}

// --- Languages, editor, inputs ----------------------------------------------------------

async function loadLanguages() {
  const select = $("language");
  try {
    const { languages } = await call("GET", "/languages");
    state.limits = Object.fromEntries(languages.map((language) => [language.name, language]));
    select.replaceChildren(
      ...languages.map((language) => {
        const option = document.createElement("option");
        option.value = language.name;
        option.textContent = language.version ? `${language.name} ${language.version}` : language.name;
        option.title = `time limit ${language.default_timeout} s (max ${language.max_timeout}), memory ${language.default_memory_mb} MiB (max ${language.max_memory_mb})`;
        return option;
      }),
    );
    selectLanguage(languages.some((l) => l.name === state.language) ? state.language : languages[0]?.name);
  } catch (error) {
    say(`Could not read the languages: ${error.message}`);
  }
}

function selectLanguage(name) {
  if (!name) return;
  const previous = state.language;
  state.language = name;
  $("language").value = name;
  const limits = state.limits[name];
  if (limits) {
    $("timeout").placeholder = String(limits.default_timeout);
    $("timeout").max = limits.max_timeout;
    $("memory").placeholder = String(limits.default_memory_mb);
    $("memory").max = limits.max_memory_mb;
  }
  state.editor.setLanguage(name);
  const code = state.editor.getCode();
  if (name !== previous && (!code.trim() || code === SAMPLES[previous])) {
    state.editor.setCode(SAMPLES[name] ?? "");
  }
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  const binary = atob((text || "").replace(/\s+/g, ""));
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}

async function pickFiles() {
  const chosen = [...$("files").files];
  state.files = await Promise.all(
    chosen.map(async (file) => ({
      name: file.name,
      size: file.size,
      content: toBase64(new Uint8Array(await file.arrayBuffer())),
    })),
  );
  $("file-list").replaceChildren(
    ...state.files.map((file) => {
      const item = document.createElement("li");
      item.textContent = `${file.name} (${byteSize(file.size)})`;
      return item;
    }),
  );
  $("clear-files").hidden = state.files.length === 0;
}

function clearFiles() {
  $("files").value = "";
  pickFiles();
}

// --- The run and its output -------------------------------------------------------------

function resetOutput(taskId) {
  for (const stream of ["stdout", "stderr"]) {
    $(stream).replaceChildren();
    delete $(stream).dataset.chunks;
  }
  $("limits").replaceChildren();
  filesOut.clear();
  $("task-id").textContent = taskId || "";
  showStatus(taskId ? "queued" : "no run yet");
}

function showStatus(status) {
  const badge = $("status");
  badge.textContent = status.replace("_", " ");
  badge.className = `badge ${status}`;
  badge.dataset.status = status;
}

function append(stream, text) {
  const pane = $(stream);
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 8;
  pane.append(document.createTextNode(text));
  pane.dataset.chunks = String(Number(pane.dataset.chunks || 0) + 1); // how many came live
  if (atBottom) pane.scrollTop = pane.scrollHeight;
}

async function run() {
  if (!session.token) return say("Log in or register first.");
  if (state.run) return;
  say("");
  const body = { code: state.editor.getCode(), language: state.language };
  const stdin = $("stdin").value;
  if (stdin) body.stdin = stdin;
  // Empty: the language's defaults (GET /languages shows them as the fields' placeholders).
  if ($("timeout").value) body.timeout = Number($("timeout").value);
  if ($("memory").value) body.memory_mb = Number($("memory").value);
  if (state.files.length) {
    body.files = state.files.map(({ name, content }) => ({ name, content, encoding: "base64" }));
  }
  const controller = new AbortController();
  state.run = { taskId: null, controller };
  $("run").disabled = true;
  try {
    const { task_id: taskId } = await call("POST", "/task", { body, signal: controller.signal });
    state.run.taskId = taskId;
    history.replaceState(null, "", `#task=${taskId}`);
    resetOutput(taskId);
    $("cancel").hidden = false;
    loadTasks(false);
    const result = await follow(taskId, controller.signal, liveOutput);
    await showResult(taskId, result, controller.signal);
    loadTasks(false);
    // A worker reports a language's version once it has asked the image: maybe by now.
    if (Object.values(state.limits).some((language) => !language.version)) loadLanguages();
  } catch (error) {
    if (!controller.signal.aborted) say(error.message);
  } finally {
    if (state.run?.controller === controller) {
      state.run = null;
      $("cancel").hidden = true;
      $("run").disabled = !session.token;
    }
  }
}

function stopFollowing() {
  if (!state.run) return;
  state.run.controller.abort();
  state.run = null;
  $("cancel").hidden = true;
  $("run").disabled = !session.token;
}

async function cancel() {
  const taskId = state.run?.taskId;
  if (!taskId) return;
  try {
    await call("POST", `/task/${taskId}/cancel`);
  } catch (error) {
    say(error.message);
  }
}

// The stored result is the truth: it replaces what was streamed.
async function showResult(taskId, result, signal) {
  showStatus(result.status);
  $("stdout").replaceChildren(result.stdout || "");
  $("stderr").replaceChildren(result.stderr || "");
  for (const [stream, cut] of [
    ["stdout", result.stdout_truncated],
    ["stderr", result.stderr_truncated],
  ]) {
    if (cut) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = "\n[cut at the output limit]";
      $(stream).append(note);
    }
  }
  const facts = [
    ["exit code", result.exit_code],
    ["signal", result.signal],
    ["error", result.error],
    ["duration", result.duration_ms == null ? null : `${result.duration_ms} ms`],
    ["time limit", result.timeout == null ? null : `${result.timeout} s`],
    ["memory limit", result.memory_mb == null ? null : `${result.memory_mb} MiB`],
    ["memory peak", result.memory_peak_bytes == null ? null : byteSize(result.memory_peak_bytes)],
    ["out of memory", result.oom_killed ? "yes: killed" : null],
  ];
  $("limits").replaceChildren(
    ...facts
      .filter(([, value]) => value !== null && value !== undefined)
      .flatMap(([name, value]) => {
        const term = document.createElement("dt");
        term.textContent = name;
        const detail = document.createElement("dd");
        detail.textContent = String(value);
        detail.dataset.fact = name;
        return [term, detail];
      }),
  );
  await filesOut.show(taskId, result, signal);
}

// --- Earlier tasks ----------------------------------------------------------------------

async function loadTasks(more) {
  if (!session.token) return;
  const query = new URLSearchParams({ limit: String(LIST_PAGE) });
  if (more && state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await call("GET", `/tasks?${query}`);
    const items = page.tasks.map((task) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.taskId = task.task_id;
      button.classList.toggle("current", task.task_id === currentTaskId());
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = new Date(task.created_at).toLocaleString();
      button.append(`${task.language} · ${task.status.replace("_", " ")}`, when);
      button.addEventListener("click", () => reopen(task.task_id, task.language));
      item.append(button);
      return item;
    });
    if (more) $("tasks").append(...items);
    else $("tasks").replaceChildren(...items);
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
  } catch (error) {
    say(`Could not list your tasks: ${error.message}`);
  }
}

const currentTaskId = () => (location.hash.match(/^#task=([0-9a-f-]{36})$/) || [])[1];

// An earlier task, back in the page: its code and stdin (read as its Judge0 submission, the
// API's one view of a task's source), its language, and its result or live output.
async function reopen(taskId, language) {
  stopFollowing();
  say("");
  history.replaceState(null, "", `#task=${taskId}`);
  for (const button of $("tasks").querySelectorAll("button")) {
    button.classList.toggle("current", button.dataset.taskId === taskId);
  }
  resetOutput(taskId);
  const controller = new AbortController();
  state.run = { taskId, controller };
  $("run").disabled = true;
  try {
    const status = await call("GET", `/status/${taskId}`, { signal: controller.signal });
    if (language || status.language) selectLanguage(language || status.language);
    showStatus(status.status);
    try {
      const source = await call(
        "GET",
        `/judge0/submissions/${taskId}?base64_encoded=true&fields=source_code,stdin`,
        { signal: controller.signal },
      );
      state.editor.setCode(fromBase64(source.source_code));
      $("stdin").value = fromBase64(source.stdin);
    } catch (error) {
      if (controller.signal.aborted) throw error;
      say(`Could not read the task's code: ${error.message}`);
    }
    const response = await request("GET", `/result/${taskId}`, { signal: controller.signal });
    if (response.status === 410) {
      say("This task's code and output were deleted.", "info");
      return;
    }
    if (response.status === 202) {
      $("cancel").hidden = false;
      const result = await follow(taskId, controller.signal, liveOutput);
      await showResult(taskId, result, controller.signal);
      loadTasks(false);
      return;
    }
    if (!response.ok) throw await failure(response);
    const result = await response.json();
    showLimitsAsked(result);
    await showResult(taskId, result, controller.signal);
  } catch (error) {
    if (!controller.signal.aborted) say(error.message);
  } finally {
    if (state.run?.controller === controller) {
      state.run = null;
      $("cancel").hidden = true;
      $("run").disabled = !session.token;
    }
  }
}

// A re-opened task's limits back in their fields, where they were not the language's defaults.
function showLimitsAsked(result) {
  const defaults = state.limits[state.language] || {};
  $("timeout").value = result.timeout && result.timeout !== defaults.default_timeout ? result.timeout : "";
  $("memory").value =
    result.memory_mb && result.memory_mb !== defaults.default_memory_mb ? result.memory_mb : "";
}

// --- Start ------------------------------------------------------------------------------

async function start() {
  state.editor = PlaygroundEditor.create($("editor"), {
    doc: SAMPLES.python,
    language: "python",
    onRun: run,
  });
  // Now, before anything is awaited: later it could take the focus from a field being typed in.
  state.editor.focus();
  $("login-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    logIn(false);
  });
  $("register").addEventListener("click", () => logIn(true));
  $("logout").addEventListener("click", () => {
    signOut(null);
    say("");
    resetOutput(null);
    history.replaceState(null, "", location.pathname);
  });
  $("language").addEventListener("change", (change) => selectLanguage(change.target.value));
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("files").addEventListener("change", pickFiles);
  $("clear-files").addEventListener("click", clearFiles);
  $("refresh").addEventListener("click", () => loadTasks(false));
  $("more").addEventListener("click", () => loadTasks(true));
  document.addEventListener("keydown", (key) => {
    // The editor handles its own Ctrl-Enter (and marks the event handled).
    if ((key.ctrlKey || key.metaKey) && key.key === "Enter" && !key.defaultPrevented) {
      key.preventDefault();
      run();
    }
  });

  await loadLanguages();
  if (session.token) {
    try {
      const me = await call("GET", "/me");
      showAccount(me.username);
      await loadTasks(false);
      const taskId = currentTaskId();
      if (taskId) reopen(taskId);
    } catch (error) {
      if (session.token) say(error.message);
    }
  } else {
    showAccount(null);
  }
}

start();
