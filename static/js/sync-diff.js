// What changed between the page's state before a resynchronisation and the hub's snapshot:
// ReconnectionManager's onSyncComplete(serverState, clientState) hands both over, and the
// modules page tells the user what happened while it was away. Pure, no DOM: unit-tested in
// tests/js/sync-diff.test.mjs.

/**
 * @param {{modules?: Record<string, {name?: string, online?: boolean, readings?: Record<string, number>}>}} [clientState]
 *   the page's model before the snapshot (`window.mc_dashboard.state()` shape)
 * @param {{modules?: Array<{moduleId: string, name?: string, online?: boolean, readings?: Record<string, number>}>}} [snapshot]
 *   `GET /api/modules`
 * @returns {{added: string[], removed: string[], cameOnline: string[], wentOffline: string[], readingsChanged: string[], renamed: string[], total: number}}
 */
export function diffModules(clientState, snapshot) {
  const before = (clientState && clientState.modules) || {};
  const list = snapshot && Array.isArray(snapshot.modules) ? snapshot.modules : [];
  const out = { added: [], removed: [], cameOnline: [], wentOffline: [], readingsChanged: [], renamed: [], total: 0 };
  const seen = new Set();
  for (const m of list) {
    if (!m || m.moduleId === undefined) continue;
    const id = String(m.moduleId);
    seen.add(id);
    const old = Object.prototype.hasOwnProperty.call(before, id) ? before[id] : undefined;
    if (!old) {
      out.added.push(id);
      continue;
    }
    if (old.online !== true && m.online === true) out.cameOnline.push(id);
    if (old.online === true && m.online !== true) out.wentOffline.push(id);
    if ((old.name ?? null) !== (m.name ?? null)) out.renamed.push(id);
    if (!sameReadings(old.readings, m.readings)) out.readingsChanged.push(id);
  }
  for (const id of Object.keys(before)) if (!seen.has(id)) out.removed.push(id);
  const changed = new Set([...out.added, ...out.removed, ...out.cameOnline, ...out.wentOffline, ...out.readingsChanged, ...out.renamed]);
  out.total = changed.size;
  return out;
}

function sameReadings(a, b) {
  const x = a || {};
  const y = b || {};
  const kx = Object.keys(x);
  if (kx.length !== Object.keys(y).length) return false;
  // Readings travel as f32 and are compared as received: any difference is a change.
  return kx.every((k) => Object.prototype.hasOwnProperty.call(y, k) && Object.is(x[k], y[k]));
}

/**
 * One sentence for the user about a resync's changes, or null when nothing changed.
 * @param {ReturnType<typeof diffModules>} diff
 * @param {(key: string, vars?: object) => string} t  strings.js's `t`
 */
export function syncSummary(diff, t) {
  if (!diff || diff.total === 0) return null;
  const parts = [
    ['syncCameOnline', diff.cameOnline],
    ['syncWentOffline', diff.wentOffline],
    ['syncReadings', diff.readingsChanged],
    ['syncAdded', diff.added],
    ['syncRemoved', diff.removed],
    ['syncRenamed', diff.renamed],
  ]
    .filter(([, ids]) => ids.length > 0)
    .map(([key, ids]) => t(key, { n: ids.length }));
  const details = parts.join(', ');
  return diff.total === 1 ? t('syncedChangesOne', { details }) : t('syncedChanges', { n: diff.total, details });
}
