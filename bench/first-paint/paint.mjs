#!/usr/bin/env node
// First paint of the modules page in headless Chromium (playwright-core, /usr/bin/chromium).
//
//   node paint.mjs --hub http://127.0.0.1:PORT --user EMAIL:PASSWORD:EXPECTED_MODULES ...
//                  [--loads 9] [--floor] [--json out.json]
//
// Each --user is a scenario (the page for that user; EXPECTED_MODULES cards must appear).
// --floor adds a peer: the DOM the 1st scenario rendered (scripts removed, same stylesheet;
// the sparkline canvases are copied blank, as canvas pixels are not part of the DOM),
// served as a static HTML page: what Chromium needs to paint the same 500 cards without any
// script, fetch or socket (the browser's floor). Loads are interleaved (A, B, C, A, B, C...),
// each in a fresh browser context (empty cache, the session cookie set).
//
// Per load, all in ms from navigation start (performance.timeOrigin):
//   firstPaintMs  window.mc_dashboard.stats().firstPaintMs (the page's own hook), if present
//   fp, fcp       performance.getEntriesByType('paint'): first-paint, first-contentful-paint
//   lcp           the last largest-contentful-paint entry
//   grid          the DOM holds all EXPECTED cards ([data-module-id]); for 0 modules: the empty
//                 state or body[data-synced="true"]
//   gridFrame     the 2nd requestAnimationFrame callback after `grid`: the frame that painted
//                 the complete grid has been produced
//   screen        the start of the first frame whose DOM fills the viewport with cards (the
//                 last card starts below the fold, or all EXPECTED cards are there)
//   screenFrame   the next requestAnimationFrame callback: that frame has been produced, i.e.
//                 the user sees a full screen of cards (what "first paint of the grid" means
//                 when the page builds the off-screen cards after it)
//   synced        body[data-synced="true"] first seen
//   steps         the document's and every resource's timing and the page's performance marks

import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const require = createRequire(new URL('../../tests/js/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const { values: args } = parseArgs({
  options: {
    hub: { type: 'string' },
    user: { type: 'string', multiple: true },
    loads: { type: 'string', default: '9' },
    floor: { type: 'boolean', default: false },
    json: { type: 'string' },
    // one more load of the first scenario with a Chromium trace (chrome://tracing, Perfetto)
    trace: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    timeout: { type: 'string', default: '30' },
    warm: { type: 'boolean', default: false },
  },
});
const HUB = args.hub.replace(/\/$/, '');
const LOADS = Number(args.loads);
const log = (...a) => console.error(`[paint ${new Date().toISOString().slice(11, 23)}]`, ...a);

// Runs in the page before any of its scripts.
function probe(expect) {
  const t = { grid: null, gridFrame: null, screen: null, screenFrame: null, synced: null, lcp: null };
  window.__mcPaint = t;
  // screen: the first frame (checked at its start, where the browser lays out anyway) whose
  // DOM fills the viewport with cards (the last card starts below the fold, or all are there);
  // screenFrame: the next frame, i.e. that screen has been produced.
  const screenCheck = () => {
    if (expect > 0 && t.screen === null) {
      const cards = document.querySelectorAll('[data-module-id]');
      if (cards.length >= expect || (cards.length && cards[cards.length - 1].getBoundingClientRect().top >= innerHeight)) {
        t.screen = performance.now();
        requestAnimationFrame(() => (t.screenFrame = performance.now()));
        return;
      }
    }
    if (t.screen === null && expect > 0) requestAnimationFrame(screenCheck);
  };
  requestAnimationFrame(screenCheck);
  const done = () => {
    if (t.grid !== null) return;
    t.grid = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => (t.gridFrame = performance.now())));
  };
  const check = () => {
    const body = document.body;
    if (body && t.synced === null && body.getAttribute('data-synced') === 'true') t.synced = performance.now();
    if (t.grid !== null) return;
    if (expect > 0) {
      if (document.querySelectorAll('[data-module-id]').length >= expect) done();
    } else {
      const empty = document.getElementById('modules-empty');
      if ((empty && !empty.hidden && empty.offsetParent !== null) || t.synced !== null) done();
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-synced', 'hidden'] });
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        t.lcp = e.renderTime || e.loadTime || e.startTime;
        const el = e.element;
        t.lcpElement = el ? `${el.tagName.toLowerCase()}${el.className ? '.' + String(el.className).split(' ')[0] : ''} ${e.size}px²` : null;
      }
    }).observe({ type: 'largest-contentful-paint', buffered: true });
  } catch {
    /* no LCP */
  }
}

