// The admin page: global stats with live charts (uPlot), realtime health, users with who is
// online, sign-in notifications, and unclaimed (pending) modules to claim or dismiss.

import { boot, startStream, toast, el, handleAuthError, showPassword, setupPasswordPanel } from './chrome.js';
import { get, post, del, ApiError } from './api.js';
import { t, errorMessage, formatTime } from './strings.js';
import { formatNumber, formatDuration, ago, parseTime } from './format.js';
import { Ring, drawSparkline } from './sparkline.js';

const $ = (id) => document.getElementById(id);

const STAT_FIELDS = ['onlineModules', 'totalModules', 'connectedClients', 'activeUsers', 'totalUsers', 'messagesPerSecond', 'eventsPerSecond', 'rejectedTotal'];
const CHARTS = [
  { field: 'messagesPerSecond', color: '--chart-1' },
  { field: 'eventsPerSecond', color: '--chart-2' },
  { field: 'onlineModules', color: '--chart-3' },
  { field: 'connectedClients', color: '--chart-4' },
];
const HEALTH_FIELDS = ['connectedClients', 'eventsPerSecond', 'avgReconnectMs', 'connectionErrors', 'reconnections'];
const CHART_WINDOW_S = 5 * 60;
const MAX_NOTIFICATIONS = 100;
const PENDING_POLL_MS = 10000;
/** GET /api/users after a burst of presence hints: this long after the last one... */
const USERS_REFETCH_DEBOUNCE_MS = 1000;
/** ...but no later than this after the first. */
const USERS_REFETCH_MAX_WAIT_MS = 4000;

const model = {
  me: null,
  stats: {},
  users: new Map(), // id -> user
  pending: new Map(), // moduleId -> entry
};
const statNodes = {};
const healthNodes = {};
const charts = {}; // field -> { xs, ys, plot, body, valueNode, ring? }
let firstPaintMs = null;
let usersRefetch = null; // debounce timer
let usersRefetchFirst = 0; // when the pending burst started
let usersRefetching = false; // a GET /api/users in flight
let usersRefetchAgain = false; // asked again meanwhile

// ------------------------------------------------------------ stats

function buildStats() {
  const tiles = $('stat-tiles');
  for (const field of STAT_FIELDS) {
    const value = el('div', { class: 'stat-value', 'data-stat': field, text: '—' });
    tiles.append(el('div', { class: 'stat-tile' }, [el('div', { class: 'stat-label', text: t(`stat.${field}`) }), value]));
    statNodes[field] = value;
  }
  const box = $('charts');
  for (const { field, color } of CHARTS) {
    const valueNode = el('span', { text: '' });
    const body = el('div', { class: 'chart-body' });
    box.append(
      el('div', { class: 'chart', 'data-chart': field }, [
        el('div', { class: 'chart-title' }, [el('span', { text: t(`stat.${field}`) }), valueNode]),
        body,
      ]),
    );
    charts[field] = { xs: [], ys: [], plot: null, body, valueNode, color, ring: null, canvas: null };
  }
  const list = $('health-list');
  for (const field of HEALTH_FIELDS) {
    const dd = el('dd', { 'data-health': field, text: '—' });
    list.append(el('dt', { text: t(`health.${field}`) }), dd);
    healthNodes[field] = dd;
  }
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function makePlot(chart) {
  const width = Math.max(200, chart.body.clientWidth || 260);
  if (typeof window.uPlot !== 'function') {
    // uPlot missing: a plain canvas line keeps the page useful.
    chart.canvas = el('canvas', { class: 'fallback' });
    chart.ring = new Ring(CHART_WINDOW_S + 10);
    chart.body.append(chart.canvas);
    return;
  }
  const stroke = cssVar(chart.color, '#4da3ff');
  const axis = { stroke: cssVar('--text-dim', '#8b98a5'), grid: { stroke: cssVar('--border', '#2a3541'), width: 1 }, ticks: { show: false }, font: '11px system-ui, sans-serif', size: 40 };
  chart.plot = new window.uPlot(
    {
      width,
      height: 100,
      legend: { show: false },
      cursor: { show: true, points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: true, range: (u, min, max) => [Math.min(min ?? max - 30, max - 30), max] }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.15 : 1] } },
      axes: [
        { ...axis, size: 22, space: 70 },
        { ...axis, space: 30, values: (u, ticks) => ticks.map((v) => formatNumber(v)) },
      ],
      series: [{}, { stroke, width: 1.5, fill: stroke + '22', points: { show: false } }],
    },
    [chart.xs, chart.ys],
    chart.body,
  );
}

