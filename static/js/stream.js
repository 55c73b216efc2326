// The realtime stream client of docs/REALTIME.md, page-agnostic: the page gives its event
// handlers and how to fetch and apply a snapshot; the stream does the rest.
//
//  - builds the handshake `auth` anew at every (re)connect: page, resume {epoch, offset},
//    reconnectMs (how long we were disconnected), connectErrors (failed attempts since);
//  - queues live events until `rt_session`, then applies `missed` (resume) or fetches and
//    applies a snapshot, then the queued events with offset > the session's offset;
//  - applies every event at most once (offsets are strictly increasing across the hub);
//  - with `trackRevs`, watches each module's `rev` in rt_telemetry_updated: older or equal
//    revs are dropped, a jump by more than one resynchronises (fetches the snapshot) unless
//    the event says it merges the revs in between (`fromRev`, sent to a client that fell
//    behind);
//  - reconnects through ReconnectionManager (`managerOptions`, e.g. from
//    ReconnectionManager.defaultsFromServer(GET /api/realtime/config)).
// No DOM needed: `document` (for the body[data-*] hooks) and `now` are injectable, so
// tests/js/stream.test.mjs drives it with a fake socket.

import { ReconnectionManager } from './reconnection-manager.js';

const TELEMETRY = 'rt_telemetry_updated';
const SNAPSHOT_RETRY_MS = [1000, 2000, 5000, 10000, 30000];
/** The hub sends rt_session right after the handshake; without it the connection is useless. */
const SESSION_TIMEOUT_MS = 15000;
/**
 * Most events kept while waiting for rt_session or a snapshot. Past it the queue is dropped
 * and a snapshot fetched after the drop covers what it held (snapshots can fail for long).
 */
export const MAX_QUEUE = 10000;

export class RealtimeStream {
  /**
   * @param {object} o
   * @param {'modules'|'admin'} o.page
   * @param {(opts: object) => object} o.io  socket.io's `io` (or a fake): called once with
   *   `{reconnection:false, autoConnect:false, transports:['websocket'], auth: cb => ...}`
   * @param {Record<string, (payload: any, offset?: number) => void>} o.handlers  by event name
   * @param {() => Promise<any>} o.fetchSnapshot
   * @param {(snapshot: any) => void} o.applySnapshot  replaces the page state
   * @param {boolean} [o.trackRevs]  rev gap detection on rt_telemetry_updated
   * @param {(snapshot: any) => Iterable<[string, number]>} [o.snapshotRevs]  module revs in a snapshot
   * @param {(synced: boolean) => void} [o.onSynced]
   * @param {(session: object) => void} [o.onSession]
   * @param {(err: any) => void} [o.onSnapshotError]  a failed snapshot (it is retried)
   * @param {(serverState: any, clientState: any) => void} [o.onSyncComplete]
   * @param {() => any} [o.getClientState]
   * @param {() => void} [o.onAuthExpired]
   * @param {(session: object) => void} [o.onUserChanged]  the socket now belongs to another
   *   user (a login in another tab): default reloads the page
   * @param {object} [o.managerOptions]  extra ReconnectionManager options
   * @param {string} [o.url]  socket URL (default: same origin)
   */
  constructor(o) {
    this._o = o;
    this._page = o.page;
    this._handlers = { ...(o.handlers || {}) };
    this._document = 'document' in o ? o.document : typeof document !== 'undefined' ? document : undefined;
    this._now = o.now || (() => Date.now());
    this._setTimeout = o.setTimeout || ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeout = o.clearTimeout || ((id) => globalThis.clearTimeout(id));

    this.epoch = null;
    this.offset = null; // last applied stream offset
    this.revs = new Map(); // moduleId -> rev
    this.session = null;
    this._phase = 'idle'; // idle | waiting (for rt_session) | snapshot | live
    this._queue = [];
    this._maxQueue = Number.isInteger(o.maxQueue) && o.maxQueue > 0 ? o.maxQueue : MAX_QUEUE;
    this._droppedThrough = null; // highest offset of a dropped queue (covered by the next snapshot)
    this._needSnapshot = false; // a dropped queue or a rev gap in `missed`: no resume, a snapshot
    this._snapshotToken = 0;
    this._resyncAgain = false;
    this._snapshotFailures = 0;
    this._retryTimer = null;
    this._sessionTimer = null;
    this._disconnectedAt = null;
    this._connectErrors = 0;
    this._connectedOnce = false;
    this._stats = {
      resumes: 0,
      snapshots: 0,
      replayed: 0,
      reconnects: 0,
      lastReconnectMs: null,
      gaps: 0,
      duplicates: 0,
      queueOverflows: 0,
    };

    const managerOptions = {
      syncOnReconnect: false,
      onAuthExpired: o.onAuthExpired,
      document: this._document,
      ...(o.managerOptions || {}),
    };
    if (!managerOptions.onAuthExpired) delete managerOptions.onAuthExpired;
    this.manager = new ReconnectionManager(() => this._createSocket(), managerOptions);
    this._setSynced(false);
  }

