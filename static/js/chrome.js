// What every signed-in page shares: the top bar (user, navigation, connection indicator with
// "reconnect now", logout), toasts, the realtime stream bootstrap and window.mc_dashboard.

import { api, get, post, prefetched, ApiError, redirectToLogin, handleAuthError } from './api.js';
import { ReconnectionManager } from './reconnection-manager.js';
import { RealtimeStream } from './stream.js';
import { t, applyStrings } from './strings.js';

const $ = (id) => document.getElementById(id);

/** The hub's defaults for the client reconnect policy (docs/REALTIME.md, "Client defaults"). */
export const SERVER_DEFAULTS = Object.freeze({ maxReconnectAttempts: null, reconnectDelay: 1000, maxReconnectDelay: 30000 });

/**
 * ReconnectionManager options from `GET /api/realtime/config`'s answer; what it lacks (or the
 * whole answer, when the request failed: `config` null/undefined) takes the hub's defaults:
 * unlimited attempts, 1 s, 30 s (not the manager's own 10 attempts).
 */
export function managerOptionsFromConfig(config) {
  return {
    ...ReconnectionManager.defaultsFromServer(SERVER_DEFAULTS),
    ...(config && typeof config === 'object' ? ReconnectionManager.defaultsFromServer(config) : {}),
  };
}

/** True when an `rt_session` reports other admin rights than the page booted with. */
export function rightsChanged(bootUser, session) {
  if (!bootUser || !session || typeof session.isAdmin !== 'boolean') return false;
  return session.isAdmin !== !!bootUser.isAdmin;
}

/** The user the page booted with (GET /api/auth/me): its chrome and controls depend on it. */
let bootUser = null;

/**
 * Loads the user and the realtime config (and `extra` requests) in parallel; redirects to
 * /login on 401, to / when `adminOnly` and the user is not an admin.
 * @returns {Promise<{user: object, config: object, extra: any[]}>}
 */
export async function boot({ page, adminOnly = false, extra = [] }) {
  applyStrings(document);
  performance.mark?.('mc:strings');
  document.body.dataset.page = page;
  const mePromise = prefetched('me', '/api/auth/me');
  // null: the request failed, the hub's defaults apply (managerOptionsFromConfig)
  const configPromise = prefetched('config', '/api/realtime/config').catch(() => null);
  const extraPromises = extra.map((p) => Promise.resolve(p).then((v) => ({ ok: true, v }), (e) => ({ ok: false, e })));
  let user;
  try {
    user = await mePromise;
    performance.mark?.('mc:me');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) redirectToLogin();
    else showFatal(err);
    throw err;
  }
  if (adminOnly && !user.isAdmin) {
    location.replace('/');
    throw new Error('not an admin');
  }
  bootUser = user;
  setupTopbar(user, page);
  const [config, ...results] = await Promise.all([configPromise, ...extraPromises]);
  return { user, config: config ?? null, extra: results };
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

/**
 * Creates the page's stream, wires the indicator and `window.mc_dashboard`, and starts it.
 * `onSession` (optional) is called with every `rt_session`; a session whose `isAdmin` differs
 * from the booted user's reloads the page (the chrome, the owner select and the admin link
 * depend on it; a change of user is reloaded by the stream itself).
 */
export function startStream({ page, config, handlers, fetchSnapshot, applySnapshot, trackRevs, snapshotRevs, getState, extraStats, onSynced, onSyncComplete, onSession }) {
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
    onSession: (session) => {
      if (rightsChanged(bootUser, session)) {
        reloadOnce();
        return;
      }
      if (onSession) onSession(session);
    },
    getClientState: getState,
    onSnapshotError: (err) => {
      if (err instanceof ApiError && err.status === 401) redirectToLogin('session_expired');
      else console.warn('snapshot failed, retrying', err);
    },
    onAuthExpired: () => redirectToLogin('session_expired'),
    managerOptions: managerOptionsFromConfig(config),
  });
  watchConnection();
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
  // A failed load is retried with backoff (indicator 'failed' while waiting, 'connecting' while
  // loading; "reconnect now" and mc_socketReconnect() retry at once); the stream starts once
  // `window.io` exists.
  const hasIo = () => typeof window.io === 'function';
  let loader = null;
  if (hasIo()) connect(stream);
  else {
    loader = retryLoad({
      load: () => loadScript(SOCKET_IO),
      ready: hasIo,
      onState: (state) => {
        if (!stream.socket) document.body.setAttribute('data-connection-state', state);
      },
      onError: (err, attempt) => console.error(`socket.io client missing (${SOCKET_IO}), attempt ${attempt}`, err),
    });
    // until the manager starts (and defines its own): a forced reconnect retries the load
    window.mc_socketReconnect = () => (stream.socket ? stream.reconnectNow() : loader.retryNow());
    loader.promise.then(() => connect(stream));
  }
  $('reconnect-button')?.addEventListener('click', () => {
    if (stream.socket || !loader) stream.reconnectNow();
    else loader.retryNow();
  });
  return stream;
}

