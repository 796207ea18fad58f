// taskengine dashboard: the task list kept live over Server-Sent Events.
"use strict";

const FINISHED = new Set(["completed", "failed", "cancelled"]);
const tasks = new Map();
const $ = (id) => document.getElementById(id);
let token = takeToken();
let source = null;

function takeToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem("taskengine-token", fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    return fromUrl;
  }
  return sessionStorage.getItem("taskengine-token") || "";
}

function withToken(path) {
  if (!token) return path;
  const sep = path.includes("?") ? "&" : "?";
  return path + sep + "token=" + encodeURIComponent(token);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) $("token-panel").hidden = false;
  if (response.status === 204) return { ok: true, body: null };
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  return { ok: response.ok, status: response.status, body };
}

function errorText(result) {
  const detail = result.body && result.body.detail;
  if (detail && detail.message) return detail.message;
  return "The request failed with status " + result.status + ".";
}

function say(text, isError) {
  const out = $("submit-message");
  out.textContent = text;
  out.className = isError ? "error" : "";
}

function setConnection(state) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = state;
}

function formatDuration(task) {
  if (!task.started_at) return "";
  const start = Date.parse(task.started_at);
  const end = task.completed_at ? Date.parse(task.completed_at) : Date.now();
  const seconds = Math.max(0, (end - start) / 1000);
  return seconds < 60 ? seconds.toFixed(1) + " s" : (seconds / 60).toFixed(1) + " min";
}

function detailText(task) {
  if (task.error) return task.error;
  if (task.status !== "completed") return "";
  const text = JSON.stringify(task.result);
  return (task.from_cache ? "(cached) " : "") + (text === undefined ? "" : text);
}

function cell(row, name) {
  let td = row.querySelector("td." + name);
  if (!td) {
    td = document.createElement("td");
    td.className = name;
    row.appendChild(td);
  }
  return td;
}

function buildRow(task) {
  const row = document.createElement("tr");
  row.dataset.taskId = task.id;
  ["id", "type", "status", "progress", "duration", "created", "detail", "actions"]
    .forEach((name) => cell(row, name));
  cell(row, "id").textContent = task.id.slice(0, 8);
  cell(row, "id").title = task.id;
  const bar = document.createElement("div");
  bar.className = "bar progress";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "1");
  const fill = document.createElement("div");
  fill.className = "fill";
  bar.appendChild(fill);
  cell(row, "progress").appendChild(bar);
  const cancel = document.createElement("button");
  cancel.className = "cancel";
  cancel.type = "button";
  cancel.textContent = "Cancel";
  cancel.addEventListener("click", () => cancelTask(task.id));
  cell(row, "actions").appendChild(cancel);
  return row;
}

function render(task) {
  const body = $("task-rows");
  let row = body.querySelector('tr[data-task-id="' + CSS.escape(task.id) + '"]');
  if (!row) {
    row = buildRow(task);
    body.insertBefore(row, body.firstChild);
  }
  row.dataset.status = task.status;
  row.dataset.taskType = task.task_type || "";
  cell(row, "type").textContent = task.task_type || "";
  const status = cell(row, "status");
  status.textContent = task.status;
  status.className = "status status-" + task.status;
  const bar = row.querySelector(".bar");
  const progress = Math.max(0, Math.min(1, Number(task.progress) || 0));
  bar.setAttribute("aria-valuenow", String(progress));
  bar.firstChild.style.width = (progress * 100).toFixed(1) + "%";
  cell(row, "duration").textContent = formatDuration(task);
  cell(row, "created").textContent = task.created_at
    ? new Date(task.created_at).toLocaleTimeString() : "";
  const detail = cell(row, "detail");
  detail.textContent = detailText(task);
  detail.title = detail.textContent;
  row.querySelector("button.cancel").hidden = FINISHED.has(task.status);
  applyFilter(row);
  noteType(task.task_type);
}

function upsert(task) {
  const known = tasks.get(task.id);
  if (known && known.version >= task.version) return;
  tasks.set(task.id, task);
  render(task);
  updateCount();
}

