// Warren console: plain ES module, no framework, no third-party code (the page works offline).
//
// Safety: every value that comes from the broker (bodies, headers, names, errors) is put into
// the page with textContent / text nodes, never as HTML, so a "<script>" body stays inert.
// The Content-Security-Policy forbids inline scripts and style attributes: styling lives in
// app.css and only the CSSOM is touched from here.
//
// Responsiveness: stream events are only collected when they arrive; the DOM is updated once
// per animation frame from what changed, and the live list is bounded.

const MAX_RECORDS = 500;
const RATE_WINDOW_MS = 120_000;
const STATUS_POLL_MS = 5_000;
const REPLICA_STALE_FACTOR = 5; // missed heartbeats before a replica is shown as lost locally
const TOKEN_KEY = "warren.token";

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Build an element. Children given as strings become text nodes (never parsed as HTML). */
function h(tag, props = {}, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}

function setText(target, value) {
  const node = typeof target === "string" ? document.getElementById(target) : target;
  if (!node) return;
  const text = value === null || value === undefined ? "" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

const PILL_CLASSES = ["ok", "warn", "bad", "info"];
function setPill(target, text, tone) {
  const node = typeof target === "string" ? document.getElementById(target) : target;
  if (!node) return;
  setText(node, text);
  for (const cls of PILL_CLASSES) node.classList.toggle(cls, cls === tone);
  node.dataset.state = String(text);
}

function pill(text, tone, extra = {}) {
  return h("span", { class: `pill ${tone || ""}`.trim(), text, ...extra });
}

const TONES = {
  connected: "ok", alive: "ok", live: "ok", ok: "ok", acked: "ok", done: "ok", confirmed: "ok",
  consuming: "ok", available: "ok",
  reconnecting: "warn", requeued: "warn", queued: "info", running: "info", starting: "info",
  waiting: "warn", stopping: "warn", paused: "warn", duplicate: "info", cancelled: "warn",
  closed: "bad", lost: "bad", stopped: "", failed: "bad", dead_lettered: "bad", unavailable: "bad",
};
const tone = (state) => TONES[state] ?? "";

/** Only http(s) links from data are ever put into an href. */
function safeUrl(url) {
  if (typeof url !== "string" || !url) return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

function setLink(node, url, label) {
  const safe = safeUrl(url);
  if (safe) {
    node.href = safe;
    node.textContent = label || "open trace";
    node.hidden = false;
  } else {
    node.removeAttribute("href");
    node.textContent = "";
    node.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Formatting

const numberFormat = new Intl.NumberFormat("en-US");
const fmtNum = (n) => (typeof n === "number" && Number.isFinite(n) ? numberFormat.format(n) : "–");
function fmtRate(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  if (n === 0) return "0";
  return n < 10 ? n.toFixed(1) : numberFormat.format(Math.round(n));
}
function fmtMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}
/** A duration between two clocks: a negative one means the hosts' clocks disagree. */
function fmtSpan(ms) {
  if (typeof ms === "number" && ms < 0) return `${fmtMs(-ms)} before publish (clocks differ)`;
  return fmtMs(ms);
}
function fmtSeconds(s) {
  if (typeof s !== "number" || !Number.isFinite(s)) return "–";
  return s < 60 ? `${s.toFixed(s < 10 ? 2 : 1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
function fmtAgo(ms) {
  if (!Number.isFinite(ms)) return "–";
  const s = Math.max(0, ms / 1000);
  if (s < 1) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
function fmtValue(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
function prettyBody(body, contentType) {
  if (typeof body !== "string") return fmtValue(body);
  const looksJson = (contentType || "").includes("json") || /^\s*[[{]/.test(body);
  if (looksJson) {
    try {
      return JSON.stringify(JSON.parse(body), null, 2);
    } catch {
      // Truncated or not JSON after all: show it as it is.
    }
  }
  return body;
}

// ---------------------------------------------------------------------------------------------
// API client with the token dialog

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.field = this.body.field || null;
    this.details = this.body.details || null;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let tokenPrompt = null;

function askToken() {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        token = input.value.trim();
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        else sessionStorage.removeItem(TOKEN_KEY);
        input.value = "";
        tokenPrompt = null;
        resolve();
        if (token) stream.restart();
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

async function api(method, path, body) {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (exc) {
      throw new ApiError(0, { error: `gateway unreachable (${exc.message})` });
    }
    if (response.status === 401) {
      await askToken();
      continue;
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { error: text.slice(0, 300) };
      }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
  throw new ApiError(401, { error: "a valid access token is required" });
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Toasts and confirmation

function toast(message, kind = "") {
  const node = h("div", { class: `toast ${kind}`.trim(), role: "status", text: message });
  $("#toasts").append(node);
  setTimeout(() => node.remove(), kind === "bad" ? 7000 : 3500);
}

function errorText(exc) {
  if (!(exc instanceof ApiError)) return String(exc && exc.message ? exc.message : exc);
  let text = exc.message;
  if (exc.field && !text.includes(exc.field)) text = `${exc.field}: ${text}`;
  if (Array.isArray(exc.details) && exc.details.length) {
    const first = exc.details[0];
    const detail = typeof first === "string" ? first : first.msg || JSON.stringify(first);
    if (detail && !text.includes(detail)) text += ` (${detail})`;
  }
  return text;
}

function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = $("#confirm-dialog");
  setText("confirm-title", title);
  setText("confirm-text", text);
  setText("confirm-ok", okLabel);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

/** Run a form's action, showing errors next to its buttons and marking the bad field. */
async function submitting(form, action) {
  const errorNode = $("[data-role=error]", form);
  const buttons = $$("button[type=submit]", form);
  setText(errorNode, "");
  $$(".invalid", form).forEach((node) => node.classList.remove("invalid"));
  buttons.forEach((b) => { b.disabled = true; });
  try {
    return await action();
  } catch (exc) {
    setText(errorNode, errorText(exc));
    const field = exc instanceof ApiError && exc.field ? form.elements.namedItem(exc.field) : null;
    if (field && field.classList) {
      field.classList.add("invalid");
      field.focus();
    }
    return undefined;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function intOrUndefined(value) {
  if (value === null || value === undefined || String(value).trim() === "") return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? Math.trunc(n) : value; // a non-number goes through: the API names it
}

// ---------------------------------------------------------------------------------------------
// State and the frame scheduler

const state = {
  status: null,
  namespace: "warren",
  replicas: new Map(), // "role/replica" -> { data, seenAt }
  queues: [],
  queuesMeta: { rates_available: false, source: "" },
  exchanges: [],
  consumers: [],
  jobs: new Map(),
  currentJob: null,
  records: [],
  pendingRecords: [],
  receivedTotal: 0,
  paused: false,
  rates: [],
  lastRates: { published: 0, delivered: 0, acked: 0 },
  section: "overview",
  filter: { queue: "", worker: "", text: "" },
  knownQueues: new Set(),
  knownWorkers: new Set(),
};

const dirty = new Set();
let frameRequested = false;

function markDirty(...parts) {
  for (const part of parts) dirty.add(part);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(flush);
  }
}

const RECORDS_RENDER_MS = 150; // records reach the DOM at most 4 times a second
let lastRecordsRender = 0;
let recordsTimer = null;

function flush() {
  frameRequested = false;
  const parts = new Set(dirty);
  dirty.clear();
  try {
    if (parts.has("records")) {
      // Each prepend re-lays out a 500-row table: batch several stream frames into one.
      const wait = lastRecordsRender + RECORDS_RENDER_MS - performance.now();
      if (wait > 0 && !parts.has("messages")) {
        if (!recordsTimer) {
          recordsTimer = setTimeout(() => {
            recordsTimer = null;
            markDirty("records");
          }, wait);
        }
      } else {
        lastRecordsRender = performance.now();
        absorbRecords();
      }
    }
    if (parts.has("status")) renderStatus();
    if (parts.has("replicas")) renderReplicas();
    if (parts.has("queues")) renderQueues();
    if (parts.has("exchanges")) renderExchanges();
    if (parts.has("consumers")) renderConsumers();
    if (parts.has("jobs")) renderJobs();
    if (parts.has("messages")) renderMessagesFull();
    else if (parts.has("messages-view")) renderWindow();
    if (parts.has("filters")) renderFilterOptions();
    if (parts.has("rates")) renderRates();
  } catch (exc) {
    console.error("render failed", exc);
  }
}

// ---------------------------------------------------------------------------------------------
// Navigation

const SECTIONS = ["overview", "queues", "exchanges", "publish", "consumers", "messages"];

function showSection(name) {
  if (!SECTIONS.includes(name)) name = "overview";
  state.section = name;
  for (const section of SECTIONS) {
    $(`#section-${section}`).hidden = section !== name;
  }
  $$(".nav a").forEach((a) => a.classList.toggle("active", a.dataset.section === name));
  if (name === "exchanges") loadExchanges();
  if (name === "consumers") loadConsumers();
  if (name === "messages") markDirty("messages");
  if (name === "overview") markDirty("rates", "replicas");
  if (name === "queues") markDirty("queues");
}

// ---------------------------------------------------------------------------------------------
// Status, connection and replicas

function replicaKey(r) {
  return `${r.role}/${r.replica}`;
}

function upsertReplica(data, seenAt = Date.now()) {
  state.replicas.set(replicaKey(data), { data, seenAt });
  if (data.role === "consumer") state.knownWorkers.add(data.replica);
}

async function loadStatus() {
  try {
    const status = await api("GET", "/api/status");
    state.status = status;
    if (status.gateway && typeof status.gateway.namespace === "string") {
      state.namespace = status.gateway.namespace;
    }
    const now = Date.now();
    const seen = new Set();
    for (const replica of status.replicas || []) {
      seen.add(replicaKey(replica));
      upsertReplica(replica, now - (replica.last_seen_s || 0) * 1000);
    }
    // The gateway forgets replicas after a while; so does the page.
    for (const key of Array.from(state.replicas.keys())) {
      if (!seen.has(key)) state.replicas.delete(key);
    }
    markDirty("status", "replicas", "filters");
  } catch (exc) {
    state.status = null;
    setPill("conn-pill", "unreachable", "bad");
    setPill("gw-connection", exc.status ? `error ${exc.status}` : "unreachable", "bad");
  }
}

function renderStatus() {
  const status = state.status;
  if (!status) return;
  const gateway = status.gateway || {};
  const broker = status.broker || {};
  const conn = gateway.connection || "closed";
  setPill("gw-connection", conn, tone(conn));
  setPill("conn-pill", conn, tone(conn));
  setText("gw-instance", gateway.instance ? `instance ${gateway.instance}` : "");
  const product = [broker.product, broker.version].filter(Boolean).join(" ");
  setText("broker-product", product || "unknown");
  setText("broker-url", broker.url || "");
  const mgmt = gateway.management && gateway.management.available;
  setPill("mgmt-available", mgmt ? "available" : "unavailable", mgmt ? "ok" : "warn");
  setText("jaeger-url", gateway.jaeger_url ? `traces: ${gateway.jaeger_url}` : "");
  $("#btn-connect").disabled = conn === "connected";
  $("#btn-disconnect").disabled = conn === "closed";
  const versions = $("#versions");
  versions.replaceChildren(
    ...Object.entries(gateway.versions || {}).flatMap(([lib, ver]) => [
      h("dt", { text: lib }),
      h("dd", { class: "mono", text: ver }),
    ]),
  );
}

function replicaState(entry, now) {
  const data = entry.data;
  const stateName = data.state || "alive";
  const interval = (data.heartbeat && data.heartbeat.interval_s) || data.interval_s || 2;
  const staleMs = Math.max(REPLICA_STALE_FACTOR * interval * 1000, 10_000);
  if (stateName === "alive" && now - entry.seenAt > staleMs) return "lost";
  return stateName;
}

function heartbeatOf(data) {
  // The status endpoint nests the last heartbeat; tolerate a flat replica object too.
  return data.heartbeat || data;
}

function sortedReplicas(role) {
  return Array.from(state.replicas.values())
    .filter((e) => !role || e.data.role === role)
    .sort((a, b) => replicaKey(a.data).localeCompare(replicaKey(b.data)));
}

function queuesTags(hb) {
  const queues = hb.queues || [];
  if (!queues.length) return h("span", { class: "muted", text: "–" });
  return h(
    "span",
    {},
    queues.map((q) =>
      h("span", {
        class: "tag",
        title: `${q.state || ""} · prefetch ${q.prefetch} · processed ${q.processed ?? 0}`,
        text: `${q.queue} ×${q.prefetch}${q.state && q.state !== "consuming" ? ` (${q.state})` : ""}`,
      }),
    ),
  );
}

function renderReplicas() {
  const now = Date.now();
  const entries = sortedReplicas();
  let alive = 0;
  let lost = 0;
  const rows = entries.map((entry) => {
    const data = entry.data;
    const hb = heartbeatOf(data);
    const counters = hb.counters || {};
    const st = replicaState(entry, now);
    if (st === "alive") alive += 1;
    if (st === "lost") lost += 1;
    const instr = hb.instrumentation || {};
    const instrOn = Object.values(instr).filter(Boolean).length;
    const instrTotal = Object.keys(instr).length;
    const work = data.role === "producer" ? counters.confirmed : counters.processed;
    return h(
      "tr",
      { class: st === "lost" ? "lost" : "", dataset: { testid: "replica-row", replica: data.replica, role: data.role, state: st } },
      h("td", {}, pill(data.role, data.role === "producer" ? "info" : "")),
      h(
        "td",
        { class: "mono", title: Object.entries(hb.versions || {}).map(([lib, ver]) => `${lib} ${ver}`).join("\n") || null },
        data.replica,
        h("span", { class: "sub", text: `${data.host || "?"} · pid ${data.pid ?? "?"}` }),
      ),
      h("td", {}, pill(st, tone(st), { "data-testid": "replica-state" })),
      h("td", { text: fmtAgo(now - entry.seenAt) }),
      h("td", {}, pill(hb.connection || "–", tone(hb.connection))),
      h("td", {}, queuesTags(hb)),
      h("td", { class: "num", text: fmtNum(hb.in_flight ?? 0) }),
      h("td", { class: "num", text: fmtNum(work ?? 0) }),
      h("td", { class: "num", text: fmtRate(hb.rate ?? 0) }),
      h("td", {
        class: hb.instrumentation_error ? "form-error" : "muted",
        title: hb.instrumentation_error || Object.entries(instr).map(([k, v]) => `${k}: ${v ? "on" : "off"}`).join("\n"),
        text: hb.instrumentation_error ? "error" : instrTotal ? `${instrOn}/${instrTotal} on` : "–",
      }),
    );
  });
  $("#replicas-table tbody").replaceChildren(...rows);
  const producers = entries.filter((e) => e.data.role === "producer").length;
  const consumers = entries.length - producers;
  setText("replica-summary", `${producers} producer${producers === 1 ? "" : "s"} · ${consumers} consumer${consumers === 1 ? "" : "s"}`);
  setText("replica-summary-sub", `${alive} alive${lost ? ` · ${lost} lost` : ""}`);
  setText("replicas-note", entries.length ? "" : "no replica has sent a heartbeat yet");
  renderConsumerReplicas(now);
}

function renderConsumerReplicas(now) {
  const rows = sortedReplicas("consumer").map((entry) => {
    const data = entry.data;
    const hb = heartbeatOf(data);
    const c = hb.counters || {};
    const st = replicaState(entry, now);
    return h(
      "tr",
      { class: st === "lost" ? "lost" : "", dataset: { testid: "consumer-replica-row", replica: data.replica, state: st } },
      h("td", { class: "mono", text: data.replica }),
      h("td", {}, pill(st, tone(st))),
      h("td", { text: fmtAgo(now - entry.seenAt) }),
      h("td", {}, queuesTags(hb)),
      h("td", { class: "num", text: fmtNum(hb.in_flight ?? 0) }),
      h("td", { class: "num", dataset: { field: "processed" }, text: fmtNum(c.processed ?? 0) }),
      h("td", { class: "num", text: fmtNum(c.acked ?? 0) }),
      h("td", { class: "num", text: fmtNum(c.failed ?? 0) }),
      h("td", { class: "num", text: fmtNum(c.dead_lettered ?? 0) }),
      h("td", { class: "num", text: fmtNum(c.requeued ?? 0) }),
      h("td", { class: "num", text: fmtNum(c.redelivered ?? 0) }),
      h("td", { class: "num", text: fmtNum(c.duplicates ?? 0) }),
      h("td", { class: "num", text: fmtRate(hb.rate ?? 0) }),
    );
  });
  $("#consumer-replicas-table tbody").replaceChildren(...rows);
}

async function setConnection(action) {
  try {
    const result = await api("POST", `/api/connection/${action}`);
    toast(`Gateway connection: ${result.connection}`, result.connection === "connected" ? "ok" : "");
  } catch (exc) {
    toast(errorText(exc), "bad");
  }
  await loadStatus();
  loadQueues();
}

// ---------------------------------------------------------------------------------------------
// Queues

function isInternal(name) {
  return name.startsWith(`${state.namespace}.`);
}

function setQueues(body) {
  if (!body || !Array.isArray(body.queues)) return;
  state.queues = body.queues;
  state.queuesMeta = { rates_available: Boolean(body.rates_available), source: body.source || "" };
  let added = false;
  for (const q of body.queues) {
    if (!state.knownQueues.has(q.name)) {
      state.knownQueues.add(q.name);
      added = true;
    }
  }
  markDirty("queues", "consumers");
  if (added) markDirty("filters");
}

async function loadQueues() {
  try {
    setQueues(await api("GET", "/api/queues"));
  } catch (exc) {
    setText("queues-source", `queues unavailable: ${errorText(exc)}`);
  }
}

const queueRows = new Map();

function queueRow(name) {
  let row = queueRows.get(name);
  if (row) return row;
  const cell = (field, cls = "num") => h("td", { class: cls, dataset: { field } });
  row = h(
    "tr",
    { dataset: { testid: "queue-row", queue: name } },
    h(
      "td",
      { class: "name-cell" },
      h("button", { type: "button", class: "link mono", "data-action": "detail", "data-testid": "queue-detail", text: name }),
      h("span", { class: "sub mono", dataset: { field: "dead_letter_queue" } }),
    ),
    cell("type", ""),
    cell("messages_ready"),
    cell("messages_unacked"),
    cell("messages"),
    cell("consumers"),
    cell("rate_publish"),
    cell("rate_deliver"),
    cell("rate_ack"),
    h(
      "td",
      { class: "actions-cell" },
      h("button", { type: "button", class: "small", "data-action": "purge", "data-testid": "queue-purge", text: "Purge" }),
      h("button", { type: "button", class: "small danger-outline", "data-action": "delete", "data-testid": "queue-delete", text: "Delete" }),
    ),
  );
  queueRows.set(name, row);
  return row;
}

function renderQueues() {
  const showInternal = $("#queues-show-internal").checked;
  const rates = state.queuesMeta.rates_available;
  const visible = state.queues
    .filter((q) => showInternal || !isInternal(q.name))
    .sort((a, b) => a.name.localeCompare(b.name));
  const tbody = $("#queues-table tbody");
  const keep = new Set();
  for (const q of visible) {
    keep.add(q.name);
    const row = queueRow(q.name);
    row.classList.toggle("internal", isInternal(q.name));
    const set = (field, value) => setText($(`[data-field="${field}"]`, row), value);
    set("type", `${q.type || "–"}${q.durable === false ? " · transient" : ""}`);
    set("messages_ready", fmtNum(q.messages_ready));
    set("messages_unacked", fmtNum(q.messages_unacked));
    set("messages", fmtNum(q.messages));
    set("consumers", fmtNum(q.consumers));
    set("rate_publish", rates && q.rates ? fmtRate(q.rates.publish) : "–");
    set("rate_deliver", rates && q.rates ? fmtRate(q.rates.deliver) : "–");
    set("rate_ack", rates && q.rates ? fmtRate(q.rates.ack) : "–");
    set("dead_letter_queue", q.dead_letter_queue ? `dead letters → ${q.dead_letter_queue}` : "");
    tbody.append(row); // appending an attached row moves it: keeps the sorted order
  }
  for (const [name, row] of queueRows) {
    if (!keep.has(name)) {
      row.remove();
      queueRows.delete(name);
    }
  }
  $("#queues-empty").hidden = visible.length > 0;
  const source = state.queuesMeta.source;
  setText(
    "queues-source",
    source ? `stats from ${source === "management" ? "the management API" : "AMQP (passive declares)"}${rates ? "" : " · rates unavailable"}` : "",
  );
  const list = $("#queue-names");
  const names = state.queues.map((q) => q.name).filter((n) => !isInternal(n)).sort();
  if (list.childElementCount !== names.length || names.some((n, i) => list.children[i].value !== n)) {
    list.replaceChildren(...names.map((n) => h("option", { value: n })));
  }
}

async function onQueueAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const name = button.closest("tr").dataset.queue;
  const action = button.dataset.action;
  if (action === "detail") return showQueueDetail(name);
  if (action === "purge") {
    const ok = await confirmAction("Purge queue?", `Every ready message in "${name}" will be deleted.`, "Purge");
    if (!ok) return;
    try {
      const result = await api("POST", `/api/queues/${enc(name)}/purge`);
      toast(`Purged ${fmtNum(result.purged)} message(s) from ${name}`, "ok");
    } catch (exc) {
      toast(errorText(exc), "bad");
    }
  }
  if (action === "delete") {
    const ok = await confirmAction("Delete queue?", `"${name}" and the messages in it will be deleted.`, "Delete");
    if (!ok) return;
    try {
      await api("DELETE", `/api/queues/${enc(name)}`);
      toast(`Deleted ${name}`, "ok");
      state.queues = state.queues.filter((q) => q.name !== name);
      markDirty("queues");
    } catch (exc) {
      toast(errorText(exc), "bad");
    }
  }
  loadQueues();
}

function kvList(target, obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) {
    target.replaceChildren(h("dt", { text: "–" }), h("dd", { class: "muted", text: "none" }));
    return;
  }
  target.replaceChildren(
    ...entries.flatMap(([k, v]) => [h("dt", { class: "mono", text: k }), h("dd", { class: "mono", text: v === "" ? '""' : fmtValue(v) })]),
  );
}

