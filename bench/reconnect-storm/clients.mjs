// Reconnect-storm worker: a share of the 1,000 dashboard clients, each a socket.io-client 4.8
// socket driven by the pages' ReconnectionManager (static/js/reconnection-manager.js) and
// following the resume protocol of docs/REALTIME.md. Forked by storm.mjs; talks over IPC only.
//
// Per client, per storm: the time from the drop (the proxy's cut, a wall-clock timestamp from
// the coordinator) to "fully synchronised":
//   - rt_session with resumed === true: after `missed` and the queued live events are applied;
//   - otherwise (resumed false or absent): after GET /api/modules completed (the snapshot).

import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { ReconnectionManager } from '../../static/js/reconnection-manager.js';

const require = createRequire(new URL('../../tests/js/package.json', import.meta.url));
const { io } = require('socket.io-client');

/** Wall-clock milliseconds with sub-ms precision, comparable across processes of one machine. */
const wallNow = () => performance.timeOrigin + performance.now();

let cfg = null;
const clients = [];
/** 'jitter': the manager's full-jitter backoff; 'herd': random() = 0, so all retry after the 100 ms floor. */
let mode = 'jitter';
/** Whether clients present `resume` in their handshake auth. */
let resumeEnabled = true;
let armed = null; // { storm } while a storm is measured

class Client {
  constructor(index, cookie, user) {
    this.index = index;
    this.cookie = cookie;
    this.user = user;
    this.epoch = null;
    this.offset = null;
    this.connection = 0; // increments per connect
    this.sessionSeen = false; // rt_session seen on the current connection
    this.queued = []; // [offset, event, payload] of live events that arrived before rt_session
    this.revs = new Map(); // moduleId -> last applied rev (telemetry carries the module's rev)
    this.gaps = 0; // telemetry whose rev jumped by more than one: an event was lost
    this.synced = false;
    this.syncedAt = null;
    this.events = 0;
    this.snapshots = 0;
    this.resumes = 0;
    this.record = null; // per-storm measurement
    this.socket = io(cfg.url, {
      transports: cfg.transports,
      forceNew: true,
      reconnection: false,
      autoConnect: false,
      extraHeaders: { cookie },
      // ws offers permessage-deflate by default (as browsers do); --deflate off withholds it.
      perMessageDeflate: cfg.deflate ? { threshold: 1024 } : false,
      auth: (cb) => cb(this.auth()),
    });
    this.rm = new ReconnectionManager(() => this.socket, {
      maxReconnectAttempts: Infinity,
      reconnectDelay: cfg.reconnectDelay,
      maxReconnectDelay: cfg.maxReconnectDelay,
      syncOnReconnect: false,
      window: undefined,
      document: undefined,
      random: () => (mode === 'herd' ? 0 : Math.random()),
      onAuthExpired: () => {
        if (this.record) this.record.authExpired = true;
      },
    });
    const connect = this.socket.connect.bind(this.socket);
    this.socket.connect = () => {
      if (this.record && this.record.attemptAt === null && this.record.disconnectedAt !== null) this.record.attemptAt = wallNow();
      return connect();
    };
    this.socket.on('connect', () => {
      this.connection += 1;
      this.sessionSeen = false;
      this.queued = [];
      if (this.record) this.record.connectedAt ??= wallNow();
    });
    this.socket.on('disconnect', () => {
      this.synced = false;
      if (this.record && this.record.disconnectedAt === null) this.record.disconnectedAt = wallNow();
    });
    this.socket.on('connect_error', () => {
      if (this.record) this.record.connectErrors += 1;
    });
    this.socket.onAny((event, payload, offset) => this.onEvent(event, payload, offset));
  }

  auth() {
    const a = { page: 'modules' };
    if (resumeEnabled && this.epoch !== null && Number.isInteger(this.offset)) {
      a.resume = { epoch: this.epoch, offset: this.offset };
      // as static/js/stream.js: who we were, so the hub refuses a resume across a change of rights
      if (Number.isInteger(this.sessionUser)) a.resume.userId = this.sessionUser;
      if (typeof this.sessionAdmin === 'boolean') a.resume.isAdmin = this.sessionAdmin;
    }
    if (this.record) {
      a.reconnectMs = Math.max(0, Math.round(wallNow() - this.record.cutAt));
      a.connectErrors = this.record.connectErrors;
    }
    return a;
  }

  onEvent(event, payload, offset) {
    this.events += 1;
    if (event === 'rt_session') {
      this.onSession(payload || {});
      return;
    }
    if (!Number.isInteger(offset)) return; // a hub without offsets
    if (!this.sessionSeen || !this.synced) {
      this.queued.push([offset, event, payload]);
      return;
    }
    this.apply(event, payload);
    if (this.offset === null || offset > this.offset) this.offset = offset;
  }

  /** Applies one event to the model: here only the telemetry revs, to detect lost events. */
  apply(event, payload) {
    if (event !== 'rt_telemetry_updated' || !payload || !Number.isInteger(payload.rev)) return;
    const prev = this.revs.get(payload.moduleId);
    if (prev !== undefined && payload.rev <= prev) return; // already applied (snapshot or replay)
    if (prev !== undefined && payload.rev > prev + 1) {
      this.gaps += 1;
      if (this.record) this.record.gaps += 1;
    }
    this.revs.set(payload.moduleId, payload.rev);
  }

