#!/usr/bin/env node
// Screenshots for the docs: the modules page and the admin page, logged in as an admin, with
// several live modules (one of them taken offline), an unregistered module knocking (the
// admin's "unclaimed" list) and some chart history. Writes <outDir>/modules.png and
// <outDir>/admin.png. Run by tests/it/browser.rs (`browser_screenshots`; with
// MC_SCREENSHOTS_DIR=$PWD/docs/screenshots it refreshes the docs' copies).
// Spec: { email (admin), other (a user who logs in meanwhile), modules: [ids], offline: id,
// outDir }. See lib.mjs.
import { join } from 'node:path';
import { control, log, login, newPage, scenario, sleep, waitFor, waitOnline } from './lib.mjs';

const synced = (page) => page.evaluate(() =>
  document.body?.dataset.connectionState === 'connected' && document.body?.dataset.synced === 'true');

await scenario('screenshots', async (ctx) => {
  const { email, other, password, modules, offline, outDir } = ctx.spec;
  const page = await newPage(ctx, 'modules', { width: 1360, height: 900 });
  await login(page, email, password);
  // The admin page in a second tab of the same session, gathering chart history meanwhile.
  const admin = await page.context().newPage();
  await admin.setViewportSize({ width: 1360, height: 900 });
  await admin.goto(`${ctx.spec.url}/admin`, { waitUntil: 'domcontentloaded' });
  await waitFor('the admin page synchronised', () => synced(admin));
  await waitOnline(page, modules);
  // The modules page is the background tab now: Chromium may report it hidden (no animation
  // frames), and it must stay current all the same.
  log('all online; collecting history; modules tab', await page.evaluate(() => document.visibilityState));
  await sleep(25_000);
  await control('POST', `/module/${offline}/disconnect`);
  await waitFor(`${offline} shown offline`, () => page.evaluate((id) =>
    document.querySelector(`[data-module-id="${id}"]`)?.getAttribute('data-online') === 'false', offline));
  await sleep(3000);
  const modulesPng = join(outDir, 'modules.png');
  await page.screenshot({ path: modulesPng, fullPage: true });
  log('wrote', modulesPng);

  // Someone logs in (a notification, an online user); the charts go on.
  const second = await newPage(ctx, 'other');
  await login(second, other, password);
  await sleep(15_000);
  const adminPng = join(outDir, 'admin.png');
  await admin.screenshot({ path: adminPng, fullPage: true });
  log('wrote', adminPng);
  return { files: [modulesPng, adminPng] };
});