function setupCharts() {
  for (const chart of Object.values(charts)) makePlot(chart);
  if (typeof ResizeObserver === 'function') {
    const ro = new ResizeObserver(() => {
      for (const chart of Object.values(charts)) {
        if (chart.plot) chart.plot.setSize({ width: Math.max(200, chart.body.clientWidth), height: 100 });
        else if (chart.canvas) drawFallback(chart);
      }
    });
    ro.observe($('charts'));
  }
}

function drawFallback(chart) {
  drawSparkline(chart.canvas, chart.ring, Date.now(), CHART_WINDOW_S * 1000, { stroke: cssVar(chart.color, '#4da3ff'), minSpanMs: 60000 });
}

function sampleCharts(stats, nowMs = Date.now()) {
  const now = nowMs / 1000;
  for (const [field, chart] of Object.entries(charts)) {
    const v = stats[field];
    if (typeof v !== 'number') continue;
    if (chart.xs.length && now - chart.xs[chart.xs.length - 1] < 0.5) {
      chart.ys[chart.ys.length - 1] = v; // two samples within a moment (snapshot + event): keep the newer
    } else {
      chart.xs.push(now);
      chart.ys.push(v);
    }
    while (chart.xs.length && chart.xs[0] < now - CHART_WINDOW_S) {
      chart.xs.shift();
      chart.ys.shift();
    }
    chart.valueNode.textContent = formatNumber(v);
    if (chart.plot) chart.plot.setData([chart.xs, chart.ys]);
    else if (chart.ring) {
      chart.ring.push(nowMs, v);
      drawFallback(chart);
    }
  }
}

function renderStats() {
  const s = model.stats;
  for (const field of STAT_FIELDS) {
    const text = formatNumber(s[field]);
    if (statNodes[field].textContent !== text) statNodes[field].textContent = text;
    statNodes[field].dataset.value = String(s[field] ?? '');
  }
  for (const field of HEALTH_FIELDS) {
    let text;
    if (field === 'avgReconnectMs') text = s.reconnections === 0 && !s.avgReconnectMs ? '—' : formatDuration(s.avgReconnectMs);
    else text = formatNumber(s[field]);
    healthNodes[field].textContent = text;
    healthNodes[field].dataset.value = String(s[field] ?? '');
  }
}

function applyStats(stats, sample = true) {
  if (!stats || typeof stats !== 'object') return;
  const before = model.stats;
  model.stats = { ...before, ...stats };
  renderStats();
  if (sample) sampleCharts(model.stats);
  // Who is online comes from the sockets: when the number of clients changes, ask again.
  if (before.connectedClients !== undefined && (before.connectedClients !== stats.connectedClients || before.activeUsers !== stats.activeUsers)) {
    scheduleUsersRefetch();
  }
}

// ------------------------------------------------------------ users

function userRow(u) {
  const row = el('tr', { 'data-user-id': String(u.id), 'data-online': u.online ? 'true' : 'false' });
  fillUserRow(row, u);
  return row;
}

function fillUserRow(row, u) {
  row.setAttribute('data-online', u.online ? 'true' : 'false');
  const tags = [];
  if (u.isAdmin) tags.push(el('span', { class: 'tag tag-admin', text: t('admin') }));
  if (u.disabled) tags.push(el('span', { class: 'tag', text: t('userDisabled') }));
  row.replaceChildren(
    el('td', {}, [el('span', { class: 'dot', 'aria-hidden': 'true' }), el('strong', { 'data-role': 'name', text: u.name || u.email }), ' ', ...tags]),
    el('td', { class: 'muted', text: u.email || '' }),
    el('td', { class: 'actions muted', 'data-role': 'status', text: u.online ? t('userOnline') : t('userOffline') }),
  );
}