  /** Connects (first time) or resumes after stop(). */
  start() {
    this.manager.start();
  }

  /** Disconnects on purpose. */
  stop() {
    this._cancelRetry();
    this._cancelSessionTimer();
    this._phase = 'idle';
    this.manager.stop();
  }

  /** The manual "reconnect now". */
  reconnectNow() {
    this.manager.reconnectNow();
  }

  /** Fetches a snapshot now (e.g. after a rev gap); live events queue meanwhile. */
  resync() {
    if (this._phase === 'idle' || this._phase === 'waiting') return;
    if (this._phase === 'snapshot') {
      this._resyncAgain = true;
      return;
    }
    this._snapshot();
  }

  /** True once the page state is complete for the current connection. */
  get synced() {
    return this._phase === 'live';
  }

  /** Counters for window.mc_dashboard.stats(). */
  stats() {
    const m = this.manager.stats;
    return { ...this._stats, connectionErrors: m.connectionErrors, averageReconnectMs: m.averageReconnectMs };
  }

  /** The `auth` of the next handshake. */
  handshakeAuth() {
    const auth = { page: this._page };
    if (this.epoch !== null && Number.isInteger(this.offset)) {
      auth.resume = { epoch: this.epoch, offset: this.offset };
      // Lets the hub refuse the resume itself when the session's user or rights changed.
      if (this.session && Number.isInteger(this.session.userId)) auth.resume.userId = this.session.userId;
      if (this.session && typeof this.session.isAdmin === 'boolean') auth.resume.isAdmin = this.session.isAdmin;
    }
    if (this._disconnectedAt !== null) auth.reconnectMs = Math.max(0, Math.round(this._now() - this._disconnectedAt));
    if (this._connectErrors > 0) auth.connectErrors = this._connectErrors;
    return auth;
  }

  // ---- socket wiring ----

  _createSocket() {
    const opts = {
      reconnection: false,
      autoConnect: false,
      transports: ['websocket'],
      auth: (cb) => cb(this.handshakeAuth()),
    };
    const socket = this._o.url ? this._o.io(this._o.url, opts) : this._o.io(opts);
    this.socket = socket;
    socket.on('connect', () => this._onConnect());
    socket.on('disconnect', () => this._onDisconnect());
    socket.on('connect_error', () => {
      this._connectErrors += 1;
      if (this._disconnectedAt === null && this._connectedOnce) this._disconnectedAt = this._now();
    });
    socket.on('rt_session', (s) => this._onSession(s));
    const names = new Set(Object.keys(this._handlers));
    if (this._o.trackRevs) names.add(TELEMETRY);
    for (const name of names) {
      if (name === 'rt_session') continue;
      socket.on(name, (payload, offset) => this._onEvent(name, payload, offset));
    }
    return socket;
  }

  _onConnect() {
    if (this._connectedOnce) {
      this._stats.reconnects += 1;
      if (this._disconnectedAt !== null) this._stats.lastReconnectMs = Math.max(0, this._now() - this._disconnectedAt);
    }
    this._connectedOnce = true;
    this._disconnectedAt = null;
    this._connectErrors = 0;
    this._cancelRetry();
    this._snapshotToken += 1; // a snapshot of the previous connection no longer counts
    this._queue = [];
    this._droppedThrough = null;
    this._needSnapshot = false;
    this._phase = 'waiting';
    this._setSynced(false);
    this._sessionTimer = this._setTimeout(() => {
      this._sessionTimer = null;
      if (this._phase !== 'waiting') return;
      // No rt_session (the hub could not send it): reconnect and resume rather than wait forever.
      if (typeof console !== 'undefined') console.warn('RealtimeStream: no rt_session, reconnecting');
      if (typeof this.manager.forceReconnect === 'function') this.manager.forceReconnect();
      else this.manager.reconnectNow();
    }, SESSION_TIMEOUT_MS);
  }