  onSession(s) {
    this.sessionSeen = true;
    if (this.record) this.record.sessionAt ??= wallNow();
    const connection = this.connection;
    const headOffset = Number.isInteger(s.offset) ? s.offset : null;
    if (typeof s.epoch === 'string') this.epoch = s.epoch;
    this.sessionUser = s.userId;
    this.sessionAdmin = s.isAdmin;
    if (s.resumed === true) {
      let applied = 0;
      let max = this.offset ?? -1;
      for (const item of Array.isArray(s.missed) ? s.missed : []) {
        applied += 1;
        if (!Array.isArray(item)) continue;
        this.apply(item[0], item[1]);
        if (Number.isInteger(item[2]) && item[2] > max) max = item[2];
      }
      if (headOffset !== null && headOffset > max) max = headOffset;
      this.finishSync(connection, max, 'resume', applied);
    } else {
      this.snapshot(connection, headOffset);
    }
  }

  async snapshot(connection, headOffset) {
    if (this.record) this.record.snapshotStartedAt = wallNow();
    try {
      const res = await fetch(cfg.url + '/api/modules', { headers: { cookie: this.cookie, accept: 'application/json' } });
      const body = await res.json();
      if (res.status !== 200 || !Array.isArray(body.modules)) throw new Error(`HTTP ${res.status}`);
      if (this.record) this.record.modules = body.modules.length;
      if (connection === this.connection) {
        this.revs = new Map(body.modules.map((m) => [m.moduleId, m.rev]));
      }
    } catch (err) {
      if (this.record) this.record.snapshotErrors += 1;
      // The page retries a failed snapshot after 3 s; so do we (on the same connection only).
      setTimeout(() => {
        if (this.connection === connection && this.socket.connected) this.snapshot(connection, headOffset);
      }, 3000);
      return;
    }
    this.finishSync(connection, headOffset, 'snapshot', 0);
  }

  finishSync(connection, offset, how, missed) {
    if (connection !== this.connection || !this.socket.connected) return; // dropped meanwhile
    let max = offset ?? -1;
    for (const [o, event, payload] of this.queued) {
      if (offset === null || o > offset) this.apply(event, payload);
      if (o > max) max = o;
    }
    this.queued = [];
    this.offset = max >= 0 ? max : this.offset;
    this.synced = true;
    this.syncedAt = wallNow();
    if (how === 'resume') this.resumes += 1;
    else this.snapshots += 1;
    if (this.record && this.record.syncedAt === null) {
      this.record.syncedAt = this.syncedAt;
      this.record.how = how;
      this.record.missed = missed;
    }
    if (startWaiters.length && clients.every((c) => c.synced)) {
      for (const w of startWaiters.splice(0)) w();
    }
  }
}

const startWaiters = [];

function send(msg) {
  process.send(msg);
}

async function start(msg) {
  cfg = msg;
  for (let i = 0; i < msg.clients.length; i++) {
    const { index, cookie, user } = msg.clients[i];
    clients.push(new Client(index, cookie, user));
  }
  // Connect in waves so the initial connects do not look like a storm.
  for (let i = 0; i < clients.length; i += cfg.wave) {
    for (const c of clients.slice(i, i + cfg.wave)) c.rm.start();
    await new Promise((r) => setTimeout(r, cfg.waveMs));
  }
  await new Promise((resolve) => {
    if (clients.every((c) => c.synced)) resolve();
    else startWaiters.push(resolve);
  });
  send({ type: 'started', n: clients.length });
}

function arm(msg) {
  mode = msg.mode;
  resumeEnabled = msg.resume;
  armed = { storm: msg.storm };
  for (const c of clients) {
    c.record = {
      cutAt: msg.cutAt ?? wallNow(),
      disconnectedAt: null,
      attemptAt: null,
      connectedAt: null,
      sessionAt: null,
      snapshotStartedAt: null,
      syncedAt: null,
      how: null,
      missed: 0,
      modules: null,
      connectErrors: 0,
      snapshotErrors: 0,
      authExpired: false,
      gaps: 0,
    };
  }
  send({ type: 'armed', storm: msg.storm });
}

function cut(msg) {
  for (const c of clients) if (c.record) c.record.cutAt = msg.cutAt;
}

function collect(msg) {
  const cpu = process.cpuUsage();
  const records = clients.map((c) => ({ index: c.index, user: c.user, ...(c.record || {}) }));
  const synced = clients.filter((c) => c.synced).length;
  send({ type: 'results', storm: msg.storm, records, synced, cpuMicros: cpu.user + cpu.system });
  for (const c of clients) c.record = null;
  armed = null;
}

function status() {
  const synced = clients.filter((c) => c.synced).length;
  const connected = clients.filter((c) => c.socket.connected).length;
  const events = clients.reduce((a, c) => a + c.events, 0);
  const cpu = process.cpuUsage();
  const gaps = clients.reduce((a, c) => a + c.gaps, 0);
  send({ type: 'status', synced, connected, events, gaps, n: clients.length, cpuMicros: cpu.user + cpu.system });
}

function stop() {
  for (const c of clients) c.rm.stop();
  setTimeout(() => process.exit(0), 200);
}

process.on('message', (msg) => {
  switch (msg.type) {
    case 'start':
      start(msg).catch((err) => send({ type: 'fatal', message: String(err && err.stack ? err.stack : err) }));
      break;
    case 'arm':
      arm(msg);
      break;
    case 'cut':
      cut(msg);
      break;
    case 'status':
      status();
      break;
    case 'collect':
      collect(msg);
      break;
    case 'stop':
      stop();
      break;
  }
});
process.on('disconnect', () => process.exit(0));