function renderUsers() {
  const body = $('users');
  const list = [...model.users.values()].sort((a, b) => Number(!!b.online) - Number(!!a.online) || String(a.name).localeCompare(String(b.name)));
  const rows = new Map([...body.querySelectorAll('[data-user-id]')].map((r) => [r.dataset.userId, r]));
  let prev = null;
  for (const u of list) {
    let row = rows.get(String(u.id));
    if (row) {
      fillUserRow(row, u);
      rows.delete(String(u.id));
    } else row = userRow(u);
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== row) body.insertBefore(row, want);
    prev = row;
  }
  for (const row of rows.values()) row.remove();
  $('users-empty').hidden = list.length > 0;
  const online = list.filter((u) => u.online).length;
  $('users-summary').textContent = t('usersSummary', { total: list.length, online });
}

function applyUsers(users) {
  model.users = new Map((users || []).map((u) => [u.id, { ...u, online: !!u.online }]));
  renderUsers();
}

/**
 * Asks the hub who is online (GET /api/users), debounced: the hub's `online` means "has a
 * dashboard connected", which only the hub knows (a sign-in is not a connected dashboard, a
 * sign-out may leave another tab connected), so the page never guesses it from events.
 */
function scheduleUsersRefetch() {
  const now = Date.now();
  if (usersRefetching) {
    usersRefetchAgain = true;
    return;
  }
  if (usersRefetch) clearTimeout(usersRefetch);
  else usersRefetchFirst = now;
  const wait = Math.max(0, Math.min(USERS_REFETCH_DEBOUNCE_MS, usersRefetchFirst + USERS_REFETCH_MAX_WAIT_MS - now));
  usersRefetch = setTimeout(refetchUsers, wait);
}

async function refetchUsers() {
  usersRefetch = null;
  usersRefetching = true;
  usersRefetchAgain = false;
  try {
    const res = await get('/api/users');
    applyUsers(res?.users);
  } catch (err) {
    handleAuthError(err);
  } finally {
    usersRefetching = false;
  }
  if (usersRefetchAgain) {
    usersRefetchAgain = false;
    scheduleUsersRefetch();
  }
}

// ------------------------------------------------------------ notifications

function notify(event, text, when) {
  const list = $('notifications');
  const time = when ? new Date(when) : new Date();
  // The space keeps textContent (what a screen reader announces) "bob signed in 12:44:47";
  // in the flex row it takes no room.
  const item = el('li', { 'data-role': 'notification', 'data-event': event }, [
    el('span', { text }),
    ' ',
    el('time', { datetime: time.toISOString(), text: formatTime(time) }),
  ]);
  list.prepend(item);
  while (list.children.length > MAX_NOTIFICATIONS) list.lastElementChild.remove();
  $('notifications-empty').hidden = true;
  toast(text, event === 'rt_user_logged_in' ? 'ok' : 'info', 4000);
}

// ------------------------------------------------------------ pending

function pendingRow(p) {
  const row = el('tr', { 'data-pending-id': p.moduleId });
  fillPendingRow(row, p);
  return row;
}

function fillPendingRow(row, p) {
  const last = parseTime(p.lastSeen);
  row.replaceChildren(
    el('td', {}, [el('code', { class: 'module-id', text: p.moduleId })]),
    el('td', { class: 'muted', text: t('pendingAttempts', { n: p.attempts }) }),
    el('td', { class: 'muted', 'data-role': 'last', text: t('pendingLast', { ago: last === null ? '—' : ago(last, Date.now()), address: p.lastAddress || '?' }) }),
    el('td', { class: 'actions' }, [
      el('button', { type: 'button', class: 'btn btn-small btn-primary', 'data-action': 'claim', text: t('claim') }),
      ' ',
      el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'dismiss', text: t('dismiss') }),
    ]),
  );
}