  _onDisconnect() {
    if (this._disconnectedAt === null) this._disconnectedAt = this._now();
    this._cancelRetry();
    this._cancelSessionTimer();
    this._snapshotToken += 1;
    this._queue = [];
    this._phase = 'idle';
    this._setSynced(false);
  }

  _onEvent(name, payload, offset) {
    if (this._phase === 'live') {
      this._apply(name, payload, offset);
    } else if (this._phase === 'waiting' || this._phase === 'snapshot') {
      this._queue.push([name, payload, offset]);
      if (this._queue.length > this._maxQueue) this._dropQueue();
    }
    // idle: a late event of a closed connection; the next session covers it.
  }

  /**
   * The queue is too long (e.g. snapshots keep failing): forget it. A snapshot fetched after
   * this point covers every dropped event, so: while waiting for rt_session, no resume (its
   * `missed` ends before the dropped events); while a snapshot is in flight, fetch again once it
   * answers (a failed one is retried anyway, after the drop).
   */
  _dropQueue() {
    let last = null;
    for (const [, , offset] of this._queue) if (Number.isInteger(offset) && (last === null || offset > last)) last = offset;
    if (last !== null && (this._droppedThrough === null || last > this._droppedThrough)) this._droppedThrough = last;
    this._queue = [];
    this._stats.queueOverflows += 1;
    if (typeof console !== 'undefined') console.warn('RealtimeStream: event queue overflow, dropped; a snapshot follows');
    if (this._phase === 'waiting') this._needSnapshot = true;
    else if (this._phase === 'snapshot') this._resyncAgain = true;
  }

  _onSession(s) {
    if (this._phase !== 'waiting') return;
    this._cancelSessionTimer();
    const session = s && typeof s === 'object' ? s : {};
    const previous = this.session;
    this.session = session;
    // A resume is only valid for the same user with the same rights (docs/REALTIME.md): after
    // a login as someone else, or a promotion/demotion, the page state must come from a snapshot.
    const sameIdentity =
      !previous || (previous.userId === session.userId && previous.isAdmin === session.isAdmin);
    if (previous && previous.userId !== session.userId) {
      const onUserChanged =
        this._o.onUserChanged ||
        (() => {
          if (typeof location !== 'undefined') location.reload();
        });
      this._call(() => onUserChanged(session));
    }
    this._call(() => this._o.onSession && this._o.onSession(session));
    const epoch = typeof session.epoch === 'string' || typeof session.epoch === 'number' ? String(session.epoch) : null;
    const headOffset = Number.isInteger(session.offset) ? session.offset : null;
    const resumed = !this._needSnapshot && sameIdentity && session.resumed === true && epoch !== null && epoch === this.epoch && Array.isArray(session.missed);
    if (epoch !== this.epoch) {
      // A new hub process: offsets of the old one mean nothing.
      this.offset = null;
    }
    this.epoch = epoch;
    this._headOffset = headOffset;
    if (resumed) {
      this._stats.resumes += 1;
      for (const item of session.missed) {
        if (!Array.isArray(item)) continue;
        const [name, payload, offset] = item;
        if (this._apply(name, payload, offset)) this._stats.replayed += 1;
      }
      if (headOffset !== null && (this.offset === null || headOffset > this.offset)) this.offset = headOffset;
      if (this._needSnapshot) {
        // a rev gap inside `missed` (or a dropped queue): the page state is incomplete
        this._snapshot();
        return;
      }
      this._goLive();
    } else {
      this._snapshot();
    }
  }

  async _snapshot() {
    this._phase = 'snapshot';
    this._setSynced(false);
    this._resyncAgain = false;
    const token = ++this._snapshotToken;
    this._needSnapshot = false;
    // Events dropped before this fetch started are in its answer.
    const covers = this._droppedThrough;
    const clientBefore = this._o.getClientState ? this._call(() => this._o.getClientState()) : undefined;
    let snapshot;
    try {
      snapshot = await this._o.fetchSnapshot();
    } catch (err) {
      if (token !== this._snapshotToken) return;
      this._call(() => this._o.onSnapshotError && this._o.onSnapshotError(err));
      if (err && err.status === 401) return; // the page leaves for /login
      const delay = SNAPSHOT_RETRY_MS[Math.min(this._snapshotFailures, SNAPSHOT_RETRY_MS.length - 1)];
      this._snapshotFailures += 1;
      this._retryTimer = this._setTimeout(() => {
        this._retryTimer = null;
        if (token === this._snapshotToken) this._snapshot();
      }, delay);
      return;
    }
    if (token !== this._snapshotToken) return; // disconnected (or superseded) meanwhile
    this._snapshotFailures = 0;
    this._stats.snapshots += 1;
    if (this._o.trackRevs) {
      this.revs.clear();
      const revs = this._o.snapshotRevs ? this._call(() => this._o.snapshotRevs(snapshot)) : null;
      for (const [id, rev] of revs || []) if (typeof rev === 'number') this.revs.set(String(id), rev);
    }
    this._call(() => this._o.applySnapshot(snapshot));
    // Everything up to the session's head is in the snapshot.
    if (this._headOffset !== null && this._headOffset !== undefined) {
      if (this.offset === null || this._headOffset > this.offset) this.offset = this._headOffset;
    }
    if (covers !== null && (this.offset === null || covers > this.offset)) this.offset = covers;
    if (this._resyncAgain) {
      // Another gap showed up while we fetched: keep queueing, fetch again.
      this._snapshot();
      return;
    }
    this._goLive();
    this._call(() => this._o.onSyncComplete && this._o.onSyncComplete(snapshot, clientBefore));
  }

