/* mc-hub dashboard: plain JS, no build step.
 *
 * Contract (see static/vendor/README.md for the socket.io client):
 *   HTTP  POST /api/auth/login, POST /api/auth/logout, GET /api/auth/me, GET /api/modules
 *   Socket.IO at /socket.io/, namespace "/", auth { page: "modules" }, cookie-authenticated.
 *   Events: rt_session, rt_module_online, rt_module_offline, rt_telemetry_updated.
 */
"use strict";

/* All user-visible strings live here. */
const STRINGS = {
  appName: "mc-hub",
  loading: "Loading…",
  loginTitle: "Sign in",
  emailLabel: "Email",
  passwordLabel: "Password",
  loginButton: "Sign in",
  loginBusy: "Signing in…",
  loginFailed: "Wrong email or password.",
  loginMissing: "Enter your email and password.",
  networkError: "Cannot reach the hub. Try again.",
  serverError: "The hub answered with an error (HTTP {status}).",
  logoutButton: "Log out",
  admin: "admin",
  modulesTitle: "Modules",
  summary: "{total} modules · {online} online",
  summaryOne: "1 module · {online} online",
  noModules: "No modules to show yet.",
  loadFailed: "Could not load modules. Retrying…",
  connecting: "connecting",
  connected: "connected",
  reconnecting: "reconnecting",
  disconnected: "disconnected",
  online: "online",
  offline: "offline",
  offlineReason: { timeout: "timed out", will: "lost (last will)", disconnect: "disconnected" },
  lastSeen: "last seen {ago}",
  neverSeen: "never seen",
  justNow: "just now",
  secondsAgo: "{n} s ago",
  minutesAgo: "{n} min ago",
  hoursAgo: "{n} h ago",
  daysAgo: "{n} d ago",
  noReadings: "no readings yet",
  staleHint: "last known values (module offline)",
  firmware: "firmware {fw}",
  readingLabels: {
    temperature: "Temperature",
    humidity: "Humidity",
    pressure: "Pressure",
    battery: "Battery",
    rssi: "Signal",
  },
};

/* Units and formatting by reading name; anything else is shown raw. */
const READING_FORMATS = {
  temperature: { unit: "°C", digits: 1 },
  humidity: { unit: "%", digits: 1 },
  pressure: { unit: "hPa", digits: 1 },
  battery: { unit: "V", digits: 2 },
  rssi: { unit: "dBm", digits: 0 },
};
const READING_ORDER = ["temperature", "humidity", "pressure", "battery", "rssi"];

const PAGE = "modules";

/* ------------------------------------------------------------------ helpers */

function fmt(template, values) {
  return template.replace(/\{(\w+)\}/g, (m, key) => (key in values ? String(values[key]) : m));
}

function $(id) {
  return document.getElementById(id);
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
  }
  for (const child of children || []) node.append(child);
  return node;
}

