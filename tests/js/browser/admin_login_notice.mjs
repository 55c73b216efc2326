#!/usr/bin/env node
// (b) An admin on /admin; another user logs in (through the login page, in another browser
// context): a [data-role="notification"][data-event="rt_user_logged_in"] naming that user
// appears in #notifications, and #users shows the user's row data-online="true".
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
  return { notification: note, userId: user.id, onlineBefore: before };
});
