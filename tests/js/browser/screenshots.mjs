#!/usr/bin/env node
// Screenshots for the docs: the modules page and the admin page, logged in as an admin, with
// several live modules (one of them taken offline) and some chart history. Writes
// <outDir>/modules.png and <outDir>/admin.png. Run by tests/it/browser.rs (`browser_screenshots`;
// MC_SCREENSHOTS_DIR=$PWD/docs/screenshots to refresh the docs' copies).
// Spec: { email (admin), other (a user who logs in meanwhile), modules: [ids], offline: id, outDir }. See lib.mjs.
import { join } from 'node:path';
import { control, log, login, newPage, scenario, sleep, waitFor, waitOnline } from './lib.mjs';

await scenario('screenshots', async (ctx) => {
  const { email, other, password, modules, offline, outDir } = ctx.spec;
  const page = await newPage(ctx, 'admin', { width: 1360, height: 900 });
  await login(page, email, password);
  await waitOnline(page, modules);
  log('all online; collecting history');
  await sleep(12_000);
  await control('POST', `/module/${offline}/disconnect`);
  await waitFor(`${offline} shown offline`, () => page.evaluate((id) =>
    document.querySelector(`[data-module-id="${id}"]`)?.getAttribute('data-online') === 'false', offline));
  await sleep(3000);
  const modulesPng = join(outDir, 'modules.png');
  await page.screenshot({ path: modulesPng, fullPage: true });
  log('wrote', modulesPng);

  await page.goto(`${ctx.spec.url}/admin`, { waitUntil: 'domcontentloaded' });
  await waitFor('the admin page synchronised', () => page.evaluate(() =>
    document.body?.dataset.connectionState === 'connected' && document.body?.dataset.synced === 'true'));
  // Someone logs in (a notification), and the charts gather a few points.
  const second = await newPage(ctx, 'other');
  await login(second, other, password);
  await sleep(12_000);
  const adminPng = join(outDir, 'admin.png');
  await page.screenshot({ path: adminPng, fullPage: true });
  log('wrote', adminPng);
  return { files: [modulesPng, adminPng] };
});