async function showQueueDetail(name) {
  const dialog = $("#queue-dialog");
  setText("qd-name", name);
  try {
    const q = await api("GET", `/api/queues/${enc(name)}`);
    const rates = q.rates || {};
    kvList($("#qd-stats"), {
      type: q.type,
      durable: q.durable,
      ready: q.messages_ready,
      unacked: q.messages_unacked,
      total: q.messages,
      consumers: q.consumers,
      "publish/s": q.rates ? fmtRate(rates.publish) : "unavailable",
      "deliver/s": q.rates ? fmtRate(rates.deliver) : "unavailable",
      "ack/s": q.rates ? fmtRate(rates.ack) : "unavailable",
      "dead-letter queue": q.dead_letter_queue || "none",
    });
    kvList($("#qd-arguments"), q.arguments);
    const consumption = state.consumers.find((c) => c.queue === name);
    setText(
      "qd-consumers",
      consumption ? `prefetch ${consumption.prefetch}: ${(consumption.replicas || []).join(", ") || "no replica yet"}` : "not consumed by Warren",
    );
    if (!dialog.open) dialog.showModal();
  } catch (exc) {
    toast(errorText(exc), "bad");
  }
}

async function createQueue(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  const payload = {
    name: f.name.value.trim(),
    durable: f.durable.checked,
    type: f.type.value,
    dead_letter: f.dead_letter.checked,
  };
  for (const key of ["delivery_limit", "message_ttl", "max_length"]) {
    const value = intOrUndefined(f[key].value);
    if (value !== undefined) payload[key] = value;
  }
  const created = await submitting(form, () => api("POST", "/api/queues", payload));
  if (created) {
    toast(`Queue ${payload.name} created`, "ok");
    f.name.value = "";
    if (created.name) {
      state.queues = state.queues.filter((q) => q.name !== created.name).concat([created]);
      state.knownQueues.add(created.name);
      markDirty("queues", "filters");
    }
    loadQueues();
  }
}

