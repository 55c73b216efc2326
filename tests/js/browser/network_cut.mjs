#!/usr/bin/env node
// (d) The network between the page and the hub is cut (the test's proxy closes every
// connection and blackholes new ones) for a few seconds while the modules keep sending and one
// of them goes offline; then it heals. The page reconnects and resumes (stats().resumes grows,
// stats().snapshots does not: the missed events are replayed), shows the module offline, and
// once the modules are stopped shows exactly the hub's GET /api/modules.
// Spec: { email, modules: [ids], goesOffline: id }. See lib.mjs.
import {
  bodyState, control, hubModules, log, login, newPage, pageModules, recordConnectionStates, scenario, sleep,
  stats, waitFor, waitOnline, waitReadingsChange, waitSameAsHub,
} from './lib.mjs';

await scenario('network_cut', async (ctx) => {
  const { email, password, modules, goesOffline } = ctx.spec;
  const page = await newPage(ctx);
  const states = await recordConnectionStates(page);
  await login(page, email, password);
  await waitOnline(page, modules);
  await waitReadingsChange(page, modules);
  const before = { body: await bodyState(page), stats: await stats(page), hub: await hubModules(email) };
  log('before:', JSON.stringify({ body: before.body, stats: before.stats }));

  const mark = states.length;
  await control('POST', '/net/cut/blackhole');
  await waitFor('the page notices the cut (reconnecting)', () =>
    states.slice(mark).some((s) => s.state === 'reconnecting'), { last: () => states.slice(mark) });
  await control('POST', `/module/${goesOffline}/disconnect`);
  await waitFor(`the hub has ${goesOffline} offline`, async () => (await hubModules(email))[goesOffline]?.online === false);
  // The others keep sending while the page is cut off: their revs move at the hub.
  const still = modules.filter((id) => id !== goesOffline);
  await waitFor('the hub receives telemetry during the cut', async () => {
    const hub = await hubModules(email);
    return still.every((id) => hub[id].rev > before.hub[id].rev);
  });
  await sleep(1500);
  const during = await bodyState(page);
  log('during the cut:', JSON.stringify(during));
  await control('POST', '/net/heal');

  await waitFor('the page is connected and synchronised again', async () => {
    const b = await bodyState(page);
    const s = await stats(page);
    return b.connection === 'connected' && b.synced === 'true' && s.resumes > before.stats.resumes;
  }, { last: async () => ({ body: await bodyState(page), stats: await stats(page) }) });
  const after = { body: await bodyState(page), stats: await stats(page) };
  log('after:', JSON.stringify(after));
  if (after.body.epoch !== before.body.epoch) throw new Error(`epoch changed: ${before.body.epoch} -> ${after.body.epoch}`);
  if (after.stats.snapshots !== before.stats.snapshots) {
    throw new Error(`a snapshot was fetched instead of a replay: snapshots ${before.stats.snapshots} -> ${after.stats.snapshots}`);
  }
  if (!(after.stats.replayed > before.stats.replayed)) throw new Error(`nothing replayed: ${before.stats.replayed} -> ${after.stats.replayed}`);
  const transitions = states.slice(mark).map((s) => s.state);
  await waitFor(`${goesOffline} shown offline`, () => page.evaluate((id) =>
    document.querySelector(`[data-module-id="${id}"]`)?.getAttribute('data-online') === 'false', goesOffline));
  await waitReadingsChange(page, still);
  log('live again');

  await control('POST', '/modules/disconnect');
  const hub = await waitSameAsHub(page, email);
  return { before: { body: before.body, stats: before.stats }, after, during, transitions, state: { modules: await pageModules(page) }, hub };
});
