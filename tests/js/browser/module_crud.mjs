#!/usr/bin/env node
// Module CRUD on the modules page as a normal user: add (#add-module-form, the password shown
// once in #module-password, then closed and gone from the DOM), rename ([data-action="rename"]
// -> [data-role="rename-form"]), search / status filter (filtered-out cards are `hidden`),
// remove ([data-action="remove"] -> [data-action="confirm-remove"]); each change checked against
// the hub's GET /api/modules. Then `/?lang=fr` shows the French add button.
// Spec: { email, modules: [ids the user owns, online], newId, newName, newType, renamed, frAddModule }.
// See lib.mjs.
import { domModules, hubGet, login, log, newPage, scenario, spec, waitFor, waitOnline } from './lib.mjs';

const WAIT = { timeout: 30_000 };

/** The user's modules from the hub: { id: { name, type, online } }. */
async function apiModules(email) {
  const body = await hubGet(email, '/api/modules');
  const out = {};
  for (const m of body.modules ?? []) out[m.moduleId] = { name: m.name, type: m.type ?? null, online: m.online === true };
  return out;
}

/** Every card's id -> { hidden, online, name }. */
function cards(page) {
  return page.evaluate(() => {
    const out = {};
    for (const card of document.querySelectorAll('[data-module-id]')) {
      out[card.getAttribute('data-module-id')] = {
        hidden: card.hidden,
        online: card.getAttribute('data-online'),
        name: (card.querySelector('[data-role="name"]')?.textContent || '').trim(),
      };
    }
    return out;
  });
}

const sameSet = (a, b) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());

await scenario('module_crud', async (ctx) => {
  const { email, password, modules, newId, newName, newType, renamed, frAddModule } = ctx.spec;
  const page = await newPage(ctx);
  await login(page, email, password);
  await waitOnline(page, modules);
  const card = `[data-module-id="${newId}"]`;

  // 1. Add.
  await page.click('#add-module-button');
  const form = page.locator('#add-module-form');
  await form.waitFor({ state: 'visible' });
  await form.locator('[name=id]').fill(newId);
  await form.locator('[name=name]').fill(newName);
  await form.locator('[name=type]').fill(newType);
  await form.locator('[data-role="submit"]').click();
  const secret = await waitFor('#module-password shows a password', () => page.evaluate(() => {
    const panel = document.getElementById('module-password-panel');
    const text = (document.getElementById('module-password')?.textContent || '').trim();
    return panel && !panel.hidden && text ? text : null;
  }), { ...WAIT, last: () => page.evaluate(() => document.querySelector('#add-module-form [data-role="form-error"]')?.textContent ?? null) });
  log('password shown,', secret.length, 'chars');
  await waitFor(`${newId} card shown offline`, () => page.evaluate((sel) =>
    document.querySelector(sel)?.getAttribute('data-online') === 'false', card), { ...WAIT, last: () => cards(page) });
  const afterAdd = await waitFor(`GET /api/modules lists ${newId}`, async () => {
    const m = await apiModules(email);
    return m[newId] ? m : null;
  }, { ...WAIT, last: () => apiModules(email) });
  if (afterAdd[newId].name !== newName) throw new Error(`API name ${afterAdd[newId].name}, want ${newName}`);
  if (afterAdd[newId].online) throw new Error(`${newId} online in the API before any MQTT connection`);
  await page.click('#close-password-button');
  await waitFor('the password is gone from the DOM', () => page.evaluate((secret) =>
    document.getElementById('module-password-panel').hidden &&
    !document.documentElement.outerHTML.includes(secret) &&
    !(document.body.innerText || '').includes(secret), secret), WAIT);
  log('added', newId);

  // 2. Rename.
  await page.locator(`${card} [data-action="rename"]`).click();
  const renameInput = page.locator(`${card} [data-role="rename-form"] [name=name]`);
  await renameInput.waitFor({ state: 'visible' });
  await renameInput.fill(renamed);
  await renameInput.press('Enter');
  await waitFor(`${newId} card shows the new name`, () => page.evaluate(([sel, renamed]) => {
    const c = document.querySelector(sel);
    const name = c?.querySelector('[data-role="name"]');
    return name && !name.hidden && name.textContent.trim() === renamed && !c.querySelector('[data-role="rename-form"]');
  }, [card, renamed]), { ...WAIT, last: () => cards(page) });
  await waitFor(`GET /api/modules has ${newId} named ${renamed}`, async () =>
    (await apiModules(email))[newId]?.name === renamed, { ...WAIT, last: () => apiModules(email) });
  log('renamed to', renamed);

  // 3. Search and status filter.
  const all = [...modules, newId];
  const shownIds = async () => Object.entries(await cards(page)).filter(([, c]) => !c.hidden).map(([id]) => id);
  await page.fill('#module-search', newId.split('-')[1]);
  await waitFor(`only ${newId} shown for the search`, async () => sameSet(await shownIds(), [newId]),
    { ...WAIT, last: () => cards(page) });
  await page.fill('#module-search', '');
  await waitFor('every card shown after clearing the search', async () => sameSet(await shownIds(), all),
    { ...WAIT, last: () => cards(page) });
  await page.selectOption('#module-filter', 'offline');
  const offline = await waitFor('only offline cards shown', async () => {
    const c = await cards(page);
    const shown = Object.entries(c).filter(([, v]) => !v.hidden);
    const ok = shown.length > 0 && shown.every(([, v]) => v.online === 'false') &&
      Object.values(c).filter((v) => v.online === 'false').length === shown.length &&
      shown.some(([id]) => id === newId);
    return ok ? shown.map(([id]) => id) : null;
  }, { ...WAIT, last: () => cards(page) });
  await page.selectOption('#module-filter', 'all');
  await waitFor('every card shown with the filter on all', async () => sameSet(await shownIds(), all),
    { ...WAIT, last: () => cards(page) });
  log('filter offline showed', offline.join(', '));

  // 4. Remove.
  await page.locator(`${card} [data-action="remove"]`).click();
  await page.locator(`${card} [data-role="confirm-remove"] [data-action="confirm-remove"]`).click();
  await waitFor(`${newId} card gone`, () => page.evaluate((sel) => !document.querySelector(sel), card),
    { ...WAIT, last: () => cards(page) });
  const afterRemove = await waitFor(`GET /api/modules no longer lists ${newId}`, async () => {
    const m = await apiModules(email);
    return m[newId] ? null : m;
  }, { ...WAIT, last: () => apiModules(email) });
  if (!sameSet(Object.keys(afterRemove), modules)) throw new Error(`API lists ${Object.keys(afterRemove)}, want ${modules}`);
  const dom = Object.keys(await domModules(page));
  if (!sameSet(dom, modules)) throw new Error(`DOM shows ${dom}, want ${modules}`);
  log('removed', newId);

  // 5. French.
  await page.goto(`${spec().url}/?lang=fr`, { waitUntil: 'domcontentloaded' });
  const frText = await waitFor('#add-module-button in French', async () => {
    const text = ((await page.locator('#add-module-button').textContent()) || '').trim();
    return text === frAddModule ? text : null;
  }, { ...WAIT, last: () => page.locator('#add-module-button').textContent() });
  log('French:', frText);

  return { added: newId, renamed, offlineShown: offline, frText };
});