// ---------------------------------------------------------------------------------------------
// Exchanges and bindings

async function loadExchanges() {
  try {
    const body = await api("GET", "/api/exchanges");
    state.exchanges = body.exchanges || [];
    markDirty("exchanges");
  } catch (exc) {
    toast(`Exchanges: ${errorText(exc)}`, "bad");
  }
}

function renderExchanges() {
  const visible = state.exchanges.filter((x) => x.name && !x.name.startsWith("amq.") && !isInternal(x.name));
  const builtin = state.exchanges.filter((x) => !visible.includes(x));
  const rows = visible.concat(builtin).map((x) =>
    h(
      "tr",
      { class: visible.includes(x) ? "" : "internal", dataset: { testid: "exchange-row", exchange: x.name } },
      h("td", { class: "mono", text: x.name || "(default)" }),
      h("td", { text: x.type }),
      h("td", { text: x.durable ? "yes" : "no" }),
    ),
  );
  $("#exchanges-table tbody").replaceChildren(...rows);
  $("#exchange-names").replaceChildren(...state.exchanges.filter((x) => x.name).map((x) => h("option", { value: x.name })));
}

async function createExchange(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  const payload = { name: f.name.value.trim(), type: f.type.value, durable: f.durable.checked };
  const created = await submitting(form, () => api("POST", "/api/exchanges", payload));
  if (created) {
    toast(`Exchange ${payload.name} (${payload.type}) created`, "ok");
    f.name.value = "";
    loadExchanges();
  }
}