async function login(email, password) {
  const res = await fetch(HUB + '/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (res.status !== 200) throw new Error(`login ${email}: HTTP ${res.status}`);
  for (const h of res.headers.getSetCookie()) {
    const pair = h.split(';', 1)[0].trim();
    if (pair.startsWith('mc_session=')) return pair.slice('mc_session='.length);
  }
  throw new Error('no session cookie');
}

const scenarios = [];
for (const u of args.user || []) {
  const [email, password, expect] = u.split(':');
  scenarios.push({ name: `page, ${expect} modules`, email, password, expect: Number(expect), url: HUB + '/' });
}
if (!scenarios.length) throw new Error('no --user');
for (const s of scenarios) s.cookie = await login(s.email, s.password);

const browser = await chromium.launch({ executablePath: args.chromium, headless: true, args: ['--headless', '--no-sandbox'] });
log('chromium', browser.version());

const warmContexts = new Map();
async function contextFor(s) {
  if (args.warm && warmContexts.has(s)) return warmContexts.get(s);
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  if (s.cookie) await context.addCookies([{ name: 'mc_session', value: s.cookie, url: HUB }]);
  await context.addInitScript(probe, s.expect);
  if (args.warm) warmContexts.set(s, context);
  return context;
}

async function load(s) {
  const context = await contextFor(s);
  let page;
  try {
    page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(s.url, { waitUntil: 'commit' });
    await page.waitForFunction(() => window.__mcPaint && window.__mcPaint.gridFrame !== null, null, {
      timeout: Number(args.timeout) * 1000,
      polling: 50,
    });
    await page.waitForTimeout(300); // let LCP and the page's own hook settle
    const r = await page.evaluate(() => {
      const paint = Object.fromEntries(performance.getEntriesByType('paint').map((e) => [e.name, e.startTime]));
      const nav = performance.getEntriesByType('navigation')[0];
      let hook = null;
      try {
        hook = window.mc_dashboard && typeof window.mc_dashboard.stats === 'function' ? window.mc_dashboard.stats() : null;
      } catch {
        hook = null;
      }
      const t = window.__mcPaint;
      return {
        firstPaintMs: hook && Number.isFinite(hook.firstPaintMs) ? hook.firstPaintMs : null,
        fp: paint['first-paint'] ?? null,
        fcp: paint['first-contentful-paint'] ?? null,
        lcp: t.lcp,
        lcpElement: t.lcpElement ?? null,
        grid: t.grid,
        gridFrame: t.gridFrame,
        screen: t.screen,
        screenFrame: t.screenFrame,
        synced: t.synced,
        domContentLoaded: nav ? nav.domContentLoadedEventEnd : null,
        // where the fixed cost goes: the document, each resource and the page's own marks
        steps: Object.fromEntries([
          ['doc.requestStart', nav?.requestStart],
          ['doc.responseStart', nav?.responseStart],
          ['doc.responseEnd', nav?.responseEnd],
          ['doc.domInteractive', nav?.domInteractive],
          ...performance.getEntriesByType('resource').flatMap((e) => {
            const name = new URL(e.name).pathname;
            return [[`${name} start`, e.startTime], [`${name} end`, e.responseEnd]];
          }),
          ...performance.getEntriesByType('mark').map((e) => [e.name, e.startTime]),
        ].filter(([, v]) => Number.isFinite(v))),
        cards: document.querySelectorAll('[data-module-id]').length,
        online: document.querySelectorAll('[data-module-id][data-online="true"]').length,
        readings: document.querySelectorAll('[data-reading]').length,
        sparklines: document.querySelectorAll('[data-sparkline]').length,
      };
    });
    if (s.floor) r.synced = null; // the copied DOM carries the attribute from the start
    r.errors = errors;
    return r;
  } finally {
    // --warm: one context per scenario for all its loads (HTTP cache and renderer warm, as
    // a reload in a running browser); otherwise a fresh context per load (a first visit)
    if (args.warm) await page?.close();
    else await context.close();
  }
}

function floorHtmlFrom(html) {
  // The rendered DOM without scripts: nothing runs, nothing is fetched but the stylesheets
  // (from the hub, through <base>).
  return (
    '<!doctype html>\n' +
    html
      .replace(/<script\b[\s\S]*?<\/script>/gi, '')
      .replace(/<link[^>]+rel="?modulepreload"?[^>]*>/gi, '')
      .replace(/<head>/i, `<head><base href="${HUB}/">`)
  );
}

/** Serves the floor page from this process (a plain HTTP server, as fast as a file). */
async function serveFloor(body) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  server.unref();
  return `http://127.0.0.1:${server.address().port}/floor.html`;
}