/** Reloads the page, at most once per 10 s (a hub and a page that keep disagreeing must not loop). */
function reloadOnce() {
  const key = 'mc_rightsReloadAt';
  let last = 0;
  try {
    last = Number(sessionStorage.getItem(key)) || 0;
    sessionStorage.setItem(key, String(Date.now()));
  } catch {
    // no storage: reload anyway
  }
  if (Date.now() - last < 10000) {
    console.warn('rights changed again right after a reload; not reloading');
    return;
  }
  location.reload();
}

const SOCKET_IO = '/vendor/socket.io.min.js';
/** Delays between attempts to load a script that failed (the last one repeats). */
export const SCRIPT_RETRY_MS = [1000, 2000, 5000, 10000, 30000];

/**
 * Calls `load()` (a promise) until it resolves and `ready()` holds, waiting `delays[n]` after the
 * n-th failure (the last delay repeats); never rejects. `onState('connecting')` before each
 * attempt, `onState('failed')` after a failure (until the next attempt). `retryNow()` skips the
 * wait. Returns `{ promise, retryNow, attempts() }`.
 */
export function retryLoad({ load, ready = () => true, delays = SCRIPT_RETRY_MS, onState = () => {}, onError = () => {}, setTimeout: setT = (fn, ms) => globalThis.setTimeout(fn, ms), clearTimeout: clearT = (id) => globalThis.clearTimeout(id) }) {
  let attempts = 0;
  let timer = null;
  let loading = false;
  let done = false;
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  const attempt = () => {
    if (done || loading) return;
    if (timer !== null) {
      clearT(timer);
      timer = null;
    }
    loading = true;
    attempts += 1;
    onState('connecting');
    let p;
    try {
      p = Promise.resolve(load());
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      () => {
        if (!ready()) throw new Error('loaded, but not ready');
      },
    ).then(
      () => {
        loading = false;
        done = true;
        resolve();
      },
      (err) => {
        loading = false;
        try {
          onError(err, attempts);
        } catch {
          // a logging failure must not stop the retries
        }
        onState('failed');
        const delay = delays[Math.min(attempts - 1, delays.length - 1)];
        timer = setT(() => {
          timer = null;
          attempt();
        }, delay);
      },
    );
  };
  attempt();
  return { promise, retryNow: attempt, attempts: () => attempts };
}

/** Loads a classic script (a preloaded one comes from the cache); a failed one's element is removed. */
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.async = true;
    script.onload = () => resolve();
    script.onerror = () => {
      script.remove();
      reject(new Error(`failed to load ${src}`));
    };
    document.head.append(script);
  });
}

function connect(stream) {
  try {
    stream.start();
  } catch (err) {
    console.error('realtime stream failed to start', err);
    return;
  }
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

/**
 * Shows a new module's MQTT password once in `#module-password-panel` and focuses the panel;
 * `opener` (optional) gets the focus back when the panel is closed.
 */
export function showPassword(id, password, opener) {
  const panel = $('module-password-panel');
  if (!panel) return;
  $('module-password-title').textContent = t('passwordOnceTitle', { id });
  $('module-password').textContent = password || '';
  passwordOpener = opener || null;
  panel.hidden = false;
  if (!panel.hasAttribute('tabindex')) panel.setAttribute('tabindex', '-1');
  panel.focus();
}

let passwordOpener = null;

/** Wires the password panel's Copy and Close buttons (closing clears the password from the page). */
export function setupPasswordPanel() {
  const panel = $('module-password-panel');
  const copy = $('copy-password-button');
  if (!panel || !copy) return;
  if (!panel.hasAttribute('role')) panel.setAttribute('role', 'region');
  if (!panel.hasAttribute('aria-labelledby')) panel.setAttribute('aria-labelledby', 'module-password-title');
  copy.addEventListener('click', async () => {
    const ok = await copyText($('module-password').textContent, $('module-password'));
    copy.textContent = ok ? t('copied') : t('copy');
    setTimeout(() => (copy.textContent = t('copy')), 1500);
  });
  $('close-password-button').addEventListener('click', () => {
    $('module-password').textContent = '';
    panel.hidden = true;
    const opener = passwordOpener;
    passwordOpener = null;
    if (opener && opener.isConnected && !opener.hidden) opener.focus();
  });
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
