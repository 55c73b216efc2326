// Unit tests of static/js/stream.js (the realtime stream client of docs/REALTIME.md) with a
// fake socket: handshake auth, queueing until rt_session, resume with `missed`, snapshot
// fallback, offset dedupe, rev gap resync. Run: node --test tests/js/
import test from 'node:test';
import assert from 'node:assert/strict';

import { RealtimeStream, MAX_QUEUE } from '../../static/js/stream.js';

class FakeSocket {
  constructor(opts) {
    this.opts = opts;
    this.handlers = new Map();
    this.connected = false;
    this.connects = 0;
    this.lastAuth = null;
  }
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(fn);
    return this;
  }
  emit(event, ...args) {
    for (const fn of this.handlers.get(event) || []) fn(...args);
  }
  connect() {
    this.connects += 1;
    this.opts.auth((a) => (this.lastAuth = a));
  }
  disconnect() {
    this.connected = false;
  }
  // test helpers: what the server does
  accept() {
    this.connected = true;
    this.emit('connect');
  }
  drop() {
    this.connected = false;
    this.emit('disconnect', 'transport close');
  }
  refuse(err = new Error('xhr poll error')) {
    this.emit('connect_error', err);
  }
}

function fakeBody() {
  const attrs = {};
  return { attrs, body: { setAttribute: (k, v) => (attrs[k] = v) } };
}

function setup(over = {}) {
  let socket;
  let now = 1000;
  const timers = [];
  const applied = [];
  const snapshots = [];
  let snapshotValue = over.snapshot ?? { modules: [] };
  let snapshotResolvers = null;
  const { attrs, body } = fakeBody();
  const handler = (name) => (payload, offset) => applied.push([name, payload, offset]);
  const stream = new RealtimeStream({
    page: over.page ?? 'modules',
    io: (opts) => (socket = new FakeSocket(opts)),
    handlers: {
      rt_module_online: handler('rt_module_online'),
      rt_telemetry_updated: handler('rt_telemetry_updated'),
      rt_module_removed: handler('rt_module_removed'),
    },
    fetchSnapshot: () =>
      over.manualSnapshot
        ? new Promise((resolve, reject) => (snapshotResolvers = { resolve, reject }))
        : Promise.resolve(snapshotValue),
    applySnapshot: (s) => snapshots.push(s),
    trackRevs: true,
    ...(over.maxQueue ? { maxQueue: over.maxQueue } : {}),
    snapshotRevs: (s) => s.modules.map((m) => [m.moduleId, m.rev]),
    document: { body },
    now: () => now,
    setTimeout: (fn, ms) => timers.push({ fn, ms }) && timers.length,
    clearTimeout: () => {},
    managerOptions: {
      window: undefined,
      document: { body },
      target: null,
      random: () => 0.5,
      setTimeout: (fn, ms) => timers.push({ fn, ms }) && timers.length,
      clearTimeout: () => {},
      now: () => now,
    },
  });
  stream.start();
  return {
    stream,
    get socket() {
      return socket;
    },
    applied,
    snapshots,
    attrs,
    timers,
    setNow: (n) => (now = n),
    setSnapshot: (s) => (snapshotValue = s),
    get snapshotResolvers() {
      return snapshotResolvers;
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('socket options: no built-in reconnection, websocket only, auth as a function', () => {
  const s = setup();
  assert.equal(s.socket.opts.reconnection, false);
  assert.equal(s.socket.opts.autoConnect, false);
  assert.deepEqual(s.socket.opts.transports, ['websocket']);
  assert.equal(typeof s.socket.opts.auth, 'function');
  assert.deepEqual(s.socket.lastAuth, { page: 'modules' });
});

test('queues events until rt_session, then snapshot, then queued events past the head', async () => {
  const s = setup({ snapshot: { modules: [{ moduleId: 'A', rev: 5 }] } });
  s.socket.accept();
  assert.equal(s.attrs['data-synced'], 'false');
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 5, telemetry: { t: 1 } }, 9); // in the snapshot
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 6, telemetry: { t: 2 } }, 11);
  assert.equal(s.applied.length, 0);
  s.socket.emit('rt_session', { userId: 1, isAdmin: false, page: 'modules', epoch: 'e1', offset: 10, resumed: false, missed: [] });
  await tick();
  assert.equal(s.snapshots.length, 1);
  assert.deepEqual(
    s.applied.map((a) => a[2]),
    [11],
  );
  assert.equal(s.stream.offset, 11);
  assert.equal(s.attrs['data-synced'], 'true');
  assert.equal(s.attrs['data-stream-offset'], '11');
  assert.equal(s.attrs['data-stream-epoch'], 'e1');
  assert.equal(s.stream.stats().snapshots, 1);
});