function renderPending() {
  const body = $('pending');
  const list = [...model.pending.values()].sort((a, b) => (b.lastSeen ?? 0) - (a.lastSeen ?? 0));
  const rows = new Map([...body.querySelectorAll('tr[data-pending-id]')].map((r) => [r.dataset.pendingId, r]));
  let prev = null;
  for (const p of list) {
    let row = rows.get(p.moduleId);
    if (row) {
      rows.delete(p.moduleId);
      // a row with an open claim form is left alone
      if (!row.nextElementSibling?.matches('[data-role="claim-row"]')) fillPendingRow(row, p);
    } else row = pendingRow(p);
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== row) body.insertBefore(row, want);
    prev = row;
    const form = row.nextElementSibling;
    if (form?.matches('[data-role="claim-row"]')) prev = form;
  }
  for (const row of rows.values()) {
    const form = row.nextElementSibling;
    if (form?.matches('[data-role="claim-row"]')) form.remove();
    row.remove();
  }
  $('pending-empty').hidden = list.length > 0;
}

function applyPending(modules) {
  model.pending = new Map((modules || []).map((p) => [p.moduleId, p]));
  renderPending();
}

async function refreshPending() {
  try {
    const res = await get('/api/admin/pending');
    applyPending(res?.modules);
  } catch (err) {
    handleAuthError(err);
  }
}

function openClaim(row) {
  const id = row.dataset.pendingId;
  if (row.nextElementSibling?.matches('[data-role="claim-row"]')) return;
  const owner = el('select', { class: 'input', name: 'ownerId', 'aria-label': t('moduleOwnerLabel') });
  for (const u of [...model.users.values()].sort((a, b) => String(a.name).localeCompare(String(b.name)))) {
    const opt = el('option', { value: String(u.id), text: t('userOption', { name: u.name, email: u.email }) });
    if (model.me && u.id === model.me.id) opt.selected = true;
    owner.append(opt);
  }
  const form = el('form', { class: 'claim-form', 'data-role': 'claim-form', 'data-pending-id': id }, [
    el('input', { class: 'input', name: 'name', value: id, required: true, maxlength: '100', 'aria-label': t('moduleNameLabel') }),
    el('input', { class: 'input', name: 'type', placeholder: t('moduleTypeHint'), 'aria-label': t('moduleTypeLabel') }),
    owner,
    el('button', { type: 'submit', class: 'btn btn-small btn-primary', 'data-action': 'confirm-claim', text: t('claim') }),
    el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'cancel-claim', text: t('cancel') }),
  ]);
  const claimRow = el('tr', { 'data-role': 'claim-row' }, [el('td', { colspan: '4' }, [form])]);
  row.after(claimRow);
  form.elements.name.select();
}

async function submitClaim(form) {
  const id = form.dataset.pendingId;
  const body = { name: form.elements.name.value.trim() || id };
  const type = form.elements.type.value.trim();
  if (type) body.type = type;
  if (form.elements.ownerId.value) body.ownerId = Number(form.elements.ownerId.value);
  form.querySelectorAll('button, input, select').forEach((n) => (n.disabled = true));
  try {
    const res = await post(`/api/admin/pending/${encodeURIComponent(id)}/claim`, body);
    model.pending.delete(id);
    form.closest('tr').remove();
    renderPending();
    showPassword(res?.module?.moduleId ?? id, res?.password);
  } catch (err) {
    if (handleAuthError(err)) return;
    toast(t('claimFailed', { message: errorText(err) }), 'error');
    form.querySelectorAll('button, input, select').forEach((n) => (n.disabled = false));
    if (err instanceof ApiError && err.status === 404) refreshPending();
  }
}

async function dismiss(row) {
  const id = row.dataset.pendingId;
  row.querySelectorAll('button').forEach((n) => (n.disabled = true));
  try {
    await del(`/api/admin/pending/${encodeURIComponent(id)}`);
  } catch (err) {
    if (handleAuthError(err)) return;
    if (!(err instanceof ApiError && err.status === 404)) {
      toast(t('dismissFailed', { message: errorText(err) }), 'error');
      row.querySelectorAll('button').forEach((n) => (n.disabled = false));
      return;
    }
  }
  model.pending.delete(id);
  renderPending();
}

