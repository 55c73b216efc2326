#!/usr/bin/env node
// (b) An admin on /admin; another user logs in (through the login page, in another browser
// context): a [data-role="notification"][data-event="rt_user_logged_in"] naming that user
// appears in #notifications, and #users shows the user's row data-online="true" (it was "false"
// before); at the end every row's data-online equals GET /api/users' `online`.
// Spec: { email (admin), other (the other user's email) }. See lib.mjs.
import { hubGet, log, login, newPage, scenario, waitFor } from './lib.mjs';

await scenario('admin_login_notice', async (ctx) => {
  const { email, other, password } = ctx.spec;
  const users = await hubGet(email, '/api/users');
  const list = Array.isArray(users) ? users : users.users ?? [];
  const user = list.find((u) => u.email === other);
  if (!user) throw new Error(`${other} not in GET /api/users: ${JSON.stringify(users)}`);
  const name = user.name ?? other.split('@')[0];
  log('other user', JSON.stringify(user));

  const admin = await newPage(ctx, 'admin');
  await login(admin, email, password, { next: '/admin' });
  await admin.locator(`#users [data-user-id="${user.id}"]`).waitFor({ state: 'attached' });
  const before = await admin.getAttribute(`#users [data-user-id="${user.id}"]`, 'data-online');
  if (before !== 'false') throw new Error(`${other} shown data-online=${before} before logging in`);
  if (user.online !== false) throw new Error(`the hub says ${other} is online before logging in: ${JSON.stringify(user)}`);
  const notesBefore = await admin.locator('#notifications [data-role="notification"][data-event="rt_user_logged_in"]').count();
  log(`${other} row data-online=${before}; ${notesBefore} login notifications so far`);

  const page = await newPage(ctx, 'other');
  await login(page, other, password);

  const note = await waitFor(`a rt_user_logged_in notification naming ${name} or ${other}`, () => admin.evaluate(([name, email]) => {
    const notes = [...document.querySelectorAll('#notifications [data-role="notification"][data-event="rt_user_logged_in"]')];
    const hit = notes.find((n) => n.textContent.includes(name) || n.textContent.includes(email));
    return hit && hit.getClientRects().length > 0 ? hit.textContent.trim() : null;
  }, [name, other]), { last: () => admin.evaluate(() => document.getElementById('notifications')?.innerHTML?.slice(0, 2000) ?? null) });
  log('notification:', JSON.stringify(note));
  await waitFor(`#users shows ${other} online`, () => admin.evaluate((id) =>
    document.querySelector(`#users [data-user-id="${id}"]`)?.getAttribute('data-online') === 'true', user.id),
  { last: () => admin.evaluate((id) => document.querySelector(`#users [data-user-id="${id}"]`)?.outerHTML?.slice(0, 500) ?? null, user.id) });
  log(`${other} shown online`);

  // The whole users list agrees with the hub's online flags.
  let lastCompare;
  const agreed = await waitFor('the users list shows GET /api/users online flags', async () => {
    const hub = await hubGet(email, '/api/users');
    const hubList = Array.isArray(hub) ? hub : hub.users ?? [];
    const shown = await admin.evaluate(() => Object.fromEntries([...document.querySelectorAll('#users [data-user-id]')]
      .map((row) => [row.getAttribute('data-user-id'), row.getAttribute('data-online')])));
    const diffs = [];
    for (const u of hubList) {
      const want = u.online === true ? 'true' : 'false';
      if (shown[String(u.id)] !== want) diffs.push(`${u.email}: page=${shown[String(u.id)]} hub=${want}`);
    }
    for (const id of Object.keys(shown)) {
      if (!hubList.some((u) => String(u.id) === id)) diffs.push(`#${id}: on the page, not the hub's`);
    }
    lastCompare = { diffs, shown, hub: hubList.map((u) => ({ id: u.id, email: u.email, online: u.online })) };
    return diffs.length === 0 ? lastCompare : null;
  }, { last: () => lastCompare });
  if (!agreed.hub.some((u) => u.email === other && u.online === true)) {
    throw new Error(`the hub does not say ${other} is online: ${JSON.stringify(agreed.hub)}`);
  }
  log('users list = GET /api/users:', JSON.stringify(agreed.shown));
  return { notification: note, userId: user.id, onlineBefore: before, users: agreed.hub };
});