  _goLive() {
    const queued = this._queue;
    this._queue = [];
    this._phase = 'live';
    for (let i = 0; i < queued.length; i++) {
      const [name, payload, offset] = queued[i];
      this._apply(name, payload, offset);
      if (this._phase !== 'live') {
        // a rev gap in the queue started a resync: the rest waits for its snapshot
        this._queue = queued.slice(i + 1).concat(this._queue);
        return;
      }
    }
    this._setSynced(true);
  }

  /** Applies one event unless already applied; returns true when handed to the page. */
  _apply(name, payload, offset) {
    if (Number.isInteger(offset)) {
      if (this.offset !== null && offset <= this.offset) {
        this._stats.duplicates += 1;
        return false;
      }
    }
    if (this._o.trackRevs && !this._checkRev(name, payload)) {
      if (Number.isInteger(offset)) this.offset = offset;
      this._publishOffset();
      return false;
    }
    if (Number.isInteger(offset)) this.offset = offset;
    const handler = this._handlers[name];
    if (handler) this._call(() => handler(payload, offset));
    this._publishOffset();
    return true;
  }

  /** False when the event must not be applied (stale rev, or a gap that started a resync). */
  _checkRev(name, payload) {
    const id = payload && payload.moduleId !== undefined ? String(payload.moduleId) : null;
    if (id === null) return true;
    if (name === 'rt_module_removed' || name === 'rt_module_added') {
      this.revs.delete(id);
      return true;
    }
    if (name !== TELEMETRY) return true;
    const rev = payload.rev;
    if (typeof rev !== 'number') return true;
    // A client that fell behind gets a module's updates merged: `fromRev..=rev` all covered.
    const from = typeof payload.fromRev === 'number' && payload.fromRev <= rev ? payload.fromRev : rev;
    const known = this.revs.get(id);
    if (known !== undefined) {
      if (rev <= known) {
        this._stats.duplicates += 1;
        return false;
      }
      if (from > known + 1) {
        this._stats.gaps += 1;
        this._queueGap();
        return false;
      }
    }
    this.revs.set(id, rev);
    return true;
  }

  _queueGap() {
    if (this._phase === 'live') {
      this._snapshot();
    } else if (this._phase === 'snapshot') {
      this._resyncAgain = true;
    } else if (this._phase === 'waiting') {
      // replaying `missed`: finish it, then fetch a snapshot instead of going live
      this._needSnapshot = true;
    }
  }

  _cancelSessionTimer() {
    if (this._sessionTimer !== null) {
      this._clearTimeout(this._sessionTimer);
      this._sessionTimer = null;
    }
  }

  _cancelRetry() {
    if (this._retryTimer !== null) {
      this._clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
  }

  _setSynced(synced) {
    const body = this._document?.body;
    if (body && typeof body.setAttribute === 'function') body.setAttribute('data-synced', synced ? 'true' : 'false');
    this._publishOffset();
    this._call(() => this._o.onSynced && this._o.onSynced(synced));
  }

  _publishOffset() {
    const body = this._document?.body;
    if (!body || typeof body.setAttribute !== 'function') return;
    if (this.offset !== null) body.setAttribute('data-stream-offset', String(this.offset));
    if (this.epoch !== null) body.setAttribute('data-stream-epoch', this.epoch);
  }

  _call(fn) {
    try {
      return fn();
    } catch (err) {
      if (typeof console !== 'undefined') console.error('RealtimeStream: handler failed', err);
      return undefined;
    }
  }
}