function formatReading(name, value) {
  const spec = READING_FORMATS[String(name).toLowerCase()];
  if (value === null || value === undefined) return "—";
  if (spec && typeof value === "number" && Number.isFinite(value)) {
    return `${value.toFixed(spec.digits)} ${spec.unit}`;
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function readingLabel(name) {
  const known = STRINGS.readingLabels[String(name).toLowerCase()];
  if (known) return known;
  const words = String(name).replace(/[_-]+/g, " ").trim();
  return words ? words.charAt(0).toUpperCase() + words.slice(1) : String(name);
}

function compareReadingNames(a, b) {
  const ia = READING_ORDER.indexOf(a.toLowerCase());
  const ib = READING_ORDER.indexOf(b.toLowerCase());
  if (ia !== -1 || ib !== -1) {
    if (ia === -1) return 1;
    if (ib === -1) return -1;
    return ia - ib;
  }
  return a.localeCompare(b);
}

function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isFinite(t) ? t : null;
}

function relativeTime(ms, now) {
  if (ms === null) return STRINGS.neverSeen;
  const s = Math.floor((now - ms) / 1000);
  let ago;
  if (s < 2) ago = STRINGS.justNow;
  else if (s < 60) ago = fmt(STRINGS.secondsAgo, { n: s });
  else if (s < 3600) ago = fmt(STRINGS.minutesAgo, { n: Math.floor(s / 60) });
  else if (s < 86400) ago = fmt(STRINGS.hoursAgo, { n: Math.floor(s / 3600) });
  else ago = fmt(STRINGS.daysAgo, { n: Math.floor(s / 86400) });
  return fmt(STRINGS.lastSeen, { ago });
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function flash(node) {
  node.classList.remove("flash");
  void node.offsetWidth; // restart the animation
  node.classList.add("flash");
}

/** The message of an API error body: `{"error": {"code", "message"}}`. */
function errorMessage(body) {
  return body && body.error && body.error.message;
}

class HttpError extends Error {
  constructor(status, body) {
    super(errorMessage(body) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
  }
  if (!res.ok) throw new HttpError(res.status, data);
  return data;
}

/* -------------------------------------------------------------------- state */

const state = {
  user: null,
  socket: null,
  session: null, // rt_session payload
  modules: new Map(), // moduleId -> { data, card, refs }
  resyncInFlight: false,
  resyncAgain: false,
  resyncTimer: null,
  tickTimer: null,
};

/* ------------------------------------------------------------------- views */

function showView(name) {
  $("boot").hidden = true;
  $("login-view").hidden = name !== "login";
  $("modules-view").hidden = name !== "modules";
  $("session").hidden = name !== "modules";
}

function applyStaticStrings() {
  document.title = STRINGS.appName;
  $("brand-name").textContent = STRINGS.appName;
  $("boot").textContent = STRINGS.loading;
  $("login-title").textContent = STRINGS.loginTitle;
  $("email-label").textContent = STRINGS.emailLabel;
  $("password-label").textContent = STRINGS.passwordLabel;
  $("login-button").textContent = STRINGS.loginButton;
  $("logout-button").textContent = STRINGS.logoutButton;
  $("user-admin").textContent = STRINGS.admin;
  $("modules-title").textContent = STRINGS.modulesTitle;
  $("modules-empty").textContent = STRINGS.noModules;
}

function showLoginError(message) {
  const node = $("login-error");
  node.textContent = message;
  node.hidden = !message;
}

function setConnection(stateName) {
  const node = $("connection");
  node.dataset.state = stateName;
  setText($("connection-text"), STRINGS[stateName] || stateName);
}

function showNotice(message) {
  const node = $("modules-notice");
  node.textContent = message || "";
  node.hidden = !message;
}

/* ------------------------------------------------------------ module cards */

function buildCard(moduleId) {
  const name = el("h2", { class: "module-name" });
  const id = el("code", { class: "module-id", text: moduleId });
  const type = el("span", { class: "tag module-type" });
  const status = el("span", { class: "badge", "data-role": "status" });
  const lastSeen = el("span", { class: "last-seen", "data-role": "last-seen" });
  const fw = el("span", { class: "fw", "data-role": "fw", hidden: true });
  const readings = el("dl", { class: "readings", "data-role": "readings" });
  const empty = el("p", { class: "no-readings", text: STRINGS.noReadings });

  const card = el("article", { class: "module", "data-module-id": moduleId }, [
    el("header", { class: "module-head" }, [
      el("div", { class: "module-title" }, [name, el("div", { class: "module-meta" }, [id, type])]),
      status,
    ]),
    el("div", { class: "module-sub" }, [lastSeen, fw]),
    readings,
    empty,
  ]);
  return {
    card,
    refs: { name, type, status, lastSeen, fw, readings, empty, readingEls: new Map() },
  };
}

function renderHead(entry) {
  const { data, refs } = entry;
  setText(refs.name, data.name || data.moduleId);
  setText(refs.type, data.type || "");
  refs.type.hidden = !data.type;
}

function renderStatus(entry) {
  const { data, refs, card } = entry;
  const online = !!data.online;
  setText(refs.status, online ? STRINGS.online : STRINGS.offline);
  refs.status.classList.toggle("badge-online", online);
  refs.status.classList.toggle("badge-offline", !online);
  const reason = !online && data.offlineReason ? STRINGS.offlineReason[data.offlineReason] || data.offlineReason : "";
  refs.status.title = reason;
  card.classList.toggle("is-offline", !online);
  const stale = !online && (data.stale === undefined || !!data.stale);
  card.classList.toggle("is-stale", stale);
  refs.readings.title = stale ? STRINGS.staleHint : "";
  if (data.fw) {
    setText(refs.fw, fmt(STRINGS.firmware, { fw: data.fw }));
    refs.fw.hidden = false;
  }
}

function renderLastSeen(entry, now) {
  const ms = parseTime(entry.data.lastSeen);
  setText(entry.refs.lastSeen, relativeTime(ms, now));
  const title = ms === null ? "" : new Date(ms).toLocaleString();
  if (entry.refs.lastSeen.title !== title) entry.refs.lastSeen.title = title;
}

/* Update reading cells in place; flash the ones whose text changed. */
function renderReadings(entry, changedNames, doFlash) {
  const { data, refs } = entry;
  const readings = data.readings || {};
  const names = changedNames || Object.keys(readings);
  let added = false;
  for (const name of names) {
    if (!(name in readings)) continue;
    const text = formatReading(name, readings[name]);
    let cell = refs.readingEls.get(name);
    if (!cell) {
      const dt = el("dt", { text: readingLabel(name) });
      cell = el("dd", { "data-reading": name, text });
      const wrap = el("div", { class: "reading", "data-reading-name": name }, [dt, cell]);
      refs.readingEls.set(name, cell);
      refs.readings.append(wrap);
      added = true;
      if (doFlash) flash(cell);
    } else if (cell.textContent !== text) {
      cell.textContent = text;
      if (doFlash) flash(cell);
    }
  }
  if (!changedNames) {
    // full render (snapshot): drop readings that are gone
    for (const [name, cell] of refs.readingEls) {
      if (!(name in readings)) {
        cell.parentElement.remove();
        refs.readingEls.delete(name);
      }
    }
  }
  if (added) {
    const wraps = Array.from(refs.readings.children);
    wraps.sort((a, b) => compareReadingNames(a.dataset.readingName, b.dataset.readingName));
    for (const w of wraps) refs.readings.append(w);
  }
  const none = refs.readingEls.size === 0;
  refs.empty.hidden = !none;
  refs.readings.hidden = none;
}

function renderSummary() {
  let online = 0;
  for (const entry of state.modules.values()) if (entry.data.online) online++;
  const total = state.modules.size;
  setText(
    $("modules-summary"),
    total === 1 ? fmt(STRINGS.summaryOne, { online }) : fmt(STRINGS.summary, { total, online }),
  );
  $("modules-empty").hidden = total !== 0;
}

function compareModules(a, b) {
  const na = (a.name || a.moduleId || "").toLowerCase();
  const nb = (b.name || b.moduleId || "").toLowerCase();
  return na.localeCompare(nb) || String(a.moduleId).localeCompare(String(b.moduleId));
}

/* Reconcile a full snapshot with what is on screen, updating in place. */
function applySnapshot(list) {
  const list2 = Array.isArray(list) ? list.filter((m) => m && m.moduleId) : [];
  list2.sort(compareModules);
  const seen = new Set();
  const container = $("module-list");
  const now = Date.now();
  let prev = null;
  for (const m of list2) {
    const id = String(m.moduleId);
    seen.add(id);
    let entry = state.modules.get(id);
    if (!entry) {
      const built = buildCard(id);
      entry = { data: { ...m, readings: { ...(m.readings || {}) } }, card: built.card, refs: built.refs };
      state.modules.set(id, entry);
      renderHead(entry);
      renderStatus(entry);
      renderLastSeen(entry, now);
      renderReadings(entry, null, false);
    } else {
      const cur = entry.data;
      const snapRev = typeof m.rev === "number" ? m.rev : null;
      const curRev = typeof cur.rev === "number" ? cur.rev : null;
      // Never go back in time: events may have overtaken the snapshot request.
      const newer = snapRev === null || curRev === null || snapRev >= curRev;
      cur.name = m.name;
      cur.type = m.type;
      cur.ownerId = m.ownerId;
      if (newer) {
        cur.online = m.online;
        cur.stale = m.stale;
        cur.lastSeen = m.lastSeen;
        cur.readings = { ...(m.readings || {}) };
        cur.rev = m.rev;
        if (m.online) cur.offlineReason = null;
      }
      renderHead(entry);
      renderStatus(entry);
      renderLastSeen(entry, now);
      if (newer) renderReadings(entry, null, true);
    }
    // keep DOM order in line with the sorted list, moving only what is out of place
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== entry.card) container.insertBefore(entry.card, want);
    prev = entry.card;
  }
  for (const [id, entry] of state.modules) {
    if (!seen.has(id)) {
      entry.card.remove();
      state.modules.delete(id);
    }
  }
  renderSummary();
}

/* ------------------------------------------------------------------ resync */

async function resync() {
  if (!state.user) return;
  if (state.resyncInFlight) {
    state.resyncAgain = true;
    return;
  }
  state.resyncInFlight = true;
  clearTimeout(state.resyncTimer);
  try {
    const data = await api("GET", "/api/modules");
    if (!state.user) return;
    applySnapshot(data && data.modules);
    showNotice("");
  } catch (err) {
    if (err instanceof HttpError && err.status === 401) {
      sessionExpired();
      return;
    }
    console.warn("resync failed", err);
    showNotice(STRINGS.loadFailed);
    state.resyncTimer = setTimeout(resync, 3000);
  } finally {
    state.resyncInFlight = false;
    if (state.resyncAgain && state.user) {
      state.resyncAgain = false;
      resync();
    }
  }
}

/* ------------------------------------------------------------ live events */

function onModuleOnline(msg) {
  const entry = msg && state.modules.get(String(msg.moduleId));
  if (!entry) return resync();
  const d = entry.data;
  d.online = true;
  d.stale = false;
  d.offlineReason = null;
  if (msg.lastSeen) d.lastSeen = msg.lastSeen;
  if (msg.fw) d.fw = msg.fw;
  renderStatus(entry);
  renderLastSeen(entry, Date.now());
  renderSummary();
}

function onModuleOffline(msg) {
  const entry = msg && state.modules.get(String(msg.moduleId));
  if (!entry) return resync();
  const d = entry.data;
  d.online = false;
  d.stale = true;
  d.offlineReason = msg.reason || null;
  renderStatus(entry);
  renderSummary();
}

function onTelemetry(msg) {
  const entry = msg && state.modules.get(String(msg.moduleId));
  if (!entry) return resync();
  const d = entry.data;
  const rev = typeof msg.rev === "number" ? msg.rev : null;
  const cur = typeof d.rev === "number" ? d.rev : null;
  if (rev !== null && cur !== null) {
    if (rev <= cur) return; // duplicate or older than what we have
    if (rev !== cur + 1) {
      // missed at least one update: apply nothing partial, refetch everything
      return resync();
    }
  }
  const telemetry = msg.telemetry && typeof msg.telemetry === "object" ? msg.telemetry : {};
  d.readings = Object.assign(d.readings || {}, telemetry);
  if (rev !== null) d.rev = rev;
  if (msg.ts) d.lastSeen = msg.ts;
  if (!d.online) {
    d.online = true;
    d.offlineReason = null;
  }
  d.stale = false;
  renderStatus(entry);
  renderReadings(entry, Object.keys(telemetry), true);
  renderLastSeen(entry, Date.now());
  renderSummary();
}

function safe(handler) {
  return (payload) => {
    try {
      handler(payload);
    } catch (err) {
      console.error(err);
      resync();
    }
  };
}

/* ----------------------------------------------------------------- socket */

function connectSocket() {
  disconnectSocket();
  if (typeof window.io !== "function") {
    console.error("socket.io client not loaded");
    setConnection("disconnected");
    return;
  }
  setConnection("connecting");
  // Default transports: long-polling first, then the upgrade to WebSocket (works behind
  // proxies that block WebSocket; the browser test exercises this path).
  const socket = window.io({ auth: { page: PAGE } });
  state.socket = socket;

  socket.on("connect", () => {
    setConnection("connected");
    resync(); // first connect and every reconnect: take a fresh snapshot
  });
  socket.on("disconnect", (reason) => {
    if (state.socket !== socket) return;
    if (socket.active) {
      setConnection("reconnecting");
    } else {
      // the server closed us ("io server disconnect"): check the session, then retry
      setConnection("disconnected");
      checkSessionThenReconnect(socket);
    }
    console.info("socket disconnected:", reason);
  });
  socket.on("connect_error", (err) => {
    if (state.socket !== socket) return;
    if (socket.active) {
      setConnection("reconnecting");
    } else {
      setConnection("disconnected");
      if (err && err.message === "unauthorized") checkSessionThenReconnect(socket);
    }
  });
  socket.io.on("reconnect_attempt", () => {
    if (state.socket === socket) setConnection("reconnecting");
  });

  socket.on("rt_session", (s) => {
    state.session = s || null;
  });
  socket.on("rt_module_online", safe(onModuleOnline));
  socket.on("rt_module_offline", safe(onModuleOffline));
  socket.on("rt_telemetry_updated", safe(onTelemetry));
}

async function checkSessionThenReconnect(socket) {
  try {
    await api("GET", "/api/auth/me");
  } catch (err) {
    if (err instanceof HttpError && err.status === 401) {
      sessionExpired();
      return;
    }
  }
  setTimeout(() => {
    if (state.socket === socket && state.user && !socket.connected) {
      setConnection("reconnecting");
      socket.connect();
    }
  }, 2000);
}

function disconnectSocket() {
  if (state.socket) {
    const s = state.socket;
    state.socket = null;
    s.removeAllListeners();
    s.io.removeAllListeners && s.io.removeAllListeners();
    s.disconnect();
  }
}

/* ---------------------------------------------------------------- session */

function tick() {
  const now = Date.now();
  for (const entry of state.modules.values()) renderLastSeen(entry, now);
}

function startSession(user) {
  state.user = user;
  setText($("user-name"), user.name || user.email || "");
  $("user-name").title = user.email || "";
  $("user-admin").hidden = !user.isAdmin;
  showLoginError("");
  showView("modules");
  resync();
  connectSocket();
  clearInterval(state.tickTimer);
  state.tickTimer = setInterval(tick, 1000);
}

function endSession() {
  state.user = null;
  state.session = null;
  disconnectSocket();
  clearInterval(state.tickTimer);
  clearTimeout(state.resyncTimer);
  state.modules.clear();
  $("module-list").replaceChildren();
  showNotice("");
  showView("login");
  $("password").value = "";
  $("email").focus();
}

function sessionExpired() {
  if (state.user) endSession();
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    showLoginError(STRINGS.loginMissing);
    return;
  }
  const button = $("login-button");
  button.disabled = true;
  button.textContent = STRINGS.loginBusy;
  showLoginError("");
  try {
    const user = await api("POST", "/api/auth/login", { email, password });
    startSession(user || { email });
  } catch (err) {
    if (err instanceof HttpError) {
      if (err.status === 401 || err.status === 400 || err.status === 403) {
        showLoginError(errorMessage(err.body) || STRINGS.loginFailed);
      } else {
        showLoginError(fmt(STRINGS.serverError, { status: err.status }));
      }
    } else {
      showLoginError(STRINGS.networkError);
    }
    $("password").select();
  } finally {
    button.disabled = false;
    button.textContent = STRINGS.loginButton;
  }
}

async function onLogout() {
  try {
    await api("POST", "/api/auth/logout");
  } catch (err) {
    console.warn("logout failed", err);
  }
  endSession();
}

async function boot() {
  applyStaticStrings();
  $("login-form").addEventListener("submit", onLoginSubmit);
  $("logout-button").addEventListener("click", onLogout);
  try {
    const user = await api("GET", "/api/auth/me");
    startSession(user);
  } catch (err) {
    if (!(err instanceof HttpError) || err.status !== 401) console.warn("session check failed", err);
    showView("login");
    $("email").focus();
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