test('live events are deduplicated by offset', async () => {
  const s = setup();
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 3, resumed: false, missed: [] });
  await tick();
  s.socket.emit('rt_module_online', { moduleId: 'A' }, 4);
  s.socket.emit('rt_module_online', { moduleId: 'A' }, 4);
  s.socket.emit('rt_module_online', { moduleId: 'A' }, 2);
  s.socket.emit('rt_module_online', { moduleId: 'B' }, 7);
  assert.deepEqual(
    s.applied.map((a) => a[2]),
    [4, 7],
  );
});

test('reconnect presents resume, reconnectMs and connectErrors; applies missed, no snapshot', async () => {
  const s = setup({ snapshot: { modules: [{ moduleId: 'A', rev: 1 }] } });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 10, resumed: false, missed: [] });
  await tick();
  s.setNow(5000);
  s.socket.drop();
  assert.equal(s.attrs['data-synced'], 'false');
  s.setNow(6000);
  s.socket.refuse();
  s.setNow(7500);
  s.socket.connect(); // what the manager's timer does
  assert.deepEqual(s.socket.lastAuth, { page: 'modules', resume: { epoch: 'e1', offset: 10 }, reconnectMs: 2500, connectErrors: 1 });
  s.socket.accept();
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 3 }, 14); // live, before rt_session
  s.socket.emit('rt_session', {
    epoch: 'e1',
    offset: 13,
    resumed: true,
    missed: [
      ['rt_telemetry_updated', { moduleId: 'A', rev: 2 }, 12],
      ['rt_module_online', { moduleId: 'A' }, 13],
    ],
  });
  assert.equal(s.snapshots.length, 1, 'no new snapshot');
  assert.deepEqual(
    s.applied.map((a) => a[2]),
    [12, 13, 14],
  );
  const st = s.stream.stats();
  assert.equal(st.resumes, 1);
  assert.equal(st.replayed, 2);
  assert.equal(st.reconnects, 1);
  assert.equal(st.lastReconnectMs, 2500);
  assert.equal(s.attrs['data-synced'], 'true');
  // the next handshake carries no reconnect figures
  s.socket.connect();
  assert.deepEqual(s.socket.lastAuth, { page: 'modules', resume: { epoch: 'e1', offset: 14 } });
});

test('a new epoch means a snapshot and offsets start over', async () => {
  const s = setup();
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 500, resumed: false, missed: [] });
  await tick();
  s.socket.drop();
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e2', offset: 3, resumed: false, missed: [] });
  await tick();
  assert.equal(s.snapshots.length, 2);
  s.socket.emit('rt_module_online', { moduleId: 'A' }, 4);
  assert.deepEqual(
    s.applied.map((a) => a[2]),
    [4],
  );
  assert.equal(s.attrs['data-stream-epoch'], 'e2');
});

test('resumed:true with another epoch is not trusted', async () => {
  const s = setup();
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 5, resumed: false, missed: [] });
  await tick();
  s.socket.drop();
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'other', offset: 5, resumed: true, missed: [] });
  await tick();
  assert.equal(s.snapshots.length, 2);
  assert.equal(s.stream.stats().resumes, 0);
});

test('a rev gap resynchronises; stale revs are dropped', async () => {
  const s = setup({ snapshot: { modules: [{ moduleId: 'A', rev: 5 }] } });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  await tick();
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 5 }, 2); // already in the snapshot
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 6 }, 3);
  assert.equal(s.applied.length, 1);
  s.setSnapshot({ modules: [{ moduleId: 'A', rev: 9 }] });
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 8 }, 4); // 7 lost
  assert.equal(s.attrs['data-synced'], 'false');
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 9 }, 5); // queued while fetching; in the snapshot
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 10 }, 6);
  await tick();
  assert.equal(s.snapshots.length, 2);
  assert.deepEqual(
    s.applied.map((a) => a[1].rev),
    [6, 10],
  );
  assert.equal(s.stream.stats().gaps, 1);
  assert.equal(s.attrs['data-synced'], 'true');
});

