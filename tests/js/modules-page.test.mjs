// Unit tests of the modules page's pure parts (static/js/modules-page.js; its DOM code runs only
// in a browser): the unknown-module resync, the online/stale/telemetry status transitions.
import test from 'node:test';
import assert from 'node:assert/strict';

import { createUnknownResync, applyOnline, applyOffline, applyTelemetryStatus } from '../../static/js/modules-page.js';

/** Fake clock and timers. */
function clock() {
  let t = 0;
  let seq = 0;
  const timers = new Map();
  return {
    now: () => t,
    setTimeout: (fn, ms) => {
      const id = ++seq;
      timers.set(id, { fn, at: t + ms });
      return id;
    },
    clearTimeout: (id) => timers.delete(id),
    pending: () => timers.size,
    advance(ms) {
      const end = t + ms;
      for (;;) {
        let next = null;
        for (const [id, tm] of timers) if (tm.at <= end && (!next || tm.at < next[1].at)) next = [id, tm];
        if (!next) break;
        timers.delete(next[0]);
        t = next[1].at;
        next[1].fn();
      }
      t = end;
    },
  };
}

function fakeStream() {
  return {
    synced: true,
    resyncs: 0,
    resync() {
      this.resyncs += 1;
    },
  };
}

test('unknown module: resync at once, then at most every 10 s, later triggers deferred, not dropped', () => {
  const c = clock();
  const s = fakeStream();
  const r = createUnknownResync({ getStream: () => s, now: c.now, setTimeout: c.setTimeout, clearTimeout: c.clearTimeout });
  r.trigger();
  assert.equal(s.resyncs, 1);
  assert.equal(r.pending, false);
  c.advance(3000);
  r.trigger();
  r.trigger();
  assert.equal(s.resyncs, 1, 'throttled');
  assert.equal(c.pending(), 1, 'one pending timer at most');
  c.advance(6999);
  assert.equal(s.resyncs, 1);
  c.advance(1);
  assert.equal(s.resyncs, 2, 'the deferred resync runs when the 10 s are up');
  assert.equal(r.pending, false);
});

test('unknown module during replay (stream not live): no time recorded, resync once live', () => {
  const c = clock();
  const s = fakeStream();
  s.synced = false; // replaying `missed`: stream.resync() would do nothing
  const r = createUnknownResync({ getStream: () => s, now: c.now, setTimeout: c.setTimeout, clearTimeout: c.clearTimeout });
  r.trigger();
  assert.equal(s.resyncs, 0);
  assert.equal(r.pending, true);
  c.advance(0);
  assert.equal(s.resyncs, 0, 'still not live: retried later');
  assert.equal(c.pending(), 1);
  s.synced = true;
  c.advance(1000);
  assert.equal(s.resyncs, 1);
  // the throttle counts from the resync that ran
  r.trigger();
  assert.equal(s.resyncs, 1);
  c.advance(10000);
  assert.equal(s.resyncs, 2);
});

test('rt_module_updated for an unknown module: immediate resync, not throttled', () => {
  const c = clock();
  const s = fakeStream();
  const r = createUnknownResync({ getStream: () => s, now: c.now, setTimeout: c.setTimeout, clearTimeout: c.clearTimeout });
  r.trigger();
  c.advance(100);
  r.trigger(true);
  assert.equal(s.resyncs, 2);
  // not live: as soon as it can
  s.synced = false;
  r.trigger(true);
  assert.equal(s.resyncs, 2);
  s.synced = true;
  c.advance(0);
  assert.equal(s.resyncs, 3);
  // still not live at the first retry: the next retries stay unthrottled
  s.synced = false;
  r.trigger(true);
  c.advance(0);
  assert.equal(s.resyncs, 3);
  s.synced = true;
  c.advance(1000);
  assert.equal(s.resyncs, 4, 'retried after retryMs, not after the 10 s throttle');
  assert.equal(r.pending, false);
});

test('a snapshot fetched after the trigger covers it: the pending retry is cancelled', () => {
  const c = clock();
  const s = fakeStream();
  const r = createUnknownResync({ getStream: () => s, now: c.now, setTimeout: c.setTimeout, clearTimeout: c.clearTimeout });
  r.trigger();
  c.advance(1000);
  r.trigger(); // deferred
  assert.equal(r.pending, true);
  const before = r.snapshotStarted();
  r.trigger(); // after the fetch started: not covered by it
  r.snapshotApplied(before);
  assert.equal(r.pending, true);
  const token = r.snapshotStarted();
  r.snapshotApplied(token);
  assert.equal(r.pending, false);
  c.advance(20000);
  assert.equal(s.resyncs, 1);
});

test('no stream yet: deferred, never throws', () => {
  const c = clock();
  let s = null;
  const r = createUnknownResync({ getStream: () => s, now: c.now, setTimeout: c.setTimeout, clearTimeout: c.clearTimeout });
  r.trigger();
  c.advance(500);
  s = fakeStream();
  c.advance(1000);
  assert.equal(s.resyncs, 1);
});

test('stale: online keeps greyed readings until the next telemetry', () => {
  const d = { online: false, stale: true, offlineReason: 'timeout', lastSeen: 1, fw: null };
  applyOnline(d, { moduleId: 'a', lastSeen: '2026-01-01T00:00:00Z', fw: '1.2.0' });
  assert.equal(d.online, true);
  assert.equal(d.stale, true, 'still stale after rt_module_online');
  assert.equal(d.offlineReason, null);
  assert.equal(d.fw, '1.2.0');
  assert.equal(d.lastSeen, Date.parse('2026-01-01T00:00:00Z'));
  assert.equal(applyTelemetryStatus(d), true);
  assert.equal(d.stale, false);
  assert.equal(applyTelemetryStatus(d), false, 'fresh already: no status change');
  applyOffline(d, { reason: 'will' });
  assert.deepEqual([d.online, d.stale, d.offlineReason], [false, true, 'will']);
  applyTelemetryStatus(d);
  assert.deepEqual([d.online, d.stale, d.offlineReason], [true, false, null]);
});