async function createBinding(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  const payload = { exchange: f.exchange.value.trim(), queue: f.queue.value.trim(), routing_key: f.routing_key.value };
  const created = await submitting(form, async () => {
    const raw = f.arguments.value.trim();
    if (raw) {
      let args;
      try {
        args = JSON.parse(raw);
      } catch {
        throw new ApiError(400, { error: "arguments must be a JSON object", field: "arguments" });
      }
      if (!args || typeof args !== "object" || Array.isArray(args)) {
        throw new ApiError(400, { error: "arguments must be a JSON object", field: "arguments" });
      }
      payload.arguments = args;
    }
    return api("POST", "/api/bindings", payload);
  });
  if (created) toast(`Bound ${payload.queue} to ${payload.exchange} with "${payload.routing_key}"`, "ok");
}

// ---------------------------------------------------------------------------------------------
// Publish and batches

function publishTarget() {
  return $("input[name=target]:checked", $("#publish-form")).value;
}

function onTargetChange() {
  const target = publishTarget();
  $$("[data-target]", $("#publish-form")).forEach((node) => {
    node.hidden = node.dataset.target !== target;
  });
}

/** The message part shared by single publishes and batches, from the publish form. */
function messagePayload() {
  const f = $("#publish-form").elements;
  const payload = {};
  if (publishTarget() === "queue") {
    payload.queue = f.queue.value.trim();
  } else {
    payload.exchange = f.exchange.value.trim();
    payload.routing_key = f.routing_key.value;
  }
  const raw = f.body.value;
  try {
    payload.body = JSON.parse(raw);
  } catch {
    payload.body = raw; // not JSON: sent as text
  }
  const props = {};
  for (const key of ["content_type", "message_id", "correlation_id", "type", "app_id"]) {
    const value = f[key].value.trim();
    if (value) props[key] = value;
  }
  for (const key of ["priority", "expiration"]) {
    const value = intOrUndefined(f[key].value);
    if (value !== undefined) props[key] = value;
  }
  props.delivery_mode = Number(f.delivery_mode.value);
  const headersRaw = f.headers.value.trim();
  if (headersRaw) {
    let headers;
    try {
      headers = JSON.parse(headersRaw);
    } catch {
      throw new ApiError(400, { error: "headers must be a JSON object", field: "headers" });
    }
    if (!headers || typeof headers !== "object" || Array.isArray(headers)) {
      throw new ApiError(400, { error: "headers must be a JSON object", field: "headers" });
    }
    props.headers = headers;
  }
  payload.properties = props;
  return payload;
}

