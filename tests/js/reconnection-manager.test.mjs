// Unit tests for static/js/reconnection-manager.js: fake socket, fake timers, fixed randomness.
// Run: node --test tests/js/reconnection-manager.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReconnectionManager } from '../../static/js/reconnection-manager.js';

class FakeSocket {
  constructor() {
    this.handlers = {};
    this.connected = false;
    this.connectCalls = 0;
    this.disconnectCalls = 0;
  }
  on(event, fn) {
    (this.handlers[event] ??= []).push(fn);
    return this;
  }
  emit(event, ...args) {
    for (const fn of this.handlers[event] ?? []) fn(...args);
  }
  connect() {
    this.connectCalls += 1;
    return this;
  }
  disconnect() {
    this.disconnectCalls += 1;
    const was = this.connected;
    this.connected = false;
    if (was) this.emit('disconnect', 'io client disconnect');
    return this;
  }
  // Test helpers: what the server side would cause.
  accept() {
    this.connected = true;
    this.emit('connect');
  }
  drop(reason = 'transport close') {
    this.connected = false;
    this.emit('disconnect', reason);
  }
  fail(err = new Error('xhr poll error')) {
    this.emit('connect_error', err);
  }
}

class FakeClock {
  constructor() {
    this.t = 0;
    this.nextId = 1;
    this.timers = new Map();
    this.delays = [];
  }
  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.t + ms });
    this.delays.push(ms);
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  now = () => this.t;
  get pending() {
    return this.timers.size;
  }
  /** Runs the single pending timer (advancing the clock to it). */
  fire() {
    assert.equal(this.timers.size, 1, 'exactly one pending timer');
    const [[id, { fn, at }]] = this.timers;
    this.timers.delete(id);
    this.t = at;
    fn();
  }
}

class FakeTarget {
  constructor() {
    this.listeners = {};
    this.visibilityState = 'hidden';
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= new Set()).add(fn);
  }
  removeEventListener(type, fn) {
    this.listeners[type]?.delete(fn);
  }
  dispatch(type) {
    for (const fn of this.listeners[type] ?? []) fn({ type });
  }
}