function setupPendingActions() {
  const body = $('pending');
  body.addEventListener('click', (ev) => {
    const button = ev.target.closest('[data-action]');
    if (!button) return;
    const action = button.dataset.action;
    if (action === 'claim') openClaim(button.closest('tr'));
    else if (action === 'dismiss') dismiss(button.closest('tr'));
    else if (action === 'cancel-claim') button.closest('tr').remove();
  });
  body.addEventListener('submit', (ev) => {
    const form = ev.target.closest('[data-role="claim-form"]');
    if (!form) return;
    ev.preventDefault();
    submitClaim(form);
  });
}

function errorText(err) {
  if (err instanceof ApiError && err.status === 0) return t('networkError');
  return errorMessage(err);
}

// ------------------------------------------------------------ stream

const handlers = {
  rt_global_stats_updated(p) {
    applyStats(p && p.stats ? p.stats : p);
  },
  rt_user_logged_in(p) {
    if (!p) return;
    // Signed in is not online (a connected dashboard): ask the hub rather than guess.
    scheduleUsersRefetch();
    const u = model.users.get(p.id);
    notify('rt_user_logged_in', t('userLoggedIn', { name: p.name || (u && u.name) || p.email || t('userNumber', { id: p.id }) }));
  },
  rt_user_logged_out(p) {
    if (!p) return;
    // Another tab or device of theirs may still be connected: ask the hub.
    scheduleUsersRefetch();
    const u = model.users.get(p.id);
    notify('rt_user_logged_out', t('userLoggedOut', { name: p.name || (u && u.name) || t('userNumber', { id: p.id }) }), parseTime(p.logoutTime));
  },
  rt_user_profile_updated(p) {
    if (p && model.me && p.id === model.me.id && p.name) $('user-name').textContent = p.name;
    const u = p && model.users.get(p.id);
    if (!u) return;
    if (p.name !== undefined) u.name = p.name;
    if (p.email !== undefined) u.email = p.email;
    renderUsers();
  },
};

async function fetchSnapshot() {
  const [stats, users, pending] = await Promise.all([get('/api/admin/stats'), get('/api/users'), get('/api/admin/pending')]);
  return { stats, users: users?.users ?? [], pending: pending?.modules ?? [] };
}

function applySnapshot(s) {
  applyStats(s.stats, true);
  applyUsers(s.users);
  applyPending(s.pending);
}

function state() {
  return {
    users: [...model.users.values()].map((u) => ({ ...u })),
    pending: [...model.pending.values()].map((p) => ({ ...p })),
    stats: { ...model.stats },
  };
}

async function main() {
  buildStats();
  let ctx;
  try {
    ctx = await boot({ page: 'admin', adminOnly: true });
  } catch {
    return;
  }
  // Only now: a non-admin on /admin would get 403s (and is on their way to /).
  const first = await fetchSnapshot().then((v) => ({ ok: true, v }), (e) => ({ ok: false, e }));
  model.me = ctx.user;
  setupCharts();
  setupPendingActions();
  setupPasswordPanel();
  if (first.ok) {
    applySnapshot(first.v);
    requestAnimationFrame(() => (firstPaintMs = performance.now()));
  } else handleAuthError(first.e);
  startStream({
    page: 'admin',
    config: ctx.config,
    handlers,
    fetchSnapshot,
    applySnapshot,
    trackRevs: false,
    getState: state,
    extraStats: () => ({ firstPaintMs }),
  });
  setInterval(() => {
    if (document.visibilityState === 'visible') refreshPending();
  }, PENDING_POLL_MS);
  // Stats are emitted only when they change: carry the last values on so the charts keep moving.
  setInterval(() => {
    const last = charts.messagesPerSecond?.xs.at(-1) ?? 0;
    if (Date.now() / 1000 - last > 1.5 && Object.keys(model.stats).length) sampleCharts(model.stats);
  }, 1000);
}

main();
