// ReconnectionManager: owns the reconnect policy for a socket.io-like socket, so every
// dashboard page behaves the same after a network drop, a hub restart or an expired session.
// No dependencies; runs in browsers and in Node (every window/document use is guarded and
// injectable, which is what the unit tests in tests/js/reconnection-manager.test.mjs rely on).

/** Never retry faster than this, even when the jitter draws ~0: protects the hub from a burst. */
const MIN_DELAY_MS = 100;
/** 2^30 × any sane base is far above any cap; keeps the arithmetic finite for huge attempt counts. */
const MAX_EXPONENT = 30;

const globalWindow = () => (typeof window !== 'undefined' ? window : undefined);
const globalDocument = () => (typeof document !== 'undefined' ? document : undefined);

/** A positive finite number (or Infinity when `allowInfinity`), from a number or a numeric string; else undefined. */
function parseCount(value, allowInfinity) {
  if (value === undefined || value === null || value === '') return undefined;
  const n = typeof value === 'number' ? value : Number(String(value).trim());
  if (Number.isNaN(n) || n < 0) return undefined;
  if (!Number.isFinite(n) && !allowInfinity) return undefined;
  return n;
}

/**
 * Reconnects a socket.io-like socket itself (the socket is used with `reconnection: false`
 * semantics), because socket.io's built-in loop knows nothing about our auth failures,
 * the browser coming back online, or resynchronising page state after a gap.
 *
 * Policy: exponential backoff with full jitter capped at `maxReconnectDelay`; an
 * unauthorized error waits at least `authFailureDelay`; an expired session calls
 * `onAuthExpired()` and stops; a refused page (`forbidden page`: e.g. an admin demoted while
 * on /admin, refused forever) calls `onForbidden()` and stops; after `maxReconnectAttempts`
 * failures the state is 'failed' until `reconnectNow()`; an `online` event or the tab becoming
 * visible retries at once, except during the wait after an unauthorized error (that floor holds).
 */
export class ReconnectionManager {
  /**
   * @param {() => {on(event: string, fn: Function): any, connect(): any, disconnect(): any, connected: boolean}} socketInitializer
   *   Creates the socket once, on the first `start()`; the same socket is reconnected afterwards
   *   so listeners the page registered on it survive reconnects.
   * @param {object} [options] maxReconnectAttempts (10, Infinity allowed), reconnectDelay (1000),
   *   maxReconnectDelay (30000), syncOnReconnect (true), authFailureDelay (30000), getClientState,
   *   sync, onAuthExpired (default: go to /login), onForbidden (default: `location.replace('/')`).
   *   Every environment dependency (random,
   *   setTimeout, clearTimeout, now, target, window, document) is injectable so the policy can
   *   be tested deterministically.
   */
  constructor(socketInitializer, options = {}) {
    if (typeof socketInitializer !== 'function') {
      throw new TypeError('ReconnectionManager: socketInitializer must be a function');
    }
    this._init = socketInitializer;
    const win = 'window' in options ? options.window : globalWindow();
    const doc = 'document' in options ? options.document : globalDocument();
    this._window = win;
    this._document = doc;
    this._opts = {
      maxReconnectAttempts: parseCount(options.maxReconnectAttempts, true) ?? 10,
      reconnectDelay: parseCount(options.reconnectDelay, false) ?? 1000,
      maxReconnectDelay: parseCount(options.maxReconnectDelay, false) ?? 30000,
      syncOnReconnect: options.syncOnReconnect !== false,
      authFailureDelay: parseCount(options.authFailureDelay, false) ?? 30000,
      getClientState: options.getClientState ?? (() => undefined),
      sync: options.sync,
      onAuthExpired:
        options.onAuthExpired ??
        (() => {
          if (win && win.location && typeof win.location.assign === 'function') win.location.assign('/login');
        }),
      onForbidden:
        options.onForbidden ??
        (() => {
          if (win && win.location && typeof win.location.replace === 'function') win.location.replace('/');
        }),
      random: options.random ?? Math.random,
      setTimeout: options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      clearTimeout: options.clearTimeout ?? ((id) => globalThis.clearTimeout(id)),
      now: options.now ?? Date.now,
    };
    // 'online' is fired on window, 'visibilitychange' on document; one injected target gets both.
    this._onlineTarget = options.target ?? win;
    this._visibilityTarget = options.target ?? doc;

    /** Called with the socket after every successful reconnect (not the first connect): re-subscribe here. */
    this.onReconnect = null;
    /** Called when an established connection drops unexpectedly: show stale-data hints here. */
    this.onDisconnect = null;
    /** Called after a reconnect's `sync(socket)` resolved, with (serverState, clientState), so the page can reconcile. */
    this.onSyncComplete = null;

    this._socket = null;
    this._state = 'stopped';
    this._attempts = 0;
    this._timer = null;
    this._hasConnected = false;
    this._disconnectedAt = null;
    this._consecutive401 = 0;
    this._reconnectCount = 0;
    this._reconnectTotalMs = 0;
    /** While a retry waits out `authFailureDelay`: the time before which no attempt is made. */
    this._authWaitUntil = null;
    this._connectionErrors = 0;
    this._listening = false;
    this._forcing = false;
    this._onOnline = () => this._retryImmediately();
    this._onVisibility = () => {
      const visibility = this._document?.visibilityState ?? this._visibilityTarget?.visibilityState;
      if (visibility === 'visible') this._retryImmediately();
    };
  }