async function publishOne(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const resultBox = $("#publish-result");
  let failure = null;
  // A stale result must never pass for this one's.
  setPill("publish-status", "publishing", "info");
  for (const id of ["publish-result-id", "publish-elapsed"]) setText(id, "");
  setLink($("#publish-trace"), null);
  const result = await submitting(form, async () => {
    try {
      return await api("POST", "/api/messages", messagePayload());
    } catch (exc) {
      failure = exc;
      throw exc;
    }
  });
  resultBox.hidden = false;
  if (result) {
    setPill("publish-status", result.status || "confirmed", tone(result.status || "confirmed"));
    setText("publish-result-id", result.message_id);
    setLink($("#publish-trace"), result.trace_url, result.trace_id ? `trace ${result.trace_id.slice(0, 16)}…` : "open trace");
    setText("publish-elapsed", fmtMs(result.elapsed_ms));
  } else if (failure) {
    const status = (failure.body && failure.body.status) || "failed";
    setPill("publish-status", status, "bad");
    setText("publish-result-id", (failure.body && failure.body.message_id) || "–");
    setLink($("#publish-trace"), failure.body && failure.body.trace_url, "open trace");
    setText("publish-elapsed", "–");
  }
}

async function startBatch(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  state.currentJob = null; // the previous job's panel must not pass for this one's
  setPill("batch-status", "starting", "info");
  $("#batch-progress").value = 0;
  const job = await submitting(form, async () => {
    const payload = messagePayload();
    payload.count = intOrUndefined(f.count.value);
    payload.concurrency = intOrUndefined(f.concurrency.value);
    payload.template = f.template.checked;
    return api("POST", "/api/batches", payload);
  });
  if (!job) return;
  state.currentJob = job.job_id;
  const known = state.jobs.get(job.job_id);
  if (!known) {
    state.jobs.set(job.job_id, { job_id: job.job_id, status: job.status || "queued", count: intOrUndefined(f.count.value), confirmed: 0, seenAt: Date.now() });
  }
  markDirty("jobs");
  refreshJob(job.job_id);
}

function upsertJob(data) {
  if (!data || !data.job_id) return;
  const previous = state.jobs.get(data.job_id);
  // Progress events can cross a GET answer: never step a job backwards from a final state.
  if (previous && isFinal(previous.status) && !isFinal(data.status)) return;
  state.jobs.set(data.job_id, { ...previous, ...data, seenAt: Date.now() });
  markDirty("jobs");
}

const isFinal = (status) => status === "done" || status === "failed" || status === "cancelled";

async function refreshJob(jobId) {
  try {
    upsertJob(await api("GET", `/api/batches/${enc(jobId)}`));
  } catch (exc) {
    if (exc.status !== 404) console.warn("job refresh failed", exc);
  }
}

async function loadJobs() {
  try {
    const body = await api("GET", "/api/batches");
    for (const job of body.jobs || []) upsertJob(job);
  } catch {
    // Jobs are optional context on load; live events still arrive.
  }
}

async function cancelJob(jobId) {
  try {
    await api("DELETE", `/api/batches/${enc(jobId)}`);
    toast(`Cancelling job ${jobId.slice(0, 8)}…`);
  } catch (exc) {
    toast(errorText(exc), "bad");
  }
}

function jobDone(job) {
  return (job.confirmed || 0) + (job.returned || 0) + (job.nacked || 0) + (job.failed || 0);
}

