// Unit tests of static/js/sync-diff.js: what a resynchronisation reports as changed.
import test from 'node:test';
import assert from 'node:assert/strict';

import { diffModules } from '../../static/js/sync-diff.js';

const client = {
  modules: {
    A: { name: 'Alpha', online: true, rev: 3, readings: { t: 20.5, h: 40 } },
    B: { name: 'Beta', online: false, rev: 1, readings: { t: 18 } },
    C: { name: 'Gamma', online: true, rev: 9, readings: {} },
    D: { name: 'Delta', online: true, rev: 2, readings: { t: 1 } },
  },
};

test('nothing changed: nothing reported', () => {
  const snap = {
    modules: Object.entries(client.modules).map(([moduleId, m]) => ({ moduleId, ...m, readings: { ...m.readings } })),
  };
  const d = diffModules(client, snap);
  assert.equal(d.total, 0);
  assert.deepEqual(d, { added: [], removed: [], cameOnline: [], wentOffline: [], readingsChanged: [], renamed: [], total: 0 });
});

test('every kind of change is reported once per module', () => {
  const snap = {
    modules: [
      { moduleId: 'A', name: 'Alpha', online: false, readings: { t: 20.5, h: 41 } }, // offline + readings
      { moduleId: 'B', name: 'Beta 2', online: true, readings: { t: 18 } }, // online + renamed
      { moduleId: 'D', name: 'Delta', online: true, readings: { t: 1, p: 1000 } }, // a new reading name
      { moduleId: 'E', name: 'Epsilon', online: true, readings: {} }, // added
    ],
  };
  const d = diffModules(client, snap);
  assert.deepEqual(d.added, ['E']);
  assert.deepEqual(d.removed, ['C']);
  assert.deepEqual(d.cameOnline, ['B']);
  assert.deepEqual(d.wentOffline, ['A']);
  assert.deepEqual(d.readingsChanged, ['A', 'D']);
  assert.deepEqual(d.renamed, ['B']);
  assert.equal(d.total, 5);
});

test('missing or malformed inputs are empty states, never a throw', () => {
  assert.equal(diffModules(undefined, undefined).total, 0);
  assert.deepEqual(diffModules({}, { modules: [{ moduleId: 'X' }, null] }).added, ['X']);
  assert.deepEqual(diffModules(client, {}).removed, ['A', 'B', 'C', 'D']);
  // an id like a prototype key is still a module id
  assert.deepEqual(diffModules({ modules: {} }, { modules: [{ moduleId: 'constructor' }] }).added, ['constructor']);
});

test('the summary names each kind of change in the page language, none when nothing changed', async () => {
  const { syncSummary } = await import('../../static/js/sync-diff.js');
  const { t, setLanguage } = await import('../../static/js/strings.js');
  setLanguage('en');
  assert.equal(syncSummary(diffModules(client, { modules: [] }), t).includes('4 removed'), true);
  const d = diffModules(client, {
    modules: [
      { moduleId: 'A', name: 'Alpha', online: false, readings: { t: 20.5, h: 41 } },
      { moduleId: 'B', name: 'Beta', online: false, readings: { t: 18 } },
      { moduleId: 'C', name: 'Gamma', online: true, readings: {} },
      { moduleId: 'D', name: 'Delta', online: true, readings: { t: 1 } },
    ],
  });
  assert.equal(
    syncSummary(d, t),
    'Back online: 1 module changed while the connection was down (1 went offline, 1 with new readings).',
  );
  const unchanged = {
    modules: Object.entries(client.modules).map(([moduleId, m]) => ({ moduleId, ...m, readings: { ...m.readings } })),
  };
  assert.equal(syncSummary(diffModules(client, unchanged), t), null, 'nothing changed: no message');
  setLanguage('fr');
  assert.match(syncSummary(d, t), /^Connexion rétablie : 1 module a changé/);
  setLanguage('en');
});