  /**
   * Maps the hub's realtime config to constructor options, so the server decides the policy;
   * invalid or missing values are left out. Accepts the answer of `GET /api/realtime/config`
   * (`{maxReconnectAttempts: n|null, reconnectDelay, maxReconnectDelay}`, null = unlimited) and
   * the environment-style names (`REALTIME_MAX_RECONNECT_ATTEMPTS`, `REALTIME_RECONNECT_DELAY`,
   * `REALTIME_MAX_RECONNECT_DELAY`; numbers or numeric strings, as rendered into a page).
   * @param {object} [config]
   * @returns {{maxReconnectAttempts?: number, reconnectDelay?: number, maxReconnectDelay?: number}}
   */
  static defaultsFromServer(config = {}) {
    const out = {};
    const pick = (camel, env) => {
      if (config && camel in config) return config[camel];
      return config?.[env];
    };
    const rawAttempts = pick('maxReconnectAttempts', 'REALTIME_MAX_RECONNECT_ATTEMPTS');
    const attempts =
      config && 'maxReconnectAttempts' in config && config.maxReconnectAttempts === null
        ? Infinity
        : parseCount(rawAttempts, true);
    if (attempts !== undefined) out.maxReconnectAttempts = attempts;
    const delay = parseCount(pick('reconnectDelay', 'REALTIME_RECONNECT_DELAY'), false);
    if (delay !== undefined) out.reconnectDelay = delay;
    const maxDelay = parseCount(pick('maxReconnectDelay', 'REALTIME_MAX_RECONNECT_DELAY'), false);
    if (maxDelay !== undefined) out.maxReconnectDelay = maxDelay;
    return out;
  }

  /** 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'stopped': what the connection indicator shows. */
  get state() {
    return this._state;
  }

  /** Reconnect attempts scheduled since the last successful connect (0 while connected). */
  get attempts() {
    return this._attempts;
  }

  /** The socket, once `start()` created it; null before. */
  get socket() {
    return this._socket;
  }

  /**
   * Counters for diagnostics: how often we reconnected, how long a reconnect took on average
   * (from the drop to the new connect), and how many connect errors we saw.
   * @returns {{reconnects: number, averageReconnectMs: number, connectionErrors: number}}
   */
  get stats() {
    const n = this._reconnectCount;
    return {
      reconnects: n,
      averageReconnectMs: n ? this._reconnectTotalMs / n : 0,
      connectionErrors: this._connectionErrors,
    };
  }

  /** Creates the socket (first time only), listens for online/visibility, and connects. */
  start() {
    if (this._state !== 'stopped') return;
    if (!this._socket) {
      this._socket = this._init();
      this._disableBuiltInReconnection(this._socket);
      this._attachSocketHandlers(this._socket);
    }
    this._addEnvListeners();
    if (this._window) this._window.mc_socketReconnect = () => this.forceReconnect();
    if (this._socket.connected) {
      this._setState('connecting');
      this._handleConnect();
      return;
    }
    this._setState('connecting');
    this._connect();
  }

