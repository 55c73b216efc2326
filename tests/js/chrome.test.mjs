// Unit tests of static/js/chrome.js's pure parts: the reconnect policy when the realtime config
// is missing, the socket.io script load retry, the rights-change check.
import test from 'node:test';
import assert from 'node:assert/strict';

import { managerOptionsFromConfig, retryLoad, rightsChanged, SCRIPT_RETRY_MS } from '../../static/js/chrome.js';
import { ReconnectionManager } from '../../static/js/reconnection-manager.js';

test('no realtime config (request failed): the hub defaults, unlimited attempts, 1 s, 30 s', () => {
  for (const config of [null, undefined, {}]) {
    assert.deepEqual(managerOptionsFromConfig(config), { maxReconnectAttempts: Infinity, reconnectDelay: 1000, maxReconnectDelay: 30000 });
  }
  assert.deepEqual(managerOptionsFromConfig({ maxReconnectAttempts: 5, reconnectDelay: 200, maxReconnectDelay: 4000 }), {
    maxReconnectAttempts: 5,
    reconnectDelay: 200,
    maxReconnectDelay: 4000,
  });
  assert.equal(managerOptionsFromConfig({ maxReconnectAttempts: null }).maxReconnectAttempts, Infinity);
  const m = new ReconnectionManager(() => ({}), { ...managerOptionsFromConfig(null), window: undefined, document: undefined });
  assert.equal(m._opts.maxReconnectAttempts, Infinity);
});

test('rt_session with other admin rights than the booted user', () => {
  assert.equal(rightsChanged({ id: 1, isAdmin: false }, { userId: 1, isAdmin: true }), true);
  assert.equal(rightsChanged({ id: 1, isAdmin: true }, { userId: 1, isAdmin: false }), true);
  assert.equal(rightsChanged({ id: 1, isAdmin: true }, { userId: 1, isAdmin: true }), false);
  assert.equal(rightsChanged({ id: 1 }, { userId: 1, isAdmin: false }), false);
  assert.equal(rightsChanged({ id: 1, isAdmin: false }, { userId: 1 }), false, 'no isAdmin in the session: nothing to compare');
  assert.equal(rightsChanged(null, { isAdmin: true }), false);
});

function timers() {
  const list = [];
  return {
    list,
    setTimeout: (fn, ms) => {
      const t = { fn, ms, cleared: false };
      list.push(t);
      return t;
    },
    clearTimeout: (t) => {
      if (t) t.cleared = true;
    },
    fire() {
      const t = list.find((x) => !x.cleared && !x.fired);
      t.fired = true;
      t.fn();
      return t.ms;
    },
  };
}

const tickAll = () => new Promise((r) => setImmediate(r));

test('socket.io load: retried with backoff until it loads, never rejects; states failed/connecting', async () => {
  const tm = timers();
  let fails = 3;
  let io = false;
  const states = [];
  const errors = [];
  const loader = retryLoad({
    load: () => (fails-- > 0 ? Promise.reject(new Error('404')) : ((io = true), Promise.resolve())),
    ready: () => io,
    onState: (s) => states.push(s),
    onError: (e, n) => errors.push(n),
    setTimeout: tm.setTimeout,
    clearTimeout: tm.clearTimeout,
  });
  let done = false;
  loader.promise.then(() => (done = true));
  await tickAll();
  assert.deepEqual(states, ['connecting', 'failed']);
  assert.equal(tm.fire(), SCRIPT_RETRY_MS[0]);
  await tickAll();
  assert.equal(tm.fire(), SCRIPT_RETRY_MS[1]);
  await tickAll();
  assert.equal(done, false);
  assert.equal(tm.fire(), SCRIPT_RETRY_MS[2]);
  await tickAll();
  assert.equal(done, true);
  assert.equal(loader.attempts(), 4);
  assert.deepEqual(errors, [1, 2, 3]);
  assert.deepEqual(states, ['connecting', 'failed', 'connecting', 'failed', 'connecting', 'failed', 'connecting']);
});

test('socket.io load: a script that loads without defining io is a failure; retryNow skips the wait', async () => {
  const tm = timers();
  let calls = 0;
  let io = false;
  const loader = retryLoad({
    load: () => {
      calls += 1;
      if (calls === 3) io = true;
      return Promise.resolve();
    },
    ready: () => io,
    setTimeout: tm.setTimeout,
    clearTimeout: tm.clearTimeout,
  });
  await tickAll();
  assert.equal(calls, 1);
  loader.retryNow();
  loader.retryNow(); // one load at a time
  await tickAll();
  assert.equal(calls, 2);
  assert.equal(tm.list.filter((t) => !t.cleared && !t.fired).length, 1, 'one pending retry');
  // the delays go on growing from the attempts made, capped at the last one
  const last = tm.list.at(-1).ms;
  assert.equal(last, SCRIPT_RETRY_MS[1]);
  loader.retryNow();
  await tickAll();
  let done = false;
  await loader.promise.then(() => (done = true));
  assert.equal(done, true);
  assert.equal(calls, 3);
  assert.ok(tm.list.every((t) => t.cleared || t.fired));
});

test('socket.io load: a load() that throws is retried too', async () => {
  const tm = timers();
  let n = 0;
  const loader = retryLoad({
    load: () => {
      if (++n === 1) throw new Error('sync failure');
      return Promise.resolve();
    },
    setTimeout: tm.setTimeout,
    clearTimeout: tm.clearTimeout,
  });
  await tickAll();
  tm.fire();
  await loader.promise;
  assert.equal(n, 2);
});