test('merged updates (fromRev) for a client that fell behind are no gap; a real gap still is', async () => {
  const s = setup({ snapshot: { modules: [{ moduleId: 'A', rev: 5 }] } });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  await tick();
  // revs 6..9 merged by the hub into one event
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 9, fromRev: 6, telemetry: { t: 1 } }, 2);
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 10 }, 3);
  assert.deepEqual(
    s.applied.map((a) => a[1].rev),
    [9, 10],
  );
  assert.equal(s.stream.stats().gaps, 0);
  assert.equal(s.attrs['data-synced'], 'true');
  // a merge that starts past the next rev misses one: resync
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 14, fromRev: 12 }, 4);
  assert.equal(s.stream.stats().gaps, 1);
  assert.equal(s.attrs['data-synced'], 'false');
});

test('a disconnect during the snapshot discards it; the next session starts over', async () => {
  const s = setup({ manualSnapshot: true });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  const first = s.snapshotResolvers;
  s.socket.drop();
  first.resolve({ modules: [] });
  await tick();
  assert.equal(s.snapshots.length, 0);
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 2, resumed: false, missed: [] });
  s.snapshotResolvers.resolve({ modules: [] });
  await tick();
  assert.equal(s.snapshots.length, 1);
  assert.equal(s.attrs['data-synced'], 'true');
});

test('a failed snapshot is retried', async () => {
  const s = setup({ manualSnapshot: true });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  s.snapshotResolvers.reject(Object.assign(new Error('boom'), { status: 503 }));
  await tick();
  const retry = s.timers.find((t) => t.ms === 1000);
  assert.ok(retry, 'a retry is scheduled');
  retry.fn();
  s.snapshotResolvers.resolve({ modules: [] });
  await tick();
  assert.equal(s.snapshots.length, 1);
});

test('an old hub without epoch/offset still works (snapshot each session, no dedupe)', async () => {
  const s = setup();
  s.socket.accept();
  s.socket.emit('rt_session', { userId: 1, isAdmin: false, page: 'modules' });
  await tick();
  s.socket.emit('rt_module_online', { moduleId: 'A' });
  s.socket.emit('rt_module_online', { moduleId: 'A' });
  assert.equal(s.applied.length, 2);
  s.socket.drop();
  s.socket.connect();
  assert.equal(s.socket.lastAuth.resume, undefined);
});

test('no resume across a change of user or rights: snapshot instead (and the page is told of a new user)', async () => {
  const changed = [];
  const s = setup({ snapshot: { modules: [] } });
  s.stream._o.onUserChanged = (session) => changed.push(session.userId);
  s.socket.accept();
  s.socket.emit('rt_session', { userId: 1, isAdmin: true, page: 'modules', epoch: 'e1', offset: 10, resumed: false, missed: [] });
  await tick();
  assert.equal(s.stream.stats().snapshots, 1);
  // Demoted while disconnected: the hub says resumed (same epoch, offset covered), the client refuses.
  s.socket.drop();
  s.socket.connect();
  assert.deepEqual(s.socket.lastAuth.resume, { epoch: 'e1', offset: 10, userId: 1, isAdmin: true }, 'who it was, for the hub to check');
  s.socket.accept();
  s.socket.emit('rt_session', { userId: 1, isAdmin: false, page: 'modules', epoch: 'e1', offset: 12, resumed: true, missed: [] });
  await tick();
  assert.equal(s.stream.stats().resumes, 0);
  assert.equal(s.stream.stats().snapshots, 2);
  assert.deepEqual(changed, []);
  // Another user in the same browser (login in another tab).
  s.socket.drop();
  s.socket.connect();
  s.socket.accept();
  s.socket.emit('rt_session', { userId: 2, isAdmin: false, page: 'modules', epoch: 'e1', offset: 13, resumed: true, missed: [] });
  await tick();
  assert.deepEqual(changed, [2]);
  assert.equal(s.stream.stats().resumes, 0);
  assert.equal(s.stream.stats().snapshots, 3);
});

test('no rt_session within the timeout: the stream forces a reconnect instead of waiting forever', () => {
  const s = setup();
  s.socket.accept();
  const connectsBefore = s.socket.connects;
  const timer = s.timers.find((t) => t.ms === 15000);
  assert.ok(timer, 'a session timer is armed on connect');
  timer.fn();
  // forceReconnect drops the socket and connects again at once.
  assert.ok(s.socket.connects > connectsBefore, 'reconnected');
  // Once rt_session arrived, the timer does nothing.
  s.socket.accept();
  s.socket.emit('rt_session', { userId: 1, isAdmin: false, page: 'modules', epoch: 'e1', offset: 1, resumed: false, missed: [] });
  const connects = s.socket.connects;
  s.timers.filter((t) => t.ms === 15000).at(-1).fn();
  assert.equal(s.socket.connects, connects);
});

