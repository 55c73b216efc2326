#!/usr/bin/env node
// More modules than one screen holds: the modules page builds the cards of the first screen
// before its first frame and the rest in chunks after it (static/js/modules-page.js,
// "first build in chunks"). A search typed the moment the first screen is built (while most
// cards do not exist yet) must apply to every module; the complete grid must end up with every
// module once, in name order, each card matching the hub. Modules added and removed afterwards
// show once each and leave no card behind.
// Spec: { email, modules: [ids in the order the page must show them], query, matching: [ids] }.
// See lib.mjs.
import { hubGet, login, log, newPage, scenario, waitFor } from './lib.mjs';

const WAIT = { timeout: 30_000 };

await scenario('many_modules', async (ctx) => {
  const { email, password, modules, query, matching } = ctx.spec;
  const page = await newPage(ctx, 'many', { width: 1366, height: 900 });
  // At the page's 'mc:grid-built' mark (first screen built, the rest pending), type the query.
  await page.addInitScript((q) => {
    new PerformanceObserver((list, observer) => {
      if (!list.getEntries().some((e) => e.name === 'mc:grid-built')) return;
      observer.disconnect();
      const box = document.getElementById('module-search');
      window.__cardsWhenSearched = document.querySelectorAll('[data-module-id]').length;
      box.value = q;
      box.dispatchEvent(new Event('input', { bubbles: true }));
    }).observe({ type: 'mark', buffered: true });
  }, query);
  await login(page, email, password);
  const searchedAt = await page.evaluate(() => window.__cardsWhenSearched ?? null);
  log(`searched "${query}" when ${searchedAt} of ${modules.length} cards existed`);
  if (searchedAt === null) throw new Error('the search was never typed (no mc:grid-built mark)');

  const shown = () => page.evaluate(() =>
    [...document.querySelectorAll('[data-module-id]')].filter((c) => !c.hidden).map((c) => c.getAttribute('data-module-id')));
  const found = await waitFor(`only ${matching.join(', ')} shown for "${query}"`, async () => {
    const ids = await shown();
    return JSON.stringify(ids) === JSON.stringify(matching) ? ids : null;
  }, { ...WAIT, last: shown });
  log('search showed', found.join(', '));

  await page.fill('#module-search', '');
  const order = () => page.evaluate(() => [...document.querySelectorAll('[data-module-id]')].map((c) => c.getAttribute('data-module-id')));
  await waitFor(`all ${modules.length} cards shown, in name order`, async () => {
    const ids = await shown();
    return JSON.stringify(ids) === JSON.stringify(modules);
  }, { ...WAIT, last: order });

  // every card carries its module's name as the hub has it
  const hub = Object.fromEntries(((await hubGet(email, '/api/modules')).modules ?? []).map((m) => [m.moduleId, m.name]));
  const names = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('[data-module-id]')].map((c) =>
    [c.getAttribute('data-module-id'), (c.querySelector('[data-role="name"]')?.textContent || '').trim()])));
  for (const id of modules) {
    if (hub[id] === undefined) throw new Error(`the hub does not list ${id}`);
    if (names[id] !== hub[id]) throw new Error(`${id}: card name ${JSON.stringify(names[id])}, hub ${JSON.stringify(hub[id])}`);
  }
  // Modules added and removed after the grid is complete: each shows once (no second card for
  // any module), a search finds them, removing them leaves no card behind.
  const api = (method, path, body) => page.evaluate(async ([m, p, b]) => {
    const res = await fetch(p, { method: m, headers: { 'content-type': 'application/json' }, body: b ? JSON.stringify(b) : undefined });
    return res.status;
  }, [method, path, body]);
  const added = ['MC-4901-STN', 'MC-4902-STN'];
  for (const id of added) {
    const status = await api('POST', '/api/modules', { id, name: `Station ${id.slice(3, 7)}`, type: 'weather' });
    if (status !== 201 && status !== 200) throw new Error(`POST /api/modules ${id}: ${status}`);
  }
  const all = [...modules, ...added];
  await waitFor('the added modules shown, every module once', async () => {
    const ids = await order();
    return ids.length === all.length && new Set(ids).size === all.length && added.every((id) => ids.includes(id));
  }, { ...WAIT, last: order });
  await page.fill('#module-search', 'Station 4902');
  await waitFor('the search finds the added module alone', async () => JSON.stringify(await shown()) === JSON.stringify(['MC-4902-STN']),
    { ...WAIT, last: shown });
  await page.fill('#module-search', '');
  for (const id of added) {
    const status = await api('DELETE', `/api/modules/${id}`);
    if (status !== 204 && status !== 200) throw new Error(`DELETE /api/modules/${id}: ${status}`);
  }
  await waitFor('the removed modules gone, the others once each', async () => JSON.stringify(await order()) === JSON.stringify(modules),
    { ...WAIT, last: order });
  return { cards: modules.length, cardsWhenSearched: searchedAt, matching: found, addedAndRemoved: added };
});
