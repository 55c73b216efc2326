// What every signed-in page shares: the top bar (user, navigation, connection indicator with
// "reconnect now", logout), toasts, the realtime stream bootstrap and window.mc_dashboard.

import { api, get, post, prefetched, ApiError, redirectToLogin, handleAuthError } from './api.js';
import { ReconnectionManager } from './reconnection-manager.js';
import { RealtimeStream } from './stream.js';
import { t, applyStrings } from './strings.js';

const $ = (id) => document.getElementById(id);

/**
 * Loads the user and the realtime config (and `extra` requests) in parallel; redirects to
 * /login on 401, to / when `adminOnly` and the user is not an admin.
 * @returns {Promise<{user: object, config: object, extra: any[]}>}
 */
export async function boot({ page, adminOnly = false, extra = [] }) {
  applyStrings(document);
  document.body.dataset.page = page;
  const mePromise = prefetched('me', '/api/auth/me');
  const configPromise = prefetched('config', '/api/realtime/config').catch(() => ({}));
  const extraPromises = extra.map((p) => Promise.resolve(p).then((v) => ({ ok: true, v }), (e) => ({ ok: false, e })));
  let user;
  try {
    user = await mePromise;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) redirectToLogin();
    else showFatal(err);
    throw err;
  }
  if (adminOnly && !user.isAdmin) {
    location.replace('/');
    throw new Error('not an admin');
  }
  setupTopbar(user, page);
  const [config, ...results] = await Promise.all([configPromise, ...extraPromises]);
  return { user, config: config || {}, extra: results };
}

function showFatal(err) {
  const boot = $('boot');
  if (boot) {
    boot.hidden = false;
    boot.textContent = err instanceof ApiError && err.status ? t('serverError', { status: err.status }) : t('networkError');
  }
}

function setupTopbar(user, page) {
  const name = $('user-name');
  if (name) {
    name.textContent = user.name || user.email || '';
    name.title = user.email || '';
  }
  const adminTag = $('user-admin');
  if (adminTag) adminTag.hidden = !user.isAdmin;
  const nav = $('nav');
  if (nav) {
    nav.hidden = !user.isAdmin;
    const lang = new URLSearchParams(location.search).get('lang');
    for (const link of nav.querySelectorAll('[data-nav]')) {
      if (link.dataset.nav === page) link.setAttribute('aria-current', 'page');
      if (lang) link.setAttribute('href', `${link.getAttribute('href')}?lang=${encodeURIComponent(lang)}`);
    }
  }
  const session = $('session');
  if (session) session.hidden = false;
  $('logout-button')?.addEventListener('click', logout);
  const boot = $('boot');
  if (boot) boot.hidden = true;
}

async function logout() {
  try {
    await post('/api/auth/logout');
  } catch (err) {
    console.warn('logout failed', err);
  }
  const lang = new URLSearchParams(location.search).get('lang');
  location.assign(lang ? `/login?lang=${encodeURIComponent(lang)}` : '/login');
}

/** Mirrors body[data-connection-state] and body[data-synced] into the indicator. */
function watchConnection() {
  const indicator = $('connection');
  const text = $('connection-text');
  const button = $('reconnect-button');
  const render = () => {
    const state = document.body.dataset.connectionState || 'connecting';
    const synced = document.body.dataset.synced === 'true';
    const shown = state === 'connected' && !synced ? 'syncing' : state;
    if (indicator) indicator.dataset.state = shown;
    if (text) text.textContent = t(shown);
    if (button) button.hidden = !(state === 'failed' || state === 'reconnecting' || state === 'stopped');
  };
  new MutationObserver(render).observe(document.body, {
    attributes: true,
    attributeFilter: ['data-connection-state', 'data-synced'],
  });
  render();
}