function setup(options = {}) {
  const socket = new FakeSocket();
  const clock = new FakeClock();
  const target = new FakeTarget();
  const rm = new ReconnectionManager(() => socket, {
    random: () => 1,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    target,
    window: undefined,
    document: undefined,
    onAuthExpired: () => {},
    ...options,
  });
  return { rm, socket, clock, target };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

test('backoff: exact delays with random=1, capped at maxReconnectDelay', () => {
  const { rm, socket, clock } = setup({ maxReconnectAttempts: Infinity });
  rm.start();
  assert.equal(rm.state, 'connecting');
  assert.equal(socket.connectCalls, 1);
  socket.accept();
  assert.equal(rm.state, 'connected');
  socket.drop();
  assert.equal(rm.state, 'reconnecting');
  for (let i = 0; i < 7; i++) {
    clock.fire();
    socket.fail();
  }
  assert.deepEqual(clock.delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(socket.connectCalls, 1 + 7);
  assert.equal(rm.attempts, 8);
});

test('backoff: full jitter with random=0.5 halves every delay; never below the floor', () => {
  const { rm, socket, clock } = setup({ random: () => 0.5, maxReconnectDelay: 10000 });
  rm.start();
  socket.accept();
  socket.drop();
  for (let i = 0; i < 5; i++) {
    clock.fire();
    socket.fail();
  }
  assert.deepEqual(clock.delays, [500, 1000, 2000, 4000, 5000, 5000]);

  const zero = setup({ random: () => 0 });
  zero.rm.start();
  zero.socket.fail();
  assert.deepEqual(zero.clock.delays, [100]);
});

test("attempts exhausted -> 'failed'; reconnectNow restarts with a fresh budget", () => {
  const { rm, socket, clock } = setup({ maxReconnectAttempts: 3 });
  rm.start();
  socket.accept();
  socket.drop();
  for (let i = 0; i < 3; i++) {
    assert.equal(rm.state, 'reconnecting');
    clock.fire();
    socket.fail();
  }
  assert.equal(rm.state, 'failed');
  assert.equal(clock.pending, 0);
  const calls = socket.connectCalls;
  rm.reconnectNow();
  assert.equal(rm.state, 'reconnecting');
  assert.equal(rm.attempts, 0);
  assert.equal(socket.connectCalls, calls + 1);
  socket.fail();
  assert.equal(clock.delays.at(-1), 1000, 'backoff restarts from the base delay');
  clock.fire();
  socket.accept();
  assert.equal(rm.state, 'connected');
  assert.equal(rm.attempts, 0);
});

test('auth failure (data.status 401) waits at least authFailureDelay', () => {
  const { rm, socket, clock } = setup({ authFailureDelay: 20000 });
  rm.start();
  socket.fail(Object.assign(new Error('forbidden'), { data: { status: 401 } }));
  assert.deepEqual(clock.delays, [20000]);
  assert.equal(rm.state, 'connecting');
});

test("auth failure (message 'unauthorized') waits at least authFailureDelay, then plain backoff again", () => {
  const { rm, socket, clock } = setup({ authFailureDelay: 30000, random: () => 0.5 });
  rm.start();
  socket.fail(new Error('unauthorized'));
  assert.deepEqual(clock.delays, [30000]);
  clock.fire();
  socket.fail(new Error('xhr poll error'));
  assert.equal(clock.delays.at(-1), 1000, 'an ordinary error goes back to plain backoff');
});

test('session expired: onAuthExpired is called and the manager stops', () => {
  let expired = 0;
  const { rm, socket, clock } = setup({ onAuthExpired: () => expired++ });
  rm.start();
  socket.accept();
  socket.drop();
  clock.fire();
  socket.fail(Object.assign(new Error('session'), { data: { code: 'session_expired' } }));
  assert.equal(expired, 1);
  assert.equal(rm.state, 'stopped');
  assert.equal(clock.pending, 0);

  // 401 twice in a row means the same.
  let expired2 = 0;
  const b = setup({ onAuthExpired: () => expired2++ });
  b.rm.start();
  const e401 = () => Object.assign(new Error('x'), { data: { status: 401 } });
  b.socket.fail(e401());
  assert.equal(expired2, 0);
  b.clock.fire();
  b.socket.fail(e401());
  assert.equal(expired2, 1);
  assert.equal(b.rm.state, 'stopped');
  assert.equal(b.clock.pending, 0);
});

test('the default onAuthExpired goes to /login', () => {
  const assigned = [];
  const win = { location: { assign: (u) => assigned.push(u) } };
  const socket = new FakeSocket();
  const clock = new FakeClock();
  const rm = new ReconnectionManager(() => socket, {
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now,
    window: win, document: undefined, target: new FakeTarget(),
  });
  rm.start();
  socket.fail(Object.assign(new Error('x'), { data: { code: 'session_expired' } }));
  assert.deepEqual(assigned, ['/login']);
});

test('online event and tab becoming visible retry immediately', () => {
  const { rm, socket, clock, target } = setup();
  rm.start();
  socket.accept();
  socket.drop();
  assert.equal(clock.pending, 1);
  const calls = socket.connectCalls;
  target.dispatch('online');
  assert.equal(clock.pending, 0, 'the pending timer is cancelled');
  assert.equal(socket.connectCalls, calls + 1);

  socket.fail();
  assert.equal(clock.pending, 1);
  target.visibilityState = 'hidden';
  target.dispatch('visibilitychange');
  assert.equal(clock.pending, 1, 'hidden: nothing happens');
  target.visibilityState = 'visible';
  target.dispatch('visibilitychange');
  assert.equal(clock.pending, 0);
  assert.equal(socket.connectCalls, calls + 2);

  socket.accept();
  target.dispatch('online');
  assert.equal(socket.connectCalls, calls + 2, 'connected: nothing to retry');
});

test('online after failed restarts; stopped ignores environment events', () => {
  const { rm, socket, clock, target } = setup({ maxReconnectAttempts: 1 });
  rm.start();
  socket.fail();
  clock.fire();
  socket.fail();
  assert.equal(rm.state, 'failed');
  target.dispatch('online');
  assert.equal(rm.state, 'connecting');
  rm.stop();
  const calls = socket.connectCalls;
  target.dispatch('online');
  assert.equal(socket.connectCalls, calls);
});

test('callback order: onDisconnect, onReconnect, onSyncComplete(server, client)', async () => {
  const events = [];
  const { rm, socket, clock } = setup({
    getClientState: () => ({ client: true }),
    sync: async (s) => {
      events.push(['sync', s === socket]);
      return { server: true };
    },
  });
  rm.onDisconnect = () => events.push(['disconnect']);
  rm.onReconnect = (s) => events.push(['reconnect', s === socket]);
  rm.onSyncComplete = (server, client) => events.push(['syncComplete', server, client]);
  rm.start();
  socket.accept();
  await flush();
  assert.deepEqual(events, [], 'the first connect is not a reconnect');
  socket.drop();
  clock.fire();
  socket.accept();
  await flush();
  assert.deepEqual(events, [
    ['disconnect'],
    ['reconnect', true],
    ['sync', true],
    ['syncComplete', { server: true }, { client: true }],
  ]);
});

test('syncOnReconnect=false skips the sync', async () => {
  let synced = 0;
  const { rm, socket, clock } = setup({ syncOnReconnect: false, sync: async () => synced++ });
  let reconnects = 0;
  rm.onReconnect = () => reconnects++;
  rm.start();
  socket.accept();
  socket.drop();
  clock.fire();
  socket.accept();
  await flush();
  assert.equal(reconnects, 1);
  assert.equal(synced, 0);
});

test('stats: reconnect count, average duration from drop to connect, connection errors', () => {
  const { rm, socket, clock } = setup();
  rm.start();
  socket.accept();
  // Reconnect 1: drop at t=0, first attempt at 1000 connects -> 1000 ms.
  socket.drop();
  clock.fire();
  socket.accept();
  // Reconnect 2: drop, attempt at +1000 fails, attempt at +2000 connects -> 3000 ms.
  socket.drop();
  clock.fire();
  socket.fail();
  clock.fire();
  socket.accept();
  assert.deepEqual(rm.stats, { reconnects: 2, averageReconnectMs: 2000, connectionErrors: 1 });
});

test('intentional stop does not reconnect', () => {
  const { rm, socket, clock, target } = setup();
  rm.start();
  socket.accept();
  let disconnects = 0;
  rm.onDisconnect = () => disconnects++;
  rm.stop();
  assert.equal(rm.state, 'stopped');
  assert.equal(socket.disconnectCalls, 1);
  assert.equal(clock.pending, 0);
  assert.equal(disconnects, 0);
  assert.equal(target.listeners.online.size, 0, 'listeners removed');

  // The page calling socket.disconnect() itself counts as intentional too.
  const b = setup();
  b.rm.start();
  b.socket.accept();
  b.socket.disconnect();
  assert.equal(b.rm.state, 'stopped');
  assert.equal(b.clock.pending, 0);
});

test('browser integration: data-connection-state on body, window.mc_socketReconnect', () => {
  const attrs = {};
  const doc = { body: { setAttribute: (k, v) => (attrs[k] = v) }, visibilityState: 'visible' };
  const win = {};
  const socket = new FakeSocket();
  const clock = new FakeClock();
  const target = new FakeTarget();
  const rm = new ReconnectionManager(() => socket, {
    random: () => 1, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now,
    window: win, document: doc, target,
  });
  rm.start();
  assert.equal(attrs['data-connection-state'], 'connecting');
  socket.accept();
  assert.equal(attrs['data-connection-state'], 'connected');
  socket.drop();
  assert.equal(attrs['data-connection-state'], 'reconnecting');
  const calls = socket.connectCalls;
  win.mc_socketReconnect();
  assert.equal(socket.connectCalls, calls + 1);
  assert.equal(clock.pending, 0);
  target.dispatch('visibilitychange'); // document says visible, but no timer pending: in flight, left alone
  assert.equal(socket.connectCalls, calls + 1);
  rm.stop();
  assert.equal(attrs['data-connection-state'], 'stopped');
});

test('runs in Node without window/document globals', () => {
  assert.equal(typeof globalThis.window, 'undefined');
  const socket = new FakeSocket();
  const rm = new ReconnectionManager(() => socket, { setTimeout: () => 1, clearTimeout: () => {} });
  rm.start();
  socket.accept();
  rm.stop();
  assert.equal(rm.state, 'stopped');
});

test('defaultsFromServer parses numbers and numeric strings, drops junk', () => {
  assert.deepEqual(
    ReconnectionManager.defaultsFromServer({ REALTIME_MAX_RECONNECT_ATTEMPTS: 5, REALTIME_RECONNECT_DELAY: 250 }),
    { maxReconnectAttempts: 5, reconnectDelay: 250 },
  );
  assert.deepEqual(
    ReconnectionManager.defaultsFromServer({ REALTIME_MAX_RECONNECT_ATTEMPTS: ' 12 ', REALTIME_RECONNECT_DELAY: '1500' }),
    { maxReconnectAttempts: 12, reconnectDelay: 1500 },
  );
  assert.deepEqual(
    ReconnectionManager.defaultsFromServer({ REALTIME_MAX_RECONNECT_ATTEMPTS: 'Infinity' }),
    { maxReconnectAttempts: Infinity },
  );
  assert.deepEqual(
    ReconnectionManager.defaultsFromServer({ REALTIME_MAX_RECONNECT_ATTEMPTS: 'abc', REALTIME_RECONNECT_DELAY: -5 }),
    {},
  );
  assert.deepEqual(ReconnectionManager.defaultsFromServer(undefined), {});
  assert.deepEqual(ReconnectionManager.defaultsFromServer({ REALTIME_RECONNECT_DELAY: 'Infinity' }), {});
});

test('forceReconnect (window.mc_socketReconnect) drops a working connection and reconnects at once', () => {
  const win = {};
  const socket = new FakeSocket();
  const clock = new FakeClock();
  const rm = new ReconnectionManager(() => socket, {
    random: () => 1, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now,
    window: win, document: null, target: new FakeTarget(),
  });
  let reconnected = 0;
  rm.onReconnect = () => (reconnected += 1);
  rm.start();
  socket.accept();
  const calls = socket.connectCalls;
  win.mc_socketReconnect();
  assert.equal(socket.disconnectCalls, 1);
  assert.equal(socket.connectCalls, calls + 1, 'connects again without waiting');
  assert.equal(rm.state, 'reconnecting');
  assert.equal(clock.pending, 0);
  socket.accept();
  assert.equal(rm.state, 'connected');
  assert.equal(reconnected, 1);
  assert.equal(rm.stats.reconnects, 1);
  // a page's own socket.disconnect() still stops
  socket.disconnect();
  assert.equal(rm.state, 'stopped');
});

test('online/visible during the auth-failure wait keep the authFailureDelay floor', () => {
  const { rm, socket, clock, target } = setup({ authFailureDelay: 30000 });
  rm.start();
  socket.accept();
  socket.drop();
  clock.fire();
  const calls = socket.connectCalls;
  socket.fail(new Error('unauthorized'));
  assert.equal(clock.delays.at(-1), 30000);
  clock.t += 1000;
  target.dispatch('online');
  target.visibilityState = 'visible';
  target.dispatch('visibilitychange');
  assert.equal(socket.connectCalls, calls, 'no attempt before the floor');
  assert.equal(clock.pending, 1, 'the floor wait is kept');
  clock.fire();
  assert.equal(socket.connectCalls, calls + 1);
  // an ordinary failure afterwards: online retries at once again
  socket.fail();
  target.dispatch('online');
  assert.equal(socket.connectCalls, calls + 2);
});

test("online in 'failed' during the auth-failure wait restarts, but not before the floor", () => {
  const { rm, socket, clock, target } = setup({ authFailureDelay: 30000, maxReconnectAttempts: 1 });
  rm.start();
  socket.fail(new Error('unauthorized'));
  const waitStart = clock.t;
  clock.fire();
  socket.fail(new Error('unauthorized')); // budget exhausted
  assert.equal(rm.state, 'failed');
  const calls = socket.connectCalls;
  clock.t += 5000;
  target.dispatch('online');
  assert.equal(socket.connectCalls, calls, 'no immediate attempt');
  assert.equal(rm.state, 'connecting');
  assert.equal(clock.delays.at(-1), 25000, 'the rest of the floor');
  clock.fire();
  assert.equal(socket.connectCalls, calls + 1);
  assert.ok(clock.t - waitStart >= 30000);
});

test('stats keep a running sum: nothing grows with the number of reconnects', () => {
  const { rm, socket, clock } = setup();
  rm.start();
  socket.accept();
  const n = 2000;
  for (let i = 0; i < n; i++) {
    socket.drop();
    clock.fire();
    socket.accept();
  }
  assert.deepEqual(rm.stats, { reconnects: n, averageReconnectMs: 1000, connectionErrors: 0 });
  for (const [key, value] of Object.entries(rm)) {
    if (Array.isArray(value)) assert.ok(value.length < 100, `${key} grows with reconnects (${value.length})`);
  }
});

test("connect_error 'forbidden page' is final: onForbidden is called and the manager stops", () => {
  let forbidden = 0;
  let expired = 0;
  const { rm, socket, clock } = setup({ onForbidden: () => forbidden++, onAuthExpired: () => expired++ });
  rm.start();
  socket.accept();
  socket.drop();
  clock.fire();
  socket.fail(new Error('forbidden page'));
  assert.equal(forbidden, 1);
  assert.equal(expired, 0, 'not a session expiry');
  assert.equal(rm.state, 'stopped');
  assert.equal(clock.pending, 0, 'no retry');
});

test("the default onForbidden replaces the location with '/'", () => {
  const replaced = [];
  const assigned = [];
  const win = { location: { replace: (u) => replaced.push(u), assign: (u) => assigned.push(u) } };
  const socket = new FakeSocket();
  const clock = new FakeClock();
  const rm = new ReconnectionManager(() => socket, {
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now,
    window: win, document: undefined, target: new FakeTarget(),
  });
  rm.start();
  socket.fail(new Error('forbidden page'));
  assert.deepEqual(replaced, ['/']);
  assert.deepEqual(assigned, []);
  assert.equal(rm.state, 'stopped');
});