  /** Disconnects on purpose: no reconnect follows, timers and listeners are removed. */
  stop() {
    if (this._state === 'stopped') return;
    this._setState('stopped');
    this._clearTimer();
    this._removeEnvListeners();
    this._disconnectedAt = null;
    if (this._socket) this._call(() => this._socket.disconnect());
  }

  /** Retries right now with a fresh attempt budget (the manual "reconnect" button; also restarts after 'failed' or stop()). */
  reconnectNow() {
    if (this._state === 'stopped') {
      this._attempts = 0;
      this.start();
      return;
    }
    if (this._state === 'connected') return;
    this._clearTimer();
    this._attempts = 0;
    this._setState(this._hasConnected ? 'reconnecting' : 'connecting');
    this._connect();
  }

  /**
   * Like `reconnectNow()`, but also drops a working connection first and connects again at once
   * (counted as a reconnect; `onReconnect`/sync follow as after a network drop). This is what
   * `window.mc_socketReconnect()` does.
   */
  forceReconnect() {
    if (this._state !== 'connected' || !this._socket) {
      this.reconnectNow();
      return;
    }
    this._forcing = true;
    try {
      this._call(() => this._socket.disconnect());
    } finally {
      this._forcing = false;
    }
    if (this._state === 'connected') {
      // The socket did not report the disconnect synchronously: treat it as dropped now.
      this._handleDisconnect('forced reconnect');
    }
    this._clearTimer();
    this._attempts = 0;
    this._connect();
  }

  // ---- internals ----

  _disableBuiltInReconnection(socket) {
    // socket.io-client: the Manager's own loop would race ours.
    const manager = socket && socket.io;
    if (manager && typeof manager.reconnection === 'function') this._call(() => manager.reconnection(false));
  }

  _attachSocketHandlers(socket) {
    socket.on('connect', () => this._handleConnect());
    socket.on('disconnect', (reason) => this._handleDisconnect(reason));
    socket.on('connect_error', (err) => this._handleConnectError(err));
  }

  _addEnvListeners() {
    if (this._listening) return;
    this._listening = true;
    this._onlineTarget?.addEventListener?.('online', this._onOnline);
    this._visibilityTarget?.addEventListener?.('visibilitychange', this._onVisibility);
  }

  _removeEnvListeners() {
    if (!this._listening) return;
    this._listening = false;
    this._onlineTarget?.removeEventListener?.('online', this._onOnline);
    this._visibilityTarget?.removeEventListener?.('visibilitychange', this._onVisibility);
  }

  _handleConnect() {
    if (this._state === 'stopped') return;
    this._clearTimer();
    const wasReconnect = this._hasConnected;
    this._hasConnected = true;
    this._attempts = 0;
    this._consecutive401 = 0;
    this._authWaitUntil = null;
    if (wasReconnect && this._disconnectedAt !== null) {
      this._reconnectCount += 1;
      this._reconnectTotalMs += Math.max(0, this._opts.now() - this._disconnectedAt);
    }
    this._disconnectedAt = null;
    this._setState('connected');
    if (!wasReconnect) return;
    const socket = this._socket;
    this._call(() => this.onReconnect && this.onReconnect(socket));
    if (this._opts.syncOnReconnect && typeof this._opts.sync === 'function') this._syncAfterReconnect(socket);
  }

  async _syncAfterReconnect(socket) {
    let serverState;
    try {
      serverState = await this._opts.sync(socket);
    } catch (err) {
      if (typeof console !== 'undefined') console.warn('ReconnectionManager: sync after reconnect failed', err);
      return;
    }
    // A drop during the sync makes the result stale; the next reconnect syncs again.
    if (this._state !== 'connected' || this._socket !== socket) return;
    const clientState = this._call(() => this._opts.getClientState());
    this._call(() => this.onSyncComplete && this.onSyncComplete(serverState, clientState));
  }

