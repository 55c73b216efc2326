// Shared helpers of the real-browser scenarios (tests/js/browser/*.mjs), run by
// tests/it/browser.rs: `node <scenario>.mjs '<spec JSON>'`. The spec carries `url` (the page's
// origin, through the test's TCP proxy), `hubUrl` (the hub itself), `control` (the test's control
// server: kill/restart the hub, cut/heal the network, disconnect modules, API calls as a user),
// `password`, and the scenario's own fields. stdout: one JSON line, {"kind":"ok",...} (exit 0)
// or {"kind":"fail","error":...} (exit 1); progress on stderr.
// Hooks used: docs/DASHBOARD.md ("Hooks for tests").

import { chromium } from 'playwright-core';

export const STEP_MS = 60_000;
const started = Date.now();
let scenarioName = 'browser';

export function log(...args) {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  console.error(`[${scenarioName} ${t}s]`, ...args);
}

export function spec() {
  const raw = process.argv[2];
  if (!raw) throw new Error('usage: node <scenario>.mjs <spec JSON>');
  return JSON.parse(raw);
}

function finish(obj, code) {
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code));
  setTimeout(() => process.exit(code), 2000).unref();
}

/** Runs `body(ctx)`; prints its result as the `ok` line, or the error as `fail`. */
export async function scenario(name, body) {
  scenarioName = name;
  const s = spec();
  const ctx = { spec: s, browser: null, consoleErrors: [] };
  try {
    ctx.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        // Timers of a page the test is not "looking at" must not be throttled.
        '--disable-background-timer-throttling',
        '--disable-renderer-backgrounding',
        '--disable-backgrounding-occluded-windows',
      ],
      timeout: STEP_MS,
    });
    const result = await body(ctx);
    await ctx.browser.close().catch(() => {});
    finish({ kind: 'ok', scenario: name, elapsedMs: Date.now() - started, consoleErrors: ctx.consoleErrors, ...result }, 0);
  } catch (err) {
    log('FAILED:', err && err.stack ? err.stack : err);
    if (ctx.browser) await ctx.browser.close().catch(() => {});
    finish({ kind: 'fail', scenario: name, error: String(err && err.message ? err.message : err), consoleErrors: ctx.consoleErrors }, 1);
  }
}

/** A new page in a new browser context (own cookies), logging its console to stderr. */
export async function newPage(ctx, label = 'page', viewport = { width: 1280, height: 860 }) {
  const context = await ctx.browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (msg) => {
    if (msg.type() === 'error') ctx.consoleErrors.push(`${label}: ${msg.text()}`);
    if (msg.type() === 'error' || msg.type() === 'warning') log(`${label} console.${msg.type()}:`, msg.text());
  });
  page.on('pageerror', (err) => {
    ctx.consoleErrors.push(`${label}: ${err && err.message ? err.message : err}`);
    log(`${label} pageerror:`, err);
  });
  return page;
}

/** A request to the test's control server; throws on a non-2xx answer. */
export async function control(method, path) {
  const url = spec().control + path;
  const res = await fetch(url, { method });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`control ${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
  log('control', method, path, '->', JSON.stringify(body));
  return body;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` (async) until it returns a truthy value; throws `what` (and the last value). */
export async function waitFor(what, probe, { timeout = STEP_MS, interval = 150, last = () => undefined } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      let now;
      try {
        now = await last();
      } catch (e) {
        now = `(${e})`;
      }
      throw new Error(`timed out after ${timeout} ms waiting for: ${what}` +
        (now !== undefined ? `; now: ${JSON.stringify(now)}` : '') +
        (lastError ? `; last error: ${lastError.message || lastError}` : ''));
    }
    await sleep(interval);
  }
}

/**
 * Logs in through /login (`next` = where to land). With `wrongFirst`, a wrong password first,
 * expecting `#login-error` visible with text; returns that text.
 */