function applyEvent(event) {
  if (!event.task_id || event.type === "subscribed") return;
  const known = tasks.get(event.task_id);
  if (!known) {
    if (event.type === "queued") {
      upsert({ id: event.task_id, status: event.status, progress: event.progress,
        task_type: event.task_type, created_at: event.at, started_at: null,
        completed_at: null, result: null, error: null, from_cache: false,
        version: event.version });
    } else {
      refreshTask(event.task_id);
    }
    return;
  }
  if (event.version <= known.version) return;
  const task = Object.assign({}, known, {
    status: event.status, progress: event.progress, version: event.version });
  if (event.type === "started") {
    task.started_at = event.at;
    task.completed_at = null;
    task.error = null;
  }
  if (FINISHED.has(event.status)) task.completed_at = event.at;
  if ("result" in event) task.result = event.result;
  if ("from_cache" in event) task.from_cache = event.from_cache;
  if ("error" in event) task.error = event.error;
  upsert(task);
}

async function refreshTask(id) {
  const result = await api("tasks/" + encodeURIComponent(id));
  if (result.ok) upsert(result.body);
}

async function cancelTask(id) {
  const result = await api("tasks/" + encodeURIComponent(id), { method: "DELETE" });
  say(result.ok ? "Cancelled " + id + "." : errorText(result), !result.ok);
}

function applyFilter(row) {
  const status = $("filter-status").value;
  const type = $("filter-type").value;
  row.hidden = (status && row.dataset.status !== status)
    || (type && row.dataset.taskType !== type);
}

function updateCount() {
  const rows = Array.from($("task-rows").rows);
  const shown = rows.filter((row) => !row.hidden).length;
  $("task-count").textContent = shown + " of " + rows.length + " tasks";
}

function refilter() {
  Array.from($("task-rows").rows).forEach(applyFilter);
  updateCount();
}

function noteType(type) {
  if (!type) return;
  [$("filter-type"), $("submit-type")].forEach((select) => {
    if (select.id === "submit-type" && select.dataset.loaded) return;
    if (Array.from(select.options).some((o) => o.value === type)) return;
    select.appendChild(new Option(type, type));
  });
}

async function loadTypes() {
  const result = await api("tasks/types");
  if (!result.ok) return say(errorText(result), true);
  const select = $("submit-type");
  select.replaceChildren(...result.body.task_types.map((t) => new Option(t, t)));
  select.dataset.loaded = "1";
  result.body.task_types.forEach(noteType);
}

async function loadTasks() {
  const result = await api("tasks?limit=500");
  if (!result.ok) return say(errorText(result), true);
  result.body.tasks.slice().reverse().forEach(upsert);
}

function connect() {
  if (source) source.close();
  // Opened before the task list is read, so no event falls in between.
  source = new EventSource(withToken("events"));
  source.onopen = () => setConnection("live");
  source.onmessage = (message) => applyEvent(JSON.parse(message.data));
  source.onerror = () => {
    setConnection(source.readyState === EventSource.CLOSED ? "error" : "reconnecting");
  };
}

async function submitTask(event) {
  event.preventDefault();
  say("Submitting...", false);
  let params;
  try {
    params = JSON.parse($("submit-params").value || "{}");
  } catch (e) {
    return say("Params must be a JSON object: " + e.message, true);
  }
  const body = { task_type: $("submit-type").value, params,
    priority: Number($("submit-priority").value) || 0 };
  const result = await api("tasks", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!result.ok) return say(errorText(result), true);
  upsert(result.body);
  say("Submitted " + result.body.id + ".", false);
}

async function start() {
  connect();
  await Promise.all([loadTypes(), loadTasks()]);
}

$("submit-form").addEventListener("submit", submitTask);
$("filter-status").addEventListener("change", refilter);
$("filter-type").addEventListener("change", refilter);
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token-input").value;
  sessionStorage.setItem("taskengine-token", token);
  $("token-panel").hidden = true;
  start();
});
setInterval(() => {
  tasks.forEach((task) => {
    if (task.status !== "running") return;
    const row = $("task-rows").querySelector('tr[data-task-id="' + CSS.escape(task.id) + '"]');
    if (row) cell(row, "duration").textContent = formatDuration(task);
  });
}, 500);
start();
