// fetch wrapper for the hub's JSON API: same-origin cookies, JSON bodies, errors as ApiError
// (`{"error": {"code", "message"}}` bodies), and the redirect to /login when the session is gone.

/** An HTTP error answer (status >= 400) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, body, message) {
    super(message || body?.error?.message || (status ? `HTTP ${status}` : 'network error'));
    this.name = 'ApiError';
    this.status = status;
    this.code = body?.error?.code || (status ? `http_${status}` : 'network');
    this.body = body;
    /** Seconds, from Retry-After (429). */
    this.retryAfter = undefined;
  }
}

/**
 * Calls the API. Resolves with the parsed JSON (null for 204 or an empty body); rejects with
 * an ApiError. `fetchImpl` is injectable for tests.
 */
export async function api(method, path, body, { fetchImpl = globalThis.fetch } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetchImpl(path, init);
  } catch (err) {
    throw new ApiError(0, null, String(err?.message || err));
  }
  return readResponse(res);
}

/** The JSON of a fetch Response (null for 204 or an empty body), or an ApiError. */
export async function readResponse(res) {
  let data = null;
  if (res.status !== 204) {
    const text = await res.text().catch(() => '');
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    const retry = res.headers?.get?.('Retry-After');
    if (retry) err.retryAfter = Number(retry);
    throw err;
  }
  return data;
}

/**
 * `GET path`, answered by what the hub embedded in the page (`window.mc_boot[name]`, parsed
 * by the page's inline script), else by the request that script started early
 * (`window.mc_prefetch[name]`, a fetch promise), else fetched now; each is used once.
 */
export function prefetched(name, path) {
  // embedded in the page by the hub (static_files.rs, once per page load)
  const boot = typeof window !== 'undefined' ? window.mc_boot : undefined;
  if (boot && boot[name] !== undefined) {
    const value = boot[name];
    delete boot[name];
    return Promise.resolve(value);
  }
  const early = typeof window !== 'undefined' ? window.mc_prefetch?.[name] : undefined;
  if (!early) return get(path);
  delete window.mc_prefetch[name];
  return early.then(readResponse, (err) => {
    throw new ApiError(0, null, String(err?.message || err));
  });
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body, opts) => api('POST', path, body, opts);
export const patch = (path, body, opts) => api('PATCH', path, body, opts);
export const del = (path, opts) => api('DELETE', path, undefined, opts);

/**
 * A same-origin path to return to after login, or '/' (never another site). The candidate is
 * resolved the way the browser will resolve it (`new URL(next, origin)`, which also strips
 * tab/CR/LF: `/\t/evil.com` is `//evil.com`), must stay on `origin`, and is returned as
 * pathname + search + hash. Control characters and backslashes are refused outright.
 */
export function safeNext(next, origin = typeof location !== 'undefined' && location.origin ? location.origin : 'http://localhost') {
  if (typeof next !== 'string' || !next.startsWith('/')) return '/';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(next)) return '/';
  let base;
  let url;
  try {
    base = new URL(origin);
    url = new URL(next, base);
  } catch {
    return '/';
  }
  if (url.origin !== base.origin || url.username || url.password) return '/';
  const path = `${url.pathname}${url.search}${url.hash}`;
  // one leading slash only (`//x` would be another host when used as a URL again)
  if (!path.startsWith('/') || path.startsWith('//')) return '/';
  if (url.pathname === '/login' || url.pathname.startsWith('/login/')) return '/';
  return path;
}

/** `/login?next=<current path>`. */
export function loginUrl(loc = globalThis.location) {
  const here = loc ? `${loc.pathname}${loc.search}` : '/';
  const lang = loc ? new URLSearchParams(loc.search).get('lang') : null;
  return `/login?next=${encodeURIComponent(safeNext(here))}` + (lang ? `&lang=${encodeURIComponent(lang)}` : '');
}

let redirecting = false;

/** Leaves for the login page (once), e.g. on a 401 or `session_expired`. */
export function redirectToLogin(reason) {
  if (redirecting || typeof location === 'undefined') return;
  redirecting = true;
  const url = loginUrl(location) + (reason ? `&reason=${encodeURIComponent(reason)}` : '');
  location.replace(url);
}

/** True (and redirects) when `err` means the session is missing or expired. */
export function handleAuthError(err) {
  if (err instanceof ApiError && err.status === 401) {
    redirectToLogin('session_expired');
    return true;
  }
  return false;
}