export async function login(page, email, password, { wrongFirst = false, next = '/' } = {}) {
  const base = spec().url;
  const target = next === '/' ? `${base}/login` : `${base}/login?next=${encodeURIComponent(next)}`;
  const response = await page.goto(target, { waitUntil: 'domcontentloaded' });
  if (!response || !response.ok()) throw new Error(`GET ${target} answered ${response ? response.status() : 'nothing'}`);
  await page.locator('#email').waitFor({ state: 'visible' });
  let errorText = null;
  if (wrongFirst) {
    await page.fill('#email', email);
    await page.fill('#password', `${password}-wrong`);
    await page.click('#login-button');
    await page.locator('#login-error').waitFor({ state: 'visible' });
    await page.waitForFunction(() => (document.getElementById('login-error')?.textContent || '').trim().length > 0);
    errorText = ((await page.locator('#login-error').textContent()) || '').trim();
    log('wrong password ->', JSON.stringify(errorText));
  }
  await page.fill('#email', email);
  await page.fill('#password', password);
  await page.click('#login-button');
  const want = next === '/' ? ['/', '/modules'] : [next];
  await waitFor(`landing on ${want.join(' or ')} after login`, async () => want.includes(new URL(page.url()).pathname),
    { last: () => page.url() });
  await waitFor('the page connected and synchronised', () => page.evaluate(() =>
    document.body?.dataset.connectionState === 'connected' && document.body?.dataset.synced === 'true'),
  { last: () => bodyState(page) });
  log('logged in as', email, 'on', new URL(page.url()).pathname);
  return errorText;
}

/** body's data-connection-state, data-synced, data-stream-epoch, data-stream-offset. */
export function bodyState(page) {
  return page.evaluate(() => ({
    connection: document.body?.dataset.connectionState ?? null,
    synced: document.body?.dataset.synced ?? null,
    epoch: document.body?.dataset.streamEpoch ?? null,
    offset: document.body?.dataset.streamOffset ?? null,
  }));
}

/** `window.mc_dashboard.stats()`. */
export function stats(page) {
  return page.evaluate(() => {
    if (!window.mc_dashboard || typeof window.mc_dashboard.stats !== 'function') throw new Error('window.mc_dashboard.stats() missing');
    return window.mc_dashboard.stats();
  });
}

/** `window.mc_dashboard.state()`, with modules reduced to `{ id: { online, rev, readings } }`. */
export function pageModules(page) {
  return page.evaluate(() => {
    if (!window.mc_dashboard || typeof window.mc_dashboard.state !== 'function') throw new Error('window.mc_dashboard.state() missing');
    const modules = window.mc_dashboard.state()?.modules ?? {};
    const out = {};
    for (const [id, m] of Object.entries(modules)) {
      const readings = {};
      for (const [k, v] of Object.entries(m.readings ?? {})) readings[k] = Number(v);
      out[id] = { online: m.online === true, rev: m.rev ?? null, readings };
    }
    return out;
  });
}

/** What the DOM shows: `{ id: { online, readings: { name: number } } }` from the hooks. */
export function domModules(page) {
  return page.evaluate(() => {
    const out = {};
    for (const row of document.querySelectorAll('[data-module-id]')) {
      const readings = {};
      for (const cell of row.querySelectorAll('[data-reading]')) {
        const v = cell.getAttribute('data-value');
        if (v !== null && v !== '') readings[cell.getAttribute('data-reading')] = Number(v);
      }
      out[row.getAttribute('data-module-id')] = { online: row.getAttribute('data-online') === 'true', readings };
    }
    return out;
  });
}

/** The hub's `GET /api/modules` for `email` (through the test, straight to the hub). */
export async function hubModules(email) {
  const res = await fetch(`${spec().control}/as/${encodeURIComponent(email)}/api/modules`);
  const { status, body } = await res.json();
  if (status !== 200) throw new Error(`GET /api/modules as ${email}: ${status}`);
  const out = {};
  for (const m of body.modules ?? []) {
    const readings = {};
    for (const [k, v] of Object.entries(m.readings ?? {})) readings[k] = Number(v);
    out[m.moduleId] = { online: m.online === true, readings, rev: m.rev };
  }
  return out;
}

/** A GET on the hub's API as `email` (through the test); the body, or throws. */
export async function hubGet(email, path) {
  const res = await fetch(`${spec().control}/as/${encodeURIComponent(email)}${path}`);
  const { status, body } = await res.json();
  if (status !== 200) throw new Error(`GET ${path} as ${email}: ${status}`);
  return body;
}

const close = (a, b) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));

