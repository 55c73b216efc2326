// Unit tests of the dashboard's pure modules: strings.js (languages), format.js, sparkline.js
// (Ring), api.js (safeNext, ApiError). Run: node --test tests/js/
import test from 'node:test';
import assert from 'node:assert/strict';

import { pickLanguage, setLanguage, t, format, STRINGS } from '../../static/js/strings.js';
import { formatReading, formatReadingParts, compareReadingNames, parseTime, lastSeenText } from '../../static/js/format.js';
import { Ring, valueRange } from '../../static/js/sparkline.js';
import { api, ApiError, safeNext } from '../../static/js/api.js';

test('language: ?lang= wins, then the browser languages, else English', () => {
  assert.equal(pickLanguage('?lang=fr', ['en-US']), 'fr');
  assert.equal(pickLanguage('?lang=de', ['fr-CA', 'en']), 'fr');
  assert.equal(pickLanguage('', ['de-DE', 'en-GB']), 'en');
  assert.equal(pickLanguage('', []), 'en');
});

test('notifications in French and English', () => {
  setLanguage('fr');
  assert.equal(t('userLoggedIn', { name: 'Ada' }), "Ada s'est connecté");
  assert.equal(t('online'), 'en ligne');
  setLanguage('en');
  assert.equal(t('userLoggedIn', { name: 'Ada' }), 'Ada signed in');
  assert.equal(t('stat.eventsPerSecond'), 'Events/s');
  assert.equal(t('no.such.key'), 'no.such.key');
});

test('every French key exists in English (no orphan translations)', () => {
  const walk = (fr, en, path) => {
    for (const k of Object.keys(fr)) {
      assert.ok(k in en, `en lacks ${path}${k}`);
      if (typeof fr[k] === 'object') walk(fr[k], en[k], `${path}${k}.`);
    }
  };
  walk(STRINGS.fr, STRINGS.en, '');
});

test('format keeps unknown placeholders', () => {
  assert.equal(format('{a} and {b}', { a: 1 }), '1 and {b}');
});

test('readings: units, digits, order', () => {
  setLanguage('en');
  assert.equal(formatReading('temperature', 21.456), '21.5 °C');
  assert.equal(formatReading('battery', 3.7), '3.70 V');
  assert.deepEqual(formatReadingParts('wind', 12.345), { value: '12.3', unit: '' });
  assert.deepEqual(formatReadingParts('x', NaN), { value: '—', unit: '' });
  assert.deepEqual(['zeta', 'battery', 'alpha', 'temperature'].sort(compareReadingNames), ['temperature', 'battery', 'alpha', 'zeta']);
});

test('times: RFC 3339, Unix seconds, relative', () => {
  assert.equal(parseTime('2026-01-01T00:00:00Z'), Date.UTC(2026, 0, 1));
  assert.equal(parseTime(1767225600), 1767225600000);
  assert.equal(parseTime(''), null);
  assert.equal(lastSeenText(null, 0), 'never seen');
  assert.equal(lastSeenText(0, 65_000), 'last seen 1 min ago');
  assert.equal(lastSeenText(0, 500), 'last seen just now');
});

test('Ring keeps the newest points, oldest first', () => {
  const r = new Ring(3);
  for (let i = 1; i <= 5; i++) r.push(i * 10, i);
  assert.equal(r.length, 3);
  assert.deepEqual([0, 1, 2].map((i) => r.at(i)[1]), [3, 4, 5]);
  assert.deepEqual(r.since(45).map((p) => p[0]), [40, 50], 'the point before the window is kept');
  r.push(50, 9); // same time: replaced
  assert.equal(r.length, 3);
  assert.equal(r.last()[1], 9);
  r.push(60, NaN); // ignored
  assert.equal(r.last()[0], 50);
  assert.deepEqual(valueRange([[0, 2], [1, 2]]), [1.98, 2.02]);
});

