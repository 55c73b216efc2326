#!/usr/bin/env node
// (c) The hub is killed (SIGKILL) and restarted on the same ports and data directory while
// modules stream: the page reconnects by itself (body[data-connection-state] reconnecting ->
// connected), resynchronises with a snapshot (new epoch: stats().snapshots grows) and, once
// the modules are stopped, shows exactly the hub's GET /api/modules (model and DOM).
// Spec: { email, modules: [ids] }. See lib.mjs.
import {
  bodyState, control, log, login, newPage, pageModules, recordConnectionStates, recordEvents, scenario, sleep, stats,
  waitFor, waitOnline, waitReadingsChange, waitSameAsHub,
} from './lib.mjs';

await scenario('hub_restart', async (ctx) => {
  const { email, password, modules } = ctx.spec;
  const page = await newPage(ctx);
  const states = await recordConnectionStates(page);
  recordEvents(page);
  await login(page, email, password);
  await waitOnline(page, modules);
  await waitReadingsChange(page, modules);
  const before = { body: await bodyState(page), stats: await stats(page) };
  log('before:', JSON.stringify(before));

  const mark = states.length;
  await control('POST', '/hub/kill');
  await waitFor('the page notices the hub is gone (reconnecting)', () =>
    states.slice(mark).some((s) => s.state === 'reconnecting'), { last: () => states.slice(mark) });
  await sleep(2000); // modules and the page keep trying while the hub is down
  await control('POST', '/hub/start');
  await waitFor('the page is connected and synchronised again', async () => {
    const b = await bodyState(page);
    return b.connection === 'connected' && b.synced === 'true' && b.epoch !== before.body.epoch;
  }, { last: () => bodyState(page) });
  const after = { body: await bodyState(page), stats: await stats(page) };
  log('after:', JSON.stringify(after));
  const transitions = states.slice(mark).map((s) => s.state);
  const r = transitions.indexOf('reconnecting');
  if (r < 0 || !transitions.slice(r).includes('connected')) throw new Error(`connection states ${transitions}: no reconnecting -> connected`);
  if (!(after.stats.snapshots > before.stats.snapshots)) {
    throw new Error(`no resync after the restart: snapshots ${before.stats.snapshots} -> ${after.stats.snapshots}`);
  }
  // onSyncComplete compared the page before and after the snapshot (what the user is told).
  if (!after.stats.lastSync || typeof after.stats.lastSync.total !== 'number') {
    throw new Error(`no sync report after the restart: lastSync ${JSON.stringify(after.stats.lastSync)}`);
  }
  // The stream goes on with the new hub.
  await waitOnline(page, modules);
  await waitReadingsChange(page, modules);
  log('live again');

  await control('POST', '/modules/disconnect');
  const hub = await waitSameAsHub(page, email);
  if (Object.values(hub).some((m) => m.online)) throw new Error(`modules still online at the hub: ${JSON.stringify(hub)}`);
  return { before, after, transitions, state: { modules: await pageModules(page) }, hub };
});