/** Creates the page's stream, wires the indicator and `window.mc_dashboard`, and starts it. */
export function startStream({ page, config, handlers, fetchSnapshot, applySnapshot, trackRevs, snapshotRevs, getState, extraStats, onSynced, onSyncComplete }) {
  document.body.setAttribute('data-connection-state', 'connecting');
  const stream = new RealtimeStream({
    page,
    io: (opts) => window.io(opts),
    handlers,
    fetchSnapshot,
    applySnapshot,
    trackRevs,
    snapshotRevs,
    onSynced,
    onSyncComplete,
    getClientState: getState,
    onSnapshotError: (err) => {
      if (err instanceof ApiError && err.status === 401) redirectToLogin('session_expired');
      else console.warn('snapshot failed, retrying', err);
    },
    onAuthExpired: () => redirectToLogin('session_expired'),
    managerOptions: ReconnectionManager.defaultsFromServer(config),
  });
  watchConnection();
  $('reconnect-button')?.addEventListener('click', () => stream.reconnectNow());
  window.mc_dashboard = {
    state: () => getState(),
    stats: () => {
      const s = stream.stats();
      return {
        resumes: s.resumes,
        snapshots: s.snapshots,
        replayed: s.replayed,
        reconnects: s.reconnects,
        lastReconnectMs: s.lastReconnectMs,
        connectionErrors: s.connectionErrors,
        gaps: s.gaps,
        duplicates: s.duplicates,
        ...(extraStats ? extraStats() : {}),
      };
    },
    stream,
  };
  // The socket.io client: a page may load it with a script tag (admin) or only preload it
  // (modules: its ~50 KB are evaluated after the first paint, not before the page's modules).
  if (typeof window.io === 'function') connect(stream);
  else {
    loadScript(SOCKET_IO).then(
      () => connect(stream),
      () => {
        console.error(`socket.io client missing (${SOCKET_IO})`);
        connect(stream);
      },
    );
  }
  return stream;
}

const SOCKET_IO = '/vendor/socket.io.min.js';

/** Loads a classic script once (a preloaded one comes from the cache). */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.async = true;
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`failed to load ${src}`));
    document.head.append(script);
  });
}

function connect(stream) {
  stream.start();
  const socket = stream.socket;
  if (socket) {
    // A refused handshake may be an ended session: ask the API, which answers 401 then.
    socket.on('connect_error', (err) => {
      if (err && (err.message === 'unauthorized' || err.data?.status === 401)) {
        get('/api/auth/me').catch((e) => handleAuthError(e));
      }
    });
    // The hub ends our socket on logout elsewhere or when the account is disabled.
    socket.on('disconnect', (reason) => {
      if (reason === 'io server disconnect') get('/api/auth/me').catch((e) => handleAuthError(e));
    });
  }
}

/** A short message in the corner; `kind` 'info' | 'ok' | 'error'. Returns the node. */
export function toast(message, kind = 'info', ms = 5000) {
  let box = $('toasts');
  if (!box) {
    box = document.createElement('div');
    box.id = 'toasts';
    box.className = 'toasts';
    box.setAttribute('aria-live', 'polite');
    document.body.append(box);
  }
  const node = document.createElement('div');
  node.className = `toast toast-${kind}`;
  node.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  node.textContent = message;
  box.append(node);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => {
    node.classList.add('toast-out');
    setTimeout(() => node.remove(), 300);
  }, ms);
  return node;
}

/** Copies `text`; falls back to selecting `fallbackNode`'s text. */
export async function copyText(text, fallbackNode) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackNode) {
      const range = document.createRange();
      range.selectNodeContents(fallbackNode);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      try {
        return document.execCommand('copy');
      } catch {
        return false;
      }
    }
    return false;
  }
}

/** `document.createElement` with attributes (`class`, `text`, others as attributes) and children. */
export function el(tag, attrs, children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const key in attrs) {
      const v = attrs[key];
      if (v === undefined || v === null || v === false) continue;
      if (key === 'class') node.className = v;
      else if (key === 'text') node.textContent = v;
      else node.setAttribute(key, v === true ? '' : v);
    }
  }
  if (children) for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export { api, ApiError, handleAuthError };