test('safeNext accepts same-origin paths only', () => {
  assert.equal(safeNext('/admin'), '/admin');
  assert.equal(safeNext('//evil.example'), '/');
  assert.equal(safeNext('https://evil.example'), '/');
  assert.equal(safeNext('/\\evil'), '/');
  assert.equal(safeNext('/login?next=/x'), '/');
  assert.equal(safeNext(null), '/');
});

test('safeNext: what the browser would resolve to another site is refused (tab/CR/LF, backslashes)', () => {
  const origin = 'https://hub.example:8443';
  const evil = [
    '/\t/evil.com', // `/login?next=/%09/evil.com`
    '/\n/evil.com',
    '/\r/evil.com',
    '/\r\n/evil.com',
    '/\t\\evil.com',
    '/\\/evil.com',
    '/%09/evil.com'.replace('%09', '\t'),
    '/\u0000/evil.com',
    '///evil.com',
    '/\t\t//evil.com',
    'javascript:alert(1)',
    ' /x',
  ];
  for (const next of evil) {
    const got = safeNext(next, origin);
    assert.equal(new URL(got, origin).origin, origin, `${JSON.stringify(next)} -> ${got}`);
    assert.equal(got, '/', JSON.stringify(next));
  }
  // the query string as login-page.js reads it
  const fromQuery = new URLSearchParams('next=/%09/evil.com').get('next');
  assert.equal(safeNext(fromQuery, origin), '/');
  // same-origin paths keep their query and fragment, normalised
  assert.equal(safeNext('/admin?lang=fr#users', origin), '/admin?lang=fr#users');
  assert.equal(safeNext('/a/../admin', origin), '/admin');
  assert.equal(safeNext('/%2F/evil.com', origin), '/%2F/evil.com');
  assert.equal(safeNext('/login/../login?next=//evil', origin), '/');
});

test('api: JSON in and out, ApiError with code and Retry-After', async () => {
  const calls = [];
  const fetchImpl = async (path, init) => {
    calls.push([path, init]);
    if (path === '/ok') return { ok: true, status: 200, text: async () => '{"a":1}', headers: new Map() };
    if (path === '/none') return { ok: true, status: 204, text: async () => '', headers: new Map() };
    return {
      ok: false,
      status: 429,
      text: async () => '{"error":{"code":"too_many_attempts","message":"slow down"}}',
      headers: new Map([['Retry-After', '3']]),
    };
  };
  assert.deepEqual(await api('POST', '/ok', { x: 1 }, { fetchImpl }), { a: 1 });
  assert.equal(calls[0][1].body, '{"x":1}');
  assert.equal(calls[0][1].headers['Content-Type'], 'application/json');
  assert.equal(await api('DELETE', '/none', undefined, { fetchImpl }), null);
  await assert.rejects(api('GET', '/bad', undefined, { fetchImpl }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'too_many_attempts');
    assert.equal(err.message, 'slow down');
    assert.equal(err.retryAfter, 3);
    return true;
  });
  await assert.rejects(api('GET', '/x', undefined, { fetchImpl: async () => { throw new Error('offline'); } }), (err) => err.status === 0);
});

test('Ring grows from a small start up to its capacity, keeping order', () => {
  const r = new Ring(40);
  for (let i = 0; i < 100; i++) r.push(i, i);
  assert.equal(r.length, 40);
  assert.equal(r.times.length, 40);
  assert.deepEqual([r.at(0)[1], r.at(39)[1]], [60, 99]);
  const small = new Ring(300);
  small.push(1, 1);
  assert.ok(small.times.length < 300, 'starts small');
});

test('loginUrl returns here afterwards and keeps the language', async () => {
  const { loginUrl } = await import('../../static/js/api.js');
  assert.equal(loginUrl({ pathname: '/admin', search: '' }), '/login?next=%2Fadmin');
  assert.equal(loginUrl({ pathname: '/', search: '?lang=fr' }), '/login?next=%2F%3Flang%3Dfr&lang=fr');
});