function renderJobs() {
  const current = state.currentJob ? state.jobs.get(state.currentJob) : null;
  const panel = $("#batch-panel");
  if (current) {
    panel.hidden = false;
    const count = current.count || 0;
    const done = Math.min(jobDone(current), count || Infinity);
    const bar = $("#batch-progress");
    bar.max = Math.max(count, 1);
    bar.value = done;
    bar.dataset.status = current.status;
    bar.classList.toggle("done", current.status === "done");
    bar.classList.toggle("failed", current.status === "failed" || current.status === "cancelled");
    setPill("batch-status", current.status, tone(current.status));
    setText("batch-job-id", current.job_id);
    const extra = [];
    if (current.returned) extra.push(`${fmtNum(current.returned)} returned`);
    if (current.nacked) extra.push(`${fmtNum(current.nacked)} nacked`);
    if (current.failed) extra.push(`${fmtNum(current.failed)} failed`);
    if (current.retried) extra.push(`${fmtNum(current.retried)} retried`);
    setText("batch-counts", `${fmtNum(current.confirmed || 0)} / ${fmtNum(count)} confirmed${extra.length ? ` · ${extra.join(" · ")}` : ""}`);
    const final = isFinal(current.status);
    setText(
      "batch-rate",
      current.rate !== undefined
        ? `${final ? "achieved" : "at"} ${fmtRate(current.rate)} msg/s${current.elapsed_s !== undefined ? ` in ${fmtSeconds(current.elapsed_s)}` : ""}`
        : "",
    );
    setText("batch-error", current.error || "");
    $("#batch-cancel").disabled = final;
  }
  const jobs = Array.from(state.jobs.values())
    .sort((a, b) => (b.seenAt || 0) - (a.seenAt || 0))
    .slice(0, 20);
  const rows = jobs.map((job) =>
    h(
      "tr",
      { dataset: { testid: "job-row", jobId: job.job_id, status: job.status } },
      h("td", { class: "mono", title: job.job_id, text: job.job_id.slice(0, 12) }),
      h("td", {}, pill(job.status, tone(job.status))),
      h("td", { class: "num", text: fmtNum(job.count) }),
      h("td", { class: "num", text: fmtNum(job.confirmed ?? 0) }),
      h("td", { class: "num", text: fmtNum(job.returned ?? 0) }),
      h("td", { class: "num", text: fmtNum((job.failed ?? 0) + (job.nacked ?? 0)) }),
      h("td", { class: "num", text: job.elapsed_s !== undefined ? fmtSeconds(job.elapsed_s) : "–" }),
      h("td", { class: "num", text: job.rate !== undefined ? fmtRate(job.rate) : "–" }),
      h(
        "td",
        { class: "actions-cell" },
        isFinal(job.status)
          ? null
          : h("button", { type: "button", class: "small danger-outline", "data-job": job.job_id, text: "Cancel" }),
      ),
    ),
  );
  $("#jobs-table tbody").replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------------------
// Consumers

async function loadConsumers() {
  try {
    const body = await api("GET", "/api/consumers");
    state.consumers = body.consumers || [];
    for (const replica of body.replicas || []) {
      const key = replicaKey(replica);
      const known = state.replicas.get(key);
      // A heartbeat that arrived over the stream is fresher than this answer.
      if (!known) upsertReplica(replica, Date.now() - (replica.last_seen_s || 0) * 1000);
    }
    markDirty("consumers", "replicas");
  } catch (exc) {
    toast(`Consumers: ${errorText(exc)}`, "bad");
  }
}

function renderConsumers() {
  const ready = new Map(state.queues.map((q) => [q.name, q.messages_ready]));
  const rows = state.consumers
    .slice()
    .sort((a, b) => a.queue.localeCompare(b.queue))
    .map((c) =>
      h(
        "tr",
        { dataset: { testid: "consumption-row", queue: c.queue } },
        h("td", { class: "mono", text: c.queue }),
        h("td", { class: "num", text: fmtNum(c.prefetch) }),
        h("td", {}, (c.replicas || []).length ? (c.replicas || []).map((r) => h("span", { class: "tag", text: r })) : h("span", { class: "muted", text: "waiting for a replica" })),
        h("td", { class: "num", text: ready.has(c.queue) ? fmtNum(ready.get(c.queue)) : "–" }),
        h(
          "td",
          { class: "actions-cell" },
          h("button", { type: "button", class: "small danger-outline", "data-stop": c.queue, "data-testid": "consumer-stop", text: "Stop" }),
        ),
      ),
    );
  $("#consumptions-table tbody").replaceChildren(...rows);
  $("#consumptions-empty").hidden = rows.length > 0;
}

async function startConsumer(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  const payload = { queue: f.queue.value.trim(), prefetch: intOrUndefined(f.prefetch.value) };
  const started = await submitting(form, () => api("POST", "/api/consumers", payload));
  if (started !== undefined) {
    toast(`Consuming ${payload.queue} with prefetch ${payload.prefetch}`, "ok");
    loadConsumers();
  }
}

async function stopConsumer(queue) {
  const ok = await confirmAction("Stop consuming?", `Every replica drains its in-flight messages from "${queue}" and stops.`, "Stop");
  if (!ok) return;
  try {
    await api("DELETE", `/api/consumers/${enc(queue)}`);
    toast(`Stopping consumption of ${queue}`, "ok");
    state.consumers = state.consumers.filter((c) => c.queue !== queue);
    markDirty("consumers");
  } catch (exc) {
    toast(errorText(exc), "bad");
  }
  loadConsumers();
}

// ---------------------------------------------------------------------------------------------
// Live messages

const rowRecords = new WeakMap();

function recordMatches(r) {
  const f = state.filter;
  if (f.queue && r.queue !== f.queue) return false;
  if (f.worker && r.worker !== f.worker) return false;
  if (f.text) {
    const hay = [r.message_id, r.body, r.error, r.routing_key, r.queue, r.worker, r.trace_id, r.outcome, r.exchange]
      .filter(Boolean)
      .join("\n")
      .toLowerCase();
    if (!hay.includes(f.text)) return false;
  }
  return true;
}

function messageRow(r) {
  const row = h(
    "tr",
    { class: "clickable", tabindex: "0", dataset: { testid: "message-row", messageId: r.message_id || "", queue: r.queue, outcome: r.outcome } },
    h("td", { class: "mono", text: fmtTime(r.processed_at || r.received_at) }),
    h("td", { class: "mono", text: r.queue }),
    h("td", { class: "mono", text: r.worker }),
    h("td", {}, pill(r.outcome, tone(r.outcome))),
    h("td", { text: r.redelivered ? "yes" : "" }),
    h("td", { class: "num", text: typeof r.latency_ms === "number" && r.latency_ms < 0 ? "–" : fmtMs(r.latency_ms) }),
    h("td", { class: "id-cell", title: r.message_id || "", text: r.message_id || "–" }),
    h("td", { class: "body-cell", dataset: { testid: "message-body" }, text: typeof r.body === "string" ? r.body : fmtValue(r.body) }),
  );
  rowRecords.set(row, r);
  return row;
}

// The live list is virtual: only the rows in view (plus a margin) exist in the DOM, between two
// spacer rows, so a render costs the same at 10 or 10,000 records a second.
const ROW_HEIGHT = 30; // px; #messages-table rows are fixed to this in app.css
const view = { filtered: [], spacerTop: null, spacerBottom: null };

function spacer() {
  return h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", { colspan: "8" }));
}

/** Move stream records into the bounded list and show them (at most a few renders a second). */
function absorbRecords() {
  const incoming = state.pendingRecords;
  if (!incoming.length) return;
  state.pendingRecords = [];
  incoming.reverse(); // arrival order is oldest first; the list is newest first
  const fresh = incoming.length > MAX_RECORDS ? incoming.slice(0, MAX_RECORDS) : incoming;
  let filtersChanged = false;
  for (const r of fresh) {
    if (r.queue && !state.knownQueues.has(r.queue)) {
      state.knownQueues.add(r.queue);
      filtersChanged = true;
    }
    if (r.worker && !state.knownWorkers.has(r.worker)) {
      state.knownWorkers.add(r.worker);
      filtersChanged = true;
    }
  }
  state.records = fresh.concat(state.records);
  if (state.records.length > MAX_RECORDS) state.records.length = MAX_RECORDS;
  if (filtersChanged) renderFilterOptions();
  setText("nav-messages-count", fmtNum(state.receivedTotal));
  if (state.section !== "messages") {
    dirty.add("messages-stale");
    return;
  }
  const matching = fresh.filter(recordMatches);
  if (matching.length) {
    view.filtered = matching.concat(view.filtered);
    if (view.filtered.length > MAX_RECORDS) view.filtered.length = MAX_RECORDS;
    // Someone reading further down keeps their place instead of watching rows slide away.
    const wrap = $("#messages-wrap");
    if (wrap.scrollTop > ROW_HEIGHT) wrap.scrollTop += matching.length * ROW_HEIGHT;
    renderWindow();
  }
  renderMessageCount();
}

function renderMessagesFull() {
  dirty.delete("messages-stale");
  view.filtered = state.records.filter(recordMatches);
  renderWindow();
  renderMessageCount();
}

function renderWindow() {
  const wrap = $("#messages-wrap");
  const tbody = $("#messages-table tbody");
  if (!view.spacerTop) {
    view.spacerTop = spacer();
    view.spacerBottom = spacer();
  }
  const total = view.filtered.length;
  const headHeight = $("#messages-table thead").offsetHeight;
  const visible = Math.ceil((wrap.clientHeight || 800) / ROW_HEIGHT);
  const first = Math.max(0, Math.floor((wrap.scrollTop - headHeight) / ROW_HEIGHT) - 10);
  const last = Math.min(total, first + visible + 20);
  view.spacerTop.firstChild.style.height = `${first * ROW_HEIGHT}px`;
  view.spacerBottom.firstChild.style.height = `${(total - last) * ROW_HEIGHT}px`;
  const rows = [];
  for (let i = first; i < last; i += 1) rows.push(messageRow(view.filtered[i]));
  tbody.replaceChildren(view.spacerTop, ...rows, view.spacerBottom);
}

function renderMessageCount() {
  const shown = view.filtered.length;
  $("#messages-empty").hidden = shown > 0;
  const filtered = state.filter.queue || state.filter.worker || state.filter.text;
  const sampled = (state.status && state.status.gateway && state.status.gateway.records_sampled_out) || 0;
  setText(
    "messages-count",
    `${fmtNum(shown)} shown${filtered ? ` of ${fmtNum(state.records.length)}` : ""} · newest ${MAX_RECORDS} kept` +
      `${sampled ? ` · ${fmtNum(sampled)} sampled out at high rates (counters stay exact)` : ""}${state.paused ? " · paused" : ""}`,
  );
  setText("nav-messages-count", fmtNum(state.receivedTotal));
}

function fillSelect(select, values) {
  const current = select.value;
  const wanted = ["", ...values];
  const have = Array.from(select.options).map((o) => o.value);
  if (have.length === wanted.length && have.every((v, i) => v === wanted[i])) return;
  select.replaceChildren(h("option", { value: "", text: "all" }), ...values.map((v) => h("option", { value: v, text: v })));
  select.value = wanted.includes(current) ? current : "";
}

function renderFilterOptions() {
  const queues = Array.from(state.knownQueues).filter((n) => !isInternal(n)).sort();
  fillSelect($("#filter-queue"), queues);
  fillSelect($("#filter-worker"), Array.from(state.knownWorkers).sort());
}

async function loadHistory() {
  try {
    const body = await api("GET", `/api/messages/received?limit=${MAX_RECORDS}`);
    const history = body.messages || [];
    const key = (r) => `${r.message_id}|${r.worker}|${r.processed_at}|${r.outcome}`;
    const seen = new Set(history.map(key));
    // Records that came over the stream while the history was loading stay; duplicates do not.
    state.pendingRecords = state.pendingRecords.filter((r) => !seen.has(key(r)));
    state.records = history.slice(0, MAX_RECORDS);
    state.receivedTotal = Math.max(state.receivedTotal, state.records.length);
    for (const r of state.records) {
      if (r.queue) state.knownQueues.add(r.queue);
      if (r.worker) state.knownWorkers.add(r.worker);
    }
    markDirty("messages", "records", "filters");
  } catch (exc) {
    toast(`History: ${errorText(exc)}`, "bad");
  }
}

function showMessageDetail(r) {
  setText("md-id", r.message_id || "(no id)");
  setPill("md-outcome", r.outcome, tone(r.outcome));
  setPill("md-redelivered", r.redelivered ? `redelivered (delivery ${r.delivery_count ?? "?"})` : "first delivery", r.redelivered ? "warn" : "");
  setLink($("#md-trace"), r.trace_url, "View trace in Jaeger ↗");
  const published = r.published_at ? Date.parse(r.published_at) : NaN;
  const received = r.received_at ? Date.parse(r.received_at) : NaN;
  const summary = {
    queue: r.queue,
    exchange: r.exchange || "(default)",
    "routing key": r.routing_key,
    replica: r.worker,
    outcome: r.outcome,
    error: r.error || undefined,
    redelivered: r.redelivered ? "yes" : "no",
    "delivery count": r.delivery_count,
    "content type": r.content_type || undefined,
    "published at": r.published_at ? `${fmtTime(r.published_at)} (${r.published_at})` : "unknown",
    "received at": `${fmtTime(r.received_at)} (${r.received_at})`,
    "processed at": `${fmtTime(r.processed_at)} (${r.processed_at})`,
    "time in broker": Number.isFinite(published) && Number.isFinite(received) ? fmtSpan(received - published) : "unknown",
    "processing time": fmtMs(r.processing_ms),
    "publish → processed": fmtSpan(r.latency_ms),
    "trace id": r.trace_id || "none",
  };
  const dl = $("#md-summary");
  dl.replaceChildren(
    ...Object.entries(summary)
      .filter(([, v]) => v !== undefined)
      .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { class: k === "error" ? "form-error" : "", dataset: { field: k.replace(/\W+/g, "_") }, text: fmtValue(v) })]),
  );
  setText("md-body", prettyBody(r.body, r.content_type));
  setText("md-body-size", `${fmtNum(r.body_size ?? (r.body || "").length)} bytes${r.body_truncated ? " · preview truncated" : ""}`);
  kvList($("#md-headers"), r.headers);
  kvList($("#md-properties"), r.properties);
  const dialog = $("#message-dialog");
  if (!dialog.open) dialog.showModal();
}