if (args.floor) {
  const s = scenarios[0];
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  await context.addCookies([{ name: 'mc_session', value: s.cookie, url: HUB }]);
  await context.addInitScript(probe, s.expect);
  const page = await context.newPage();
  await page.goto(s.url);
  await page.waitForFunction(() => window.__mcPaint && window.__mcPaint.gridFrame !== null, null, { timeout: 30000 });
  await page.waitForTimeout(1500); // sparklines and readings drawn
  const html = await page.evaluate(() => document.documentElement.outerHTML);
  await context.close();
  const floorHtml = floorHtmlFrom(html);
  scenarios.push({ name: `static HTML, ${s.expect} cards (floor)`, expect: s.expect, floor: true, url: await serveFloor(floorHtml) });
  log(`floor page: ${(floorHtml.length / 1024).toFixed(0)} KiB of HTML`);
}

if (args.trace) {
  const s = scenarios[0];
  await load(s); // warm-up
  const context = await contextFor(s);
  const page = await context.newPage();
  await browser.startTracing(page, {
    path: args.trace,
    categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'blink', 'cc', 'gpu', 'v8', 'loading', 'toplevel', 'benchmark', 'blink.user_timing'],
  });
  await page.goto(s.url, { waitUntil: 'commit' });
  await page.waitForFunction(() => window.__mcPaint && window.__mcPaint.gridFrame !== null, null, { timeout: 30000, polling: 50 });
  await page.waitForTimeout(300);
  await browser.stopTracing();
  if (!args.warm) await context.close();
  log('trace written to', args.trace);
}

// one warm-up load per scenario (not counted), then LOADS interleaved rounds
for (const s of scenarios) await load(s);
const results = scenarios.map(() => []);
for (let i = 0; i < LOADS; i++) {
  for (const [k, s] of scenarios.entries()) {
    const r = await load(s);
    results[k].push(r);
    log(`${s.name} #${i + 1}: hook ${r.firstPaintMs?.toFixed?.(1) ?? '–'} fcp ${r.fcp?.toFixed(1)} screen ${r.screenFrame?.toFixed?.(1) ?? '–'} grid ${r.grid?.toFixed(1)} gridFrame ${r.gridFrame?.toFixed(1)} lcp ${r.lcp?.toFixed?.(1) ?? '–'} (${r.lcpElement}) cards ${r.cards} online ${r.online} sparklines ${r.sparklines}${r.errors.length ? ' errors: ' + r.errors.join('; ') : ''}`);
  }
}
await browser.close();

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const keys = ['firstPaintMs', 'fp', 'fcp', 'screen', 'screenFrame', 'grid', 'gridFrame', 'lcp', 'synced', 'domContentLoaded'];
const out = [];
out.push(`Chromium ${browser.version()}, ${LOADS} loads per scenario (interleaved, ${args.warm ? 'one warm context per scenario, a new page per load' : 'fresh context each'}), medians in ms from navigation start`);
out.push('');
out.push('| scenario | hook firstPaintMs | first-paint | first-contentful-paint | screen filled | screen frame | grid in DOM | grid frame (2nd rAF) | LCP | data-synced | DOMContentLoaded | cards / online / sparklines |');
out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
const med = scenarios.map((s, k) => Object.fromEntries(keys.map((key) => [key, median(results[k].map((r) => r[key]))])));
scenarios.forEach((s, k) => {
  const m = med[k];
  const last = results[k].at(-1);
  out.push(`| ${s.name} | ${f(m.firstPaintMs)} | ${f(m.fp)} | ${f(m.fcp)} | ${f(m.screen)} | ${f(m.screenFrame)} | ${f(m.grid)} | ${f(m.gridFrame)} | ${f(m.lcp)} | ${f(m.synced)} | ${f(m.domContentLoaded)} | ${last.cards} / ${last.online} / ${last.sparklines} |`);
});
out.push('');
out.push('Per load (hook firstPaintMs | grid frame):');
scenarios.forEach((s, k) => {
  out.push(`- ${s.name}: ${results[k].map((r) => `${f(r.firstPaintMs)}|${f(r.gridFrame)}`).join(', ')}`);
});
if (scenarios.length > 1) {
  const a = med[0];
  out.push('');
  for (let k = 1; k < scenarios.length; k++) {
    const b = med[k];
    out.push(`ratio ${scenarios[0].name} / ${scenarios[k].name}: grid frame ${f(a.gridFrame / b.gridFrame)}x, FCP ${f(a.fcp / b.fcp)}x`);
  }
}
out.push('');
out.push('Steps, medians in ms from navigation start (document, resources, the page\'s marks):');
scenarios.forEach((s, k) => {
  const names = [...new Set(results[k].flatMap((r) => Object.keys(r.steps || {})))];
  const rows = names.map((n) => [n, median(results[k].map((r) => r.steps?.[n]))]).sort((a, b) => a[1] - b[1]);
  out.push(`- ${s.name}: ${rows.map(([n, v]) => `${n} ${f(v)}`).join(', ')}`);
});
console.log(out.join('\n'));
if (args.json) fs.writeFileSync(args.json, JSON.stringify({ scenarios: scenarios.map((s) => s.name), results }, null, 2));