/** Differences between a page view and the hub's (online flags and readings); [] when equal. */
export function diffModules(page, hub, { rev = false } = {}) {
  const diffs = [];
  for (const id of new Set([...Object.keys(page), ...Object.keys(hub)])) {
    const p = page[id];
    const h = hub[id];
    if (!p) { diffs.push(`${id}: missing on the page`); continue; }
    if (!h) { diffs.push(`${id}: on the page, not the hub's`); continue; }
    if (p.online !== h.online) diffs.push(`${id}: online page=${p.online} hub=${h.online}`);
    if (rev && p.rev !== null && p.rev !== h.rev) diffs.push(`${id}: rev page=${p.rev} hub=${h.rev}`);
    for (const k of new Set([...Object.keys(p.readings), ...Object.keys(h.readings)])) {
      if (!(k in p.readings) || !(k in h.readings) || !close(p.readings[k], h.readings[k])) {
        diffs.push(`${id}.${k}: page=${p.readings[k]} hub=${h.readings[k]}`);
      }
    }
  }
  return diffs;
}

/** Waits until every module of `ids` is shown online in the DOM. */
export async function waitOnline(page, ids, timeout = STEP_MS) {
  await waitFor(`modules ${ids.join(', ')} shown online`, () => page.evaluate((ids) =>
    ids.every((id) => document.querySelector(`[data-module-id="${id}"][data-online="true"]`)), ids),
  { timeout, last: () => domModules(page) });
}

/** Waits until every module of `ids` shows at least one `data-value` different from now. */
export async function waitReadingsChange(page, ids, timeout = STEP_MS) {
  const before = await domModules(page);
  const changed = await waitFor(`a reading of each of ${ids.join(', ')} changes`, async () => {
    const now = await domModules(page);
    const done = ids.filter((id) => {
      const b = before[id]?.readings ?? {};
      const n = now[id]?.readings ?? {};
      return Object.keys(n).some((k) => k in b && b[k] !== n[k]);
    });
    return done.length === ids.length ? now : null;
  }, { timeout, last: () => domModules(page) });
  return { before, after: changed };
}

/** Waits until the page (model and DOM) shows exactly the hub's modules for `email`. */
export async function waitSameAsHub(page, email, timeout = STEP_MS) {
  let lastDiff;
  return waitFor(`the page shows exactly the hub's modules for ${email}`, async () => {
    const hub = await hubModules(email);
    const model = await pageModules(page);
    const dom = await domModules(page);
    const diffs = [...diffModules(model, hub).map((d) => `model ${d}`), ...diffModules(dom, hub).map((d) => `DOM ${d}`)];
    const revs = Object.fromEntries(Object.keys(hub).map((id) => [id, { page: model[id]?.rev ?? null, hub: hub[id].rev }]));
    const bad = new Set(diffs.map((d) => d.split(' ')[1].split(/[.:]/)[0]));
    const recent = (page.__events ?? []).filter((e) => e.data && bad.has(e.data.moduleId)).slice(-8);
    lastDiff = { diffs, revs, stats: await stats(page).catch(() => null), body: await bodyState(page).catch(() => null), hub, recent };
    return diffs.length === 0 ? hub : null;
  }, { timeout, last: () => lastDiff });
}

/**
 * Records every Socket.IO event the page receives over WebSocket (`[name, payload, offset]`,
 * with `at`), for diagnostics; the page keeps a reference in `page.__events`.
 */
export function recordEvents(page) {
  const events = [];
  page.__events = events;
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      const text = typeof payload === 'string' ? payload : payload.toString('utf8');
      const m = /^42(\/[^,]*,)?(\d*)(\[.*)$/s.exec(text);
      if (!m) return;
      try {
        const [name, data, offset] = JSON.parse(m[3]);
        events.push({ name, data, offset, at: Date.now() });
      } catch {
        // not JSON: ignore
      }
    });
  });
  return events;
}

/**
 * Records every value of body[data-connection-state] (from the first document on, across
 * navigations) into `page.__connectionStates` (node side): [{ state, at }].
 */
export async function recordConnectionStates(page) {
  const seen = [];
  await page.exposeBinding('mcTestConnectionState', (_source, state) => {
    seen.push({ state, at: Date.now() });
  });
  await page.addInitScript(() => {
    let last;
    const report = () => {
      const s = document.body?.dataset.connectionState;
      if (s && s !== last) {
        last = s;
        window.mcTestConnectionState(s);
      }
    };
    const start = () => {
      report();
      new MutationObserver(report).observe(document.body, { attributes: true, attributeFilter: ['data-connection-state'] });
    };
    if (document.body) start();
    else document.addEventListener('DOMContentLoaded', start);
  });
  return seen;
}