function setPaused(paused) {
  state.paused = paused;
  const button = $("#messages-pause");
  setText(button, paused ? "Resume" : "Pause");
  button.classList.toggle("active", paused);
  button.dataset.paused = String(paused);
  stream.send({ pause: paused });
  stream.renderPill();
  renderMessageCount();
  // While paused the gateway sends no records: catch up from the history when resuming.
  if (!paused) loadHistory();
}

async function clearHistory() {
  const ok = await confirmAction("Clear history?", "The gateway forgets every received-message record it keeps, and this list is emptied.", "Clear");
  if (!ok) return;
  try {
    await api("DELETE", "/api/messages/received");
    state.records = [];
    state.pendingRecords = [];
    state.receivedTotal = 0;
    markDirty("messages");
    toast("History cleared", "ok");
  } catch (exc) {
    toast(errorText(exc), "bad");
  }
}

// ---------------------------------------------------------------------------------------------
// Rates chart (own canvas code)

const SERIES = [
  { key: "published", color: "#2f6fed" },
  { key: "delivered", color: "#e08a00" },
  { key: "acked", color: "#16a34a" },
];

function pushRates(data) {
  const point = {
    t: Date.now(),
    published: Number(data.published) || 0,
    delivered: Number(data.delivered) || 0,
    acked: Number(data.acked) || 0,
  };
  state.rates.push(point);
  state.lastRates = point;
  const cutoff = point.t - RATE_WINDOW_MS - 5000;
  while (state.rates.length && state.rates[0].t < cutoff) state.rates.shift();
  markDirty("rates");
}

function niceCeil(value) {
  if (value <= 1) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (value <= step * exp) return step * exp;
  return 10 * exp;
}

function renderRates() {
  const last = state.lastRates;
  for (const s of SERIES) {
    setText(`rate-${s.key}`, fmtRate(last[s.key]));
    setText(`foot-${s.key}`, fmtRate(last[s.key]));
  }
  if (state.section !== "overview") return;
  const canvas = $("#rates-chart");
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 48, right: 12, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const now = Date.now();
  // The window grows with the history (30 s to 2 min), so a fresh page is not a flat line.
  const first = state.rates.length ? state.rates[0].t : now;
  const span = Math.min(RATE_WINDOW_MS, Math.max(30_000, now - first + 2000));
  const t0 = now - span;
  const points = state.rates.filter((p) => p.t >= t0 - 2000);
  let max = 0;
  for (const p of points) for (const s of SERIES) max = Math.max(max, p[s.key]);
  const yMax = niceCeil(max * 1.1);
  const x = (t) => pad.left + ((t - t0) / span) * plotW;
  const y = (v) => pad.top + plotH - (v / yMax) * plotH;

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7685";
  ctx.strokeStyle = "#e3e7ed";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i += 1) {
    const v = (yMax / 4) * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + plotW, yy);
    ctx.stroke();
    ctx.fillText(fmtRate(v), pad.left - 6, yy);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const spanS = span / 1000;
  const step = [5, 10, 15, 30].find((st) => spanS / st <= 6) || 30;
  for (let s = 0; s <= spanS - step / 2; s += step) {
    ctx.fillText(s === 0 ? "now" : `-${s}s`, x(now - s * 1000), pad.top + plotH + 6);
  }
  // Exposed for tests and curious people: how many samples the chart holds, how many non-zero.
  canvas.dataset.samples = String(points.length);
  canvas.dataset.active = String(points.filter((p) => p.published || p.delivered || p.acked).length);
  const unavailable = state.queuesMeta.source === "amqp" && !state.queuesMeta.rates_available;
  if (!points.length || unavailable) {
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(
      unavailable ? "rates unavailable: the management API is not reachable" : "waiting for rate samples…",
      pad.left + plotW / 2,
      pad.top + plotH / 2,
    );
    return;
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, pad.top - 2, plotW, plotH + 4);
  ctx.clip();
  for (const s of SERIES) {
    ctx.beginPath();
    points.forEach((p, i) => {
      const px = x(p.t);
      const py = y(p[s.key]);
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
    });
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.stroke();
    if (s.key === "published") {
      ctx.lineTo(x(points[points.length - 1].t), y(0));
      ctx.lineTo(x(points[0].t), y(0));
      ctx.closePath();
      ctx.fillStyle = "rgba(47, 111, 237, 0.08)";
      ctx.fill();
    }
  }
  ctx.restore();
}

