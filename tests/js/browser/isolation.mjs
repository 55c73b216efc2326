#!/usr/bin/env node
// (e) Isolation: the user's page never shows (DOM, MutationObserver from the first document
// on), holds (mc_dashboard.state(), polled) or even receives (every WebSocket frame and every
// Socket.IO / API response body) another user's module, while both users' modules send,
// across a network cut with replay and a forced reconnect. Ends with the page equal to the
// hub's GET /api/modules for the user. Spec: { email, modules: [ids], foreign: [ids] }.
import {
  control, log, login, newPage, pageModules, scenario, sleep, stats, waitFor, waitOnline,
  waitReadingsChange, waitSameAsHub,
} from './lib.mjs';

await scenario('isolation', async (ctx) => {
  const { email, password, modules, foreign } = ctx.spec;
  const page = await newPage(ctx);
  const violations = [];
  const violate = (where, text) => {
    if (violations.length < 20) violations.push({ where, text: String(text).slice(0, 300) });
  };
  const mentionsForeign = (text) => foreign.some((id) => text.includes(id));
  await page.exposeBinding('mcTestForeign', (_s, what) => violate('DOM', what));
  await page.addInitScript((foreign) => {
    const check = (node) => {
      if (node.nodeType !== 1) return;
      const nodes = [node, ...node.querySelectorAll('*')];
      for (const n of nodes) {
        const id = n.getAttribute('data-module-id');
        if ((id && foreign.includes(id)) || foreign.some((f) => (n.childElementCount === 0 && (n.textContent || '').includes(f)))) {
          window.mcTestForeign(n.outerHTML.slice(0, 200));
        }
      }
    };
    const start = () => {
      check(document.documentElement);
      new MutationObserver((records) => {
        for (const r of records) {
          if (r.type === 'attributes') check(r.target);
          else r.addedNodes.forEach(check);
        }
      }).observe(document.documentElement, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-module-id'] });
    };
    if (document.documentElement) start();
    else document.addEventListener('DOMContentLoaded', start);
  }, foreign);
  let frames = 0;
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      frames += 1;
      const text = typeof payload === 'string' ? payload : payload.toString('utf8');
      if (mentionsForeign(text)) violate('websocket frame', text);
    });
  });
  // Each response body is read asynchronously: the checks still pending are awaited before the
  // final check, so a late one cannot be missed.
  const pendingChecks = new Set();
  let responses = 0;
  page.on('response', (res) => {
    const path = new URL(res.url()).pathname;
    if (!path.startsWith('/api/') && !path.startsWith('/socket.io/')) return;
    const checking = (async () => {
      const text = await res.text().catch(() => '');
      responses += 1;
      if (mentionsForeign(text)) violate(`response ${path}`, text);
    })();
    pendingChecks.add(checking);
    checking.finally(() => pendingChecks.delete(checking));
  });
  let polls = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const ids = await pageModules(page).then(Object.keys).catch(() => []);
      polls += 1;
      for (const id of ids) if (foreign.includes(id)) violate('state()', id);
      await sleep(100);
    }
  })();
  const check = (step) => {
    if (violations.length) throw new Error(`${step}: the page got another user's module: ${JSON.stringify(violations)}`);
  };

  await login(page, email, password);
  await waitOnline(page, modules);
  await waitReadingsChange(page, modules);
  check('after login');
  log('live; no foreign module so far');

  const s0 = await stats(page);
  await control('POST', '/net/cut/refuse');
  await sleep(3000); // everyone's modules keep sending meanwhile
  await control('POST', '/net/heal');
  await waitFor('resumed after the cut', async () => (await stats(page)).resumes > s0.resumes,
    { last: () => stats(page) });
  await waitReadingsChange(page, modules);
  check('after the cut and the replay');
  log('resumed:', JSON.stringify(await stats(page)));

  const s1 = await stats(page);
  await page.evaluate(() => window.mc_socketReconnect());
  await waitFor('reconnected after mc_socketReconnect()', async () => (await stats(page)).reconnects > s1.reconnects,
    { last: () => stats(page) });
  await waitReadingsChange(page, modules);
  check('after a forced reconnect');

  await control('POST', '/modules/disconnect');
  const hub = await waitSameAsHub(page, email);
  polling = false;
  await poller;
  while (pendingChecks.size) await Promise.allSettled([...pendingChecks]);
  check('at the end');
  if (frames === 0) throw new Error('no WebSocket frame seen: the check watched nothing');
  return { frames, polls, responses, stats: await stats(page), state: { modules: await pageModules(page) }, hub };
});
