// The sign-in page: POST /api/auth/login, then back to `?next=` (same-origin paths only).

import { post, ApiError, safeNext } from './api.js';
import { t, applyStrings } from './strings.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const next = safeNext(params.get('next') || '/');

function showError(message) {
  const node = $('login-error');
  node.textContent = message || '';
  node.hidden = !message;
}

function keepLang(url) {
  const lang = params.get('lang');
  const target = new URL(url, location.origin);
  if (!lang || target.searchParams.has('lang')) return url;
  target.searchParams.set('lang', lang); // before any #fragment
  return `${target.pathname}${target.search}${target.hash}`;
}

async function onSubmit(ev) {
  ev.preventDefault();
  const email = $('email').value.trim();
  const password = $('password').value;
  if (!email || !password) {
    showError(t('loginMissing'));
    return;
  }
  const button = $('login-button');
  button.disabled = true;
  button.textContent = t('loginBusy');
  showError('');
  try {
    await post('/api/auth/login', { email, password });
    location.replace(keepLang(next));
    return;
  } catch (err) {
    if (err instanceof ApiError) {
      if (err.status === 429) showError(t('loginThrottled', { seconds: err.retryAfter ?? '?' }));
      else if (err.status === 401 || err.status === 400 || err.status === 403) showError(t('loginFailed'));
      else if (err.status === 0) showError(t('networkError'));
      else showError(t('serverError', { status: err.status }));
    } else {
      showError(t('networkError'));
    }
    $('password').select();
  }
  button.disabled = false;
  button.textContent = t('loginButton');
}

function main() {
  applyStrings(document);
  $('login-form').addEventListener('submit', onSubmit);
  if (params.get('reason') === 'session_expired') {
    const notice = $('login-notice');
    notice.textContent = t('sessionEnded');
    notice.hidden = false;
  }
  $('email').focus();
}

main();