// ---------------------------------------------------------------------------------------------
// The event stream (WebSocket)

const stream = {
  ws: null,
  started: false,
  state: "connecting",
  backoff: 500,
  timer: null,

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? `?token=${enc(token)}` : "";
    return `${proto}//${location.host}/api/events${query}`;
  },

  open() {
    clearTimeout(this.timer);
    this.started = true;
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.close();
    }
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (exc) {
      console.error("cannot open the event stream", exc);
      this.retry();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.backoff = 500;
      this.setState("live");
      if (state.paused) this.send({ pause: true });
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      let events;
      try {
        events = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!Array.isArray(events)) events = [events];
      for (const ev of events) dispatch(ev);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setState("reconnecting");
      this.retry();
    });
  },

  retry() {
    clearTimeout(this.timer);
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 10_000);
    this.timer = setTimeout(async () => {
      // An API call first: a 401 there brings up the token dialog, and status is refreshed.
      await loadStatus();
      this.open();
    }, delay);
  },

  restart() {
    if (this.started) this.open(); // before the first open, main() opens it
  },

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  },

  setState(name) {
    this.state = name;
    this.renderPill();
  },

  renderPill() {
    const name = this.state === "live" && state.paused ? "paused" : this.state;
    setPill("stream-pill", name, tone(name));
  },
};

function dispatch(ev) {
  if (!ev || typeof ev !== "object") return;
  const data = ev.data;
  switch (ev.type) {
    case "record":
      state.receivedTotal += 1;
      state.pendingRecords.push(data);
      // Bound the backlog when frames do not run (a background tab).
      if (state.pendingRecords.length > 4 * MAX_RECORDS) state.pendingRecords.splice(0, state.pendingRecords.length - MAX_RECORDS);
      markDirty("records");
      break;
    case "job":
      upsertJob(data);
      break;
    case "heartbeat":
      if (data && data.replica) {
        upsertReplica(data, Date.now() - (data.last_seen_s || 0) * 1000);
        markDirty("replicas", "filters");
        if (state.section === "consumers") throttledConsumers();
      }
      break;
    case "queues":
      setQueues(data);
      break;
    case "rates":
      pushRates(data || {});
      break;
    default:
      break;
  }
}

let consumersTimer = null;
function throttledConsumers() {
  if (consumersTimer) return;
  consumersTimer = setTimeout(() => {
    consumersTimer = null;
    loadConsumers();
  }, 2000);
}

// ---------------------------------------------------------------------------------------------
// Wiring

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function wire() {
  window.addEventListener("hashchange", () => showSection(location.hash.slice(1)));
  $("#btn-connect").addEventListener("click", () => setConnection("connect"));
  $("#btn-disconnect").addEventListener("click", async () => {
    if (await confirmAction("Disconnect the gateway?", "The gateway closes its broker connection until you connect it again. Producers and consumers keep running.", "Disconnect")) {
      setConnection("disconnect");
    }
  });

  $("#queue-form").addEventListener("submit", createQueue);
  $("#queues-table").addEventListener("click", onQueueAction);
  $("#queues-show-internal").addEventListener("change", () => markDirty("queues"));

  $("#exchange-form").addEventListener("submit", createExchange);
  $("#binding-form").addEventListener("submit", createBinding);
  $("#exchanges-refresh").addEventListener("click", loadExchanges);

  $("#publish-form").addEventListener("submit", publishOne);
  $$("input[name=target]").forEach((radio) => radio.addEventListener("change", onTargetChange));
  $("#batch-form").addEventListener("submit", startBatch);
  $("#batch-cancel").addEventListener("click", () => state.currentJob && cancelJob(state.currentJob));
  $("#jobs-table").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-job]");
    if (button) cancelJob(button.dataset.job);
  });

  $("#consumer-form").addEventListener("submit", startConsumer);
  $("#consumptions-table").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-stop]");
    if (button) stopConsumer(button.dataset.stop);
  });

  $("#messages-pause").addEventListener("click", () => setPaused(!state.paused));
  $("#messages-clear").addEventListener("click", clearHistory);
  const openRow = (event) => {
    const row = event.target.closest("tr");
    const record = row && rowRecords.get(row);
    if (record) showMessageDetail(record);
  };
  $("#messages-table tbody").addEventListener("click", openRow);
  $("#messages-table tbody").addEventListener("keydown", (event) => {
    if (event.key === "Enter") openRow(event);
  });
  $("#messages-wrap").addEventListener("scroll", () => markDirty("messages-view"), { passive: true });
  const applyFilter = () => {
    state.filter = {
      queue: $("#filter-queue").value,
      worker: $("#filter-worker").value,
      text: $("#filter-text").value.trim().toLowerCase(),
    };
    markDirty("messages");
  };
  $("#filter-queue").addEventListener("change", applyFilter);
  $("#filter-worker").addEventListener("change", applyFilter);
  $("#filter-text").addEventListener("input", debounce(applyFilter, 150));

  // Clicking the backdrop of a drawer closes it.
  $$("dialog.drawer").forEach((dialog) =>
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    }),
  );
  window.addEventListener("resize", debounce(() => markDirty("rates"), 100));
}

function tick() {
  // Ages ("3 s ago"), lost replicas and the chart's time axis move even without events.
  markDirty("replicas", "rates");
  if (state.section === "messages" && dirty.has("messages-stale")) markDirty("messages");
  const current = state.currentJob && state.jobs.get(state.currentJob);
  // A job whose events stopped (a lost frame or a producer gone) is asked for directly.
  if (current && !isFinal(current.status) && Date.now() - (current.seenAt || 0) > 3000) {
    current.seenAt = Date.now();
    refreshJob(current.job_id);
  }
}

async function main() {
  wire();
  showSection(location.hash.slice(1) || "overview");
  onTargetChange();
  stream.renderPill();
  await loadStatus(); // first: a 401 here asks for the token before anything else runs
  stream.open();
  await Promise.all([loadQueues(), loadHistory(), loadJobs(), loadConsumers()]);
  setInterval(tick, 1000);
  setInterval(loadStatus, STATUS_POLL_MS);
}

main();