test('the queue is capped while snapshots keep failing; a snapshot fetched after the drop covers it', async () => {
  const s = setup({ manualSnapshot: true });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  s.snapshotResolvers.reject(Object.assign(new Error('boom'), { status: 503 }));
  await tick();
  const fetchesBefore = s.snapshotResolvers;
  for (let i = 0; i <= MAX_QUEUE; i++) s.socket.emit('rt_module_online', { moduleId: 'A' }, 2 + i);
  assert.ok(s.stream._queue.length <= MAX_QUEUE, `queue capped, got ${s.stream._queue.length}`);
  assert.equal(s.stream.stats().queueOverflows, 1);
  const lastDropped = 2 + MAX_QUEUE;
  // the retry (scheduled before the drop) fetches after it
  s.timers.find((t) => t.ms === 1000).fn();
  assert.notEqual(s.snapshotResolvers, fetchesBefore, 'a fresh fetch started');
  s.socket.emit('rt_module_online', { moduleId: 'B' }, lastDropped + 1); // after the drop: kept
  s.snapshotResolvers.resolve({ modules: [] });
  await tick();
  assert.equal(s.snapshots.length, 1);
  assert.equal(s.attrs['data-synced'], 'true');
  assert.deepEqual(
    s.applied.map((a) => a[2]),
    [lastDropped + 1],
  );
  assert.equal(s.stream.offset, lastDropped + 1);
  // a replay of a dropped event is a duplicate
  s.socket.emit('rt_module_online', { moduleId: 'A' }, lastDropped);
  assert.equal(s.applied.length, 1);
});

test('a queue dropped while a snapshot is in flight: that snapshot is followed by another', async () => {
  const s = setup({ manualSnapshot: true, maxQueue: 3 });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  const first = s.snapshotResolvers;
  for (let i = 2; i <= 5; i++) s.socket.emit('rt_module_online', { moduleId: 'A' }, i);
  assert.equal(s.stream._queue.length, 0);
  first.resolve({ modules: [] });
  await tick();
  assert.notEqual(s.snapshotResolvers, first, 'fetched again after the drop');
  assert.equal(s.attrs['data-synced'], 'false');
  s.snapshotResolvers.resolve({ modules: [] });
  await tick();
  assert.equal(s.snapshots.length, 2);
  assert.equal(s.attrs['data-synced'], 'true');
  assert.equal(s.stream.offset, 5);
});

test('a queue dropped before rt_session: no resume, a snapshot', async () => {
  const s = setup({ maxQueue: 3 });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  await tick();
  s.socket.drop();
  s.socket.accept();
  for (let i = 2; i <= 5; i++) s.socket.emit('rt_module_online', { moduleId: 'A' }, i);
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: true, missed: [] });
  await tick();
  assert.equal(s.snapshots.length, 2, 'snapshot instead of the resume');
  assert.equal(s.stream.offset, 5);
  assert.equal(s.attrs['data-synced'], 'true');
});

test('a rev gap inside `missed` fetches a snapshot instead of going live', async () => {
  const s = setup({ manualSnapshot: true });
  s.socket.accept();
  s.socket.emit('rt_session', { epoch: 'e1', offset: 1, resumed: false, missed: [] });
  s.snapshotResolvers.resolve({ modules: [{ moduleId: 'A', rev: 1 }] });
  await tick();
  assert.equal(s.snapshots.length, 1);
  s.socket.drop();
  s.socket.accept();
  const before = s.snapshotResolvers;
  s.socket.emit('rt_session', {
    epoch: 'e1',
    offset: 4,
    resumed: true,
    missed: [
      ['rt_telemetry_updated', { moduleId: 'A', rev: 2 }, 2],
      ['rt_telemetry_updated', { moduleId: 'A', rev: 4 }, 3], // rev 3 lost
      ['rt_module_online', { moduleId: 'A' }, 4],
    ],
  });
  assert.equal(s.stream.stats().gaps, 1);
  assert.notEqual(s.snapshotResolvers, before, 'a snapshot is fetched');
  assert.equal(s.attrs['data-synced'], 'false');
  s.socket.emit('rt_telemetry_updated', { moduleId: 'A', rev: 5 }, 5); // queued
  s.snapshotResolvers.resolve({ modules: [{ moduleId: 'A', rev: 4 }] });
  await tick();
  assert.equal(s.snapshots.length, 2);
  assert.equal(s.attrs['data-synced'], 'true');
  assert.deepEqual(
    s.applied.filter((a) => a[0] === 'rt_telemetry_updated').map((a) => a[1].rev),
    [2, 5],
  );
  assert.equal(s.stream.offset, 5);
});
