#!/usr/bin/env node
// (a) Log in through /login (a wrong password first: #login-error shows), then the user's
// modules come online ([data-module-id][data-online="true"]) and their readings change live
// (data-value of [data-reading] cells). Spec: { email, modules: [ids] }. See lib.mjs.
import { domModules, login, log, newPage, pageModules, scenario, waitOnline, waitReadingsChange } from './lib.mjs';

await scenario('login_live', async (ctx) => {
  const { email, password, modules } = ctx.spec;
  const page = await newPage(ctx);
  const t0 = Date.now();
  const loginError = await login(page, email, password, { wrongFirst: true });
  if (!loginError) throw new Error('#login-error was visible but empty');
  await waitOnline(page, modules);
  const onlineAfterMs = Date.now() - t0;
  log('online:', modules.join(', '));
  const { before, after } = await waitReadingsChange(page, modules);
  log('readings changed:', JSON.stringify(after));
  const shown = Object.keys(await domModules(page)).sort();
  const model = Object.keys(await pageModules(page)).sort();
  const want = [...modules].sort();
  if (JSON.stringify(shown) !== JSON.stringify(want)) throw new Error(`DOM shows ${shown}, the user owns ${want}`);
  if (JSON.stringify(model) !== JSON.stringify(want)) throw new Error(`state() has ${model}, the user owns ${want}`);
  return { loginError, onlineAfterMs, before, after };
});
