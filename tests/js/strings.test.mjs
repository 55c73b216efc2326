// Unit tests of static/js/strings.js: every language has every key, error codes map to strings,
// document titles and times follow the page language. Run: node --test tests/js/
import test from 'node:test';
import assert from 'node:assert/strict';

import { STRINGS, LANGUAGES, applyStrings, errorMessage, formatTime, setLanguage, t } from '../../static/js/strings.js';

/** 'a', 'b.c'... every leaf key of a nested table. */
function keys(table, prefix = '') {
  const out = [];
  for (const [k, v] of Object.entries(table)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object') out.push(...keys(v, path));
    else out.push(path);
  }
  return out;
}

function placeholders(text) {
  return [...String(text).matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
}

test('every English key exists in every other language, with the same placeholders', () => {
  const en = keys(STRINGS.en);
  for (const lang of LANGUAGES) {
    if (lang === 'en') continue;
    const have = new Set(keys(STRINGS[lang]));
    const missing = en.filter((k) => !have.has(k));
    assert.deepEqual(missing, [], `${lang} lacks ${missing.join(', ')}`);
    for (const k of en) {
      const get = (table) => k.split('.').reduce((n, p) => n[p], table);
      assert.deepEqual(placeholders(get(STRINGS[lang])), placeholders(get(STRINGS.en)), `${lang}.${k} placeholders`);
    }
    const extra = [...have].filter((k) => !en.includes(k));
    assert.deepEqual(extra, [], `${lang} has keys English lacks`);
  }
});

test('errorMessage: known codes are translated, other HTTP errors generic, else the message', () => {
  setLanguage('fr');
  try {
    assert.equal(errorMessage({ status: 409, code: 'conflict', message: 'a module with this id exists' }), STRINGS.fr.errorCode.conflict);
    assert.equal(errorMessage({ status: 0, code: 'network', message: 'Failed to fetch' }), STRINGS.fr.errorCode.network);
    assert.equal(errorMessage({ status: 418, code: 'http_418', message: 'HTTP 418' }), t('serverError', { status: 418 }));
    assert.equal(errorMessage({ status: 409, code: 'some_new_code', message: 'raw detail' }), 'raw detail');
    assert.equal(errorMessage(new Error('boom')), 'boom');
    // an inherited property is no string of ours
    assert.equal(errorMessage({ code: 'constructor', message: 'm' }), 'm');
  } finally {
    setLanguage('en');
  }
  assert.equal(errorMessage({ status: 404, code: 'not_found', message: 'not found' }), STRINGS.en.errorCode.not_found);
});

test('applyStrings sets the document title of the page in the page language', () => {
  const fakeDoc = (page) => ({
    title: 'mc-hub · Admin',
    documentElement: { lang: 'en', dataset: { pageTitle: page } },
    querySelectorAll: () => [],
  });
  setLanguage('fr');
  try {
    const admin = fakeDoc('admin');
    applyStrings(admin);
    assert.equal(admin.title, STRINGS.fr.pageTitle.admin);
    assert.equal(admin.documentElement.lang, 'fr');
    const login = fakeDoc('login');
    applyStrings(login);
    assert.equal(login.title, STRINGS.fr.pageTitle.login);
    const unknown = fakeDoc('nope');
    applyStrings(unknown);
    assert.equal(unknown.title, 'mc-hub · Admin', 'unknown page: title left alone');
  } finally {
    setLanguage('en');
  }
});

test('formatTime follows the page language', () => {
  const d = new Date(Date.UTC(2026, 0, 2, 13, 44, 47));
  setLanguage('fr');
  try {
    assert.equal(formatTime(d), d.toLocaleTimeString('fr'));
  } finally {
    setLanguage('en');
  }
  assert.equal(formatTime(d), d.toLocaleTimeString('en'));
});