  _handleDisconnect(reason) {
    if (this._state === 'stopped') return;
    if (reason === 'io client disconnect' && !this._forcing) {
      // Someone called socket.disconnect() on purpose: honour it like stop().
      this.stop();
      return;
    }
    const wasConnected = this._state === 'connected';
    if (this._disconnectedAt === null) this._disconnectedAt = this._opts.now();
    this._setState('reconnecting');
    if (wasConnected) this._call(() => this.onDisconnect && this.onDisconnect(reason));
    this._scheduleRetry(0);
  }

  _handleConnectError(err) {
    if (this._state === 'stopped') return;
    this._connectionErrors += 1;
    const data = err && typeof err === 'object' ? err.data : undefined;
    const status401 = data?.status === 401;
    const unauthorized = status401 || err?.message === 'unauthorized';
    const sessionExpired = data?.code === 'session_expired' || (status401 && this._consecutive401 >= 1);
    this._consecutive401 = status401 ? this._consecutive401 + 1 : 0;
    if (sessionExpired) {
      this.stop();
      this._call(() => this._opts.onAuthExpired());
      return;
    }
    if (err?.message === 'forbidden page') {
      // The hub refuses this page to this user (e.g. no longer an admin): retrying cannot help.
      this.stop();
      this._call(() => this._opts.onForbidden());
      return;
    }
    if (this._state !== 'failed') this._setState(this._hasConnected ? 'reconnecting' : 'connecting');
    this._authWaitUntil = unauthorized ? this._opts.now() + this._opts.authFailureDelay : null;
    this._scheduleRetry(unauthorized ? this._opts.authFailureDelay : 0);
  }

  /** Backoff delay for the given attempt index: full jitter over min(cap, base·2^attempt), floored. */
  _delayFor(attempt, minDelay) {
    const { reconnectDelay, maxReconnectDelay, random } = this._opts;
    const ceiling = Math.min(maxReconnectDelay, reconnectDelay * 2 ** Math.min(attempt, MAX_EXPONENT));
    const jittered = random() * ceiling;
    return Math.max(MIN_DELAY_MS, minDelay, jittered);
  }

  _scheduleRetry(minDelay) {
    this._clearTimer();
    if (this._state === 'failed') return;
    if (this._attempts >= this._opts.maxReconnectAttempts) {
      this._setState('failed');
      return;
    }
    const delay = this._delayFor(this._attempts, minDelay);
    this._attempts += 1;
    this._timer = this._opts.setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }

  /** Milliseconds left of the wait after an unauthorized error (0 when none). */
  _authWaitLeft() {
    if (this._authWaitUntil === null) return 0;
    const left = this._authWaitUntil - this._opts.now();
    if (left > 0) return left;
    this._authWaitUntil = null;
    return 0;
  }

  _retryImmediately() {
    if (this._state === 'stopped' || this._state === 'connected') return;
    if (this._socket?.connected) return;
    const authWait = this._authWaitLeft();
    if (this._state === 'failed') {
      if (authWait > 0) {
        // Start over, but not before the auth-failure wait is over.
        this._clearTimer();
        this._attempts = 0;
        this._setState(this._hasConnected ? 'reconnecting' : 'connecting');
        this._attempts += 1;
        this._timer = this._opts.setTimeout(() => {
          this._timer = null;
          this._connect();
        }, authWait);
        return;
      }
      this.reconnectNow();
      return;
    }
    // Only replace a pending wait; an attempt already in flight is left alone.
    if (this._timer === null) return;
    // The pending wait already honours the auth-failure floor: online/visible does not shorten it.
    if (authWait > 0) return;
    this._clearTimer();
    this._connect();
  }

  _connect() {
    if (this._state === 'stopped' || !this._socket) return;
    this._call(() => this._socket.connect());
  }

  _clearTimer() {
    if (this._timer !== null) {
      this._opts.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  _setState(state) {
    this._state = state;
    const body = this._document?.body;
    if (body && typeof body.setAttribute === 'function') body.setAttribute('data-connection-state', state);
  }

  /** Runs a callback, logging instead of throwing: a page's handler bug must not break reconnecting. */
  _call(fn) {
    try {
      return fn();
    } catch (err) {
      if (typeof console !== 'undefined') console.error('ReconnectionManager: callback failed', err);
      return undefined;
    }
  }
}
