// The modules page: the user's modules as live cards (admins see every module).
//
// Rendering: the first snapshot is built in one DocumentFragment; afterwards events only change
// the model and mark what is dirty; one requestAnimationFrame flush writes the changed nodes.
// Sparklines (canvas) are drawn only for cards in view (IntersectionObserver), at most once per
// frame; "last seen" and the sparklines' time axis move once a second, for visible cards only.
// First paint (500 cards): a card is one template clone with its nodes found by position, no
// per-card string lookups, Intl formatting or canvas; each `[data-sparkline]` box gets its canvas
// when the card first scrolls into view (after the first paint), the "last seen" tooltip too.

import { boot, startStream, toast, el, handleAuthError, showPassword, setupPasswordPanel } from './chrome.js';
import { get, post, patch, del, prefetched, ApiError } from './api.js';
import { t } from './strings.js';
import { formatReadingParts, readingLabel, compareReadingNames, parseTime, lastSeenText } from './format.js';
import { Ring, drawSparkline } from './sparkline.js';
import { diffModules, syncSummary } from './sync-diff.js';

const SPARK_WINDOW_MS = 5 * 60 * 1000;
const SPARK_POINTS = 300;

// dirty flags
const HEAD = 1;
const STATUS = 2;
const READINGS = 4;
const LAST_SEEN = 8;
const SPARKS = 16;
const ALL = HEAD | STATUS | READINGS | LAST_SEEN | SPARKS;

const $ = (id) => document.getElementById(id);

/** moduleId -> entry { id, data, card, refs, readings: Map, flags, changed: Set, visible, matches } */
const entries = new Map();
/** entries in display order (name, then id) */
let order = [];
const dirty = new Set();
let frame = 0;
let summaryDirty = false;
let filterDirty = false;
let firstPaintMs = null;
let stream = null;
/** What the last resync after a reconnect found changed (sync-diff.js), for stats(). */
let lastSync = null;
let user = null;
const filter = { text: '', status: 'all' };

// ------------------------------------------------------------------ model

function normalise(m) {
  return {
    moduleId: String(m.moduleId),
    name: m.name ?? String(m.moduleId),
    type: m.type ?? '',
    ownerId: m.ownerId ?? null,
    online: !!m.online,
    stale: m.stale === undefined ? !m.online : !!m.stale,
    lastSeen: parseTime(m.lastSeen),
    readings: { ...(m.readings || {}) },
    rev: typeof m.rev === 'number' ? m.rev : 0,
    fw: m.fw ?? null,
    transport: m.transport ?? null,
    offlineReason: null,
  };
}

// Names sort with Intl.Collator (numeric, case- and accent-insensitive). Creating one costs
// 10-20 ms (ICU data) before the first paint, so names of ASCII letters, digits and spaces (the
// usual "Station 12") use `naturalCompare`, which orders those exactly as the collator does in
// the root, English and French collations; any other name switches to the collator.
let collator = null;
const SIMPLE_NAME = /^[A-Za-z0-9 ]*$/;
const simpleLocale = typeof navigator !== 'undefined' && /^(en|fr)\b/i.test(navigator.language || '');

function compareNames(a, b) {
  if (!collator) {
    if (simpleLocale && SIMPLE_NAME.test(a) && SIMPLE_NAME.test(b)) return naturalCompare(a, b);
    collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  }
  return collator.compare(a, b);
}

const isDigit = (c) => c >= 48 && c <= 57;

/** Intl.Collator(numeric, sensitivity base) order for strings of [A-Za-z0-9 ] only. */
function naturalCompare(a, b) {
  const la = a.length;
  const lb = b.length;
  let i = 0;
  let j = 0;
  while (i < la && j < lb) {
    let ca = a.charCodeAt(i);
    let cb = b.charCodeAt(j);
    const da = isDigit(ca);
    const db = isDigit(cb);
    if (da && db) {
      // digit runs compare by value (leading zeros ignored)
      while (i < la && a.charCodeAt(i) === 48) i++;
      while (j < lb && b.charCodeAt(j) === 48) j++;
      let ea = i;
      while (ea < la && isDigit(a.charCodeAt(ea))) ea++;
      let eb = j;
      while (eb < lb && isDigit(b.charCodeAt(eb))) eb++;
      if (ea - i !== eb - j) return ea - i < eb - j ? -1 : 1;
      for (; i < ea; i++, j++) {
        const x = a.charCodeAt(i);
        const y = b.charCodeAt(j);
        if (x !== y) return x < y ? -1 : 1;
      }
      continue;
    }
    // space < digits < letters; letters case-insensitively
    const ra = ca === 32 ? 0 : da ? 1 : 2;
    const rb = cb === 32 ? 0 : db ? 1 : 2;
    if (ra !== rb) return ra < rb ? -1 : 1;
    if (ra === 2) {
      ca |= 32;
      cb |= 32;
      if (ca !== cb) return ca < cb ? -1 : 1;
    }
    i++;
    j++;
  }
  return i < la ? 1 : j < lb ? -1 : 0;
}

function compareEntries(a, b) {
  return compareNames(a.data.name || a.id, b.data.name || b.id) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function sparkTime(ts) {
  const now = Date.now();
  const ms = parseTime(ts);
  return ms === null || ms > now ? now : ms;
}

function pushReadings(entry, readings, time) {
  for (const name in readings) {
    const value = readings[name];
    let r = entry.readings.get(name);
    if (!r) {
      r = { ring: new Ring(SPARK_POINTS), row: null };
      entry.readings.set(name, r);
    }
    r.ring.push(time, value);
  }
}

function newEntry(m) {
  const data = normalise(m);
  const entry = { id: data.moduleId, data, card: null, refs: null, readings: new Map(), flags: 0, changed: new Set(), visible: false, matches: true };
  pushReadings(entry, data.readings, data.lastSeen ?? Date.now());
  return entry;
}

// ------------------------------------------------------------------ DOM

let template = null;

function cardTemplate() {
  if (template) return template;
  template = el('article', { class: 'module', 'data-online': 'false', 'data-rev': '0' }, [
    el('header', { class: 'module-head' }, [
      el('div', { class: 'module-title' }, [
        el('h2', { class: 'module-name', 'data-role': 'name' }),
        el('div', { class: 'module-meta' }, [
          el('code', { class: 'module-id', 'data-role': 'id' }),
          el('span', { class: 'tag module-type', 'data-role': 'type' }),
        ]),
      ]),
      el('span', { class: 'badge', 'data-role': 'status' }),
    ]),
    el('div', { class: 'module-sub' }, [
      el('span', { class: 'last-seen', 'data-role': 'last-seen' }),
      el('span', { class: 'fw', 'data-role': 'fw' }),
    ]),
    el('div', { class: 'readings', 'data-role': 'readings' }),
    el('p', { class: 'no-readings', 'data-role': 'no-readings', text: t('noReadings') }),
    el('footer', { class: 'module-actions' }, [
      el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'rename', text: t('rename') }),
      el('button', { type: 'button', class: 'btn btn-small btn-ghost btn-danger', 'data-action': 'remove', text: t('remove') }),
    ]),
  ]);
  // an (empty) text node in each text field: a new card's texts are written with `.data`
  for (const role of ['name', 'id', 'type', 'status', 'last-seen', 'fw']) {
    template.querySelector(`[data-role="${role}"]`).append(document.createTextNode(''));
  }
  return template;
}

/** Card templates with their reading rows, by the sorted reading names (a fleet has a few kinds). */
const cardTemplates = new Map();

function cardFor(names) {
  const key = names.join('\n');
  let tpl = cardTemplates.get(key);
  if (!tpl) {
    if (cardTemplates.size >= 32) return null;
    tpl = cardTemplate().cloneNode(true);
    const readings = tpl.firstChild.nextSibling.nextSibling;
    for (const name of names) readings.append(buildReadingRow(name).row);
    cardTemplates.set(key, tpl);
  }
  return tpl.cloneNode(true);
}

function buildCard(entry, now = Date.now()) {
  // a new card renders every reading, not only those changed while it had none
  entry.changed.clear();
  const names = Object.keys(entry.data.readings).sort(compareReadingNames);
  const keyed = cardFor(names);
  const card = keyed || cardTemplate().cloneNode(true);
  card.setAttribute('data-module-id', entry.id);
  // the template's nodes by position (see cardTemplate; no whitespace nodes, no querySelector)
  const head = card.firstChild;
  const title = head.firstChild;
  const name = title.firstChild;
  const id = name.nextSibling.firstChild;
  const sub = head.nextSibling;
  const readings = sub.nextSibling;
  entry.card = card;
  entry.refs = {
    name,
    id,
    type: id.nextSibling,
    status: title.nextSibling,
    lastSeen: sub.firstChild,
    fw: sub.lastChild,
    readings,
    empty: readings.nextSibling,
  };
  id.firstChild.data = entry.id;
  if (keyed) {
    // the rows the template brought
    let row = readings.firstChild;
    for (const name of names) {
      let r = entry.readings.get(name);
      if (!r) entry.readings.set(name, (r = { ring: new Ring(SPARK_POINTS), row: null }));
      const value = row.firstChild.nextSibling;
      r.row = { row, value, num: value.firstChild, unit: value.lastChild, spark: value.nextSibling, canvas: null };
      row = row.nextSibling;
    }
    renderNew(entry, now, names);
  } else {
    entry.flags = ALL;
    render(entry, now);
  }
  entry.matches = matches(entry);
  if (!entry.matches) card.hidden = true;
  if (observer) observer.observe(card);
  return card;
}

let rowTemplate = null;

function buildReadingRow(name) {
  if (!rowTemplate) {
    rowTemplate = el('div', { class: 'reading' }, [
      el('span', { class: 'reading-label' }),
      el('span', { class: 'reading-value' }, [el('span', { class: 'num' }, [document.createTextNode('')]), el('span', { class: 'unit' }, [document.createTextNode('')])]),
      // the sparkline's box; its canvas is created on the first draw (card in view)
      el('span', { class: 'spark', 'aria-hidden': 'true' }),
    ]);
  }
  const row = rowTemplate.cloneNode(true);
  row.setAttribute('data-reading-name', name);
  const label = row.firstChild;
  const value = label.nextSibling;
  const spark = value.nextSibling;
  label.textContent = labelOf(name);
  value.lastChild.firstChild.data = formatReadingParts(name, 0).unit;
  value.setAttribute('data-reading', name);
  spark.setAttribute('data-sparkline', name);
  return { row, value, num: value.firstChild, unit: value.lastChild, spark, canvas: null };
}

const labels = new Map();
function labelOf(name) {
  let label = labels.get(name);
  if (label === undefined) labels.set(name, (label = readingLabel(name)));
  return label;
}

/** The strings every card uses, looked up once (the language is fixed for the page's life). */
let str = null;
function strings() {
  return (str ??= { online: t('online'), offline: t('offline'), staleHint: t('staleHint'), offlineReason: t('offlineReason') || {} });
}

/** lastSeenText, memoised by whole seconds ago (500 cards share a handful of texts). */
const seenTexts = new Map();
function lastSeenLabel(ms, now) {
  if (ms === null || ms === undefined) return lastSeenText(null, now);
  const s = Math.max(0, Math.floor((now - ms) / 1000));
  let text = seenTexts.get(s);
  if (text === undefined) {
    if (seenTexts.size > 1000) seenTexts.clear();
    seenTexts.set(s, (text = lastSeenText(now - s * 1000, now)));
  }
  return text;
}

const fwTexts = new Map();
function firmwareText(fw) {
  let text = fwTexts.get(fw);
  if (text === undefined) {
    if (fwTexts.size > 100) fwTexts.clear();
    fwTexts.set(fw, (text = t('firmware', { fw })));
  }
  return text;
}

function setTitle(node, title) {
  if (node.title !== title) node.title = title;
}

/**
 * A new card's first render (what `render` with ALL does to a template clone, for a card not in
 * view yet), written straight into the template's text nodes: no reads, no node replacements.
 */
function renderNew(entry, now, names) {
  const { data, refs, card } = entry;
  const s = strings();
  refs.name.firstChild.data = data.name || data.moduleId;
  if (data.type) refs.type.firstChild.data = data.type;
  else refs.type.hidden = true;
  const online = data.online;
  const stale = !online || data.stale;
  if (online) card.setAttribute('data-online', 'true');
  card.setAttribute('data-rev', String(data.rev));
  let cls = 'module';
  if (!online) cls += ' is-offline';
  if (stale && names.length) cls += ' is-stale';
  if (cls !== 'module') card.className = cls;
  refs.status.firstChild.data = online ? s.online : s.offline;
  refs.status.className = online ? 'badge badge-online' : 'badge badge-offline';
  if (!online && data.offlineReason) refs.status.title = s.offlineReason[data.offlineReason] || data.offlineReason;
  if (!online) refs.readings.title = s.staleHint;
  card.setAttribute('data-stale', stale ? 'true' : 'false');
  // an offline module's readings are its last known values (kept across hub restarts): say so
  if (!online && names.length) refs.readings.setAttribute('data-last-known', s.staleHint);
  if (data.fw) refs.fw.firstChild.data = firmwareText(data.fw);
  else refs.fw.hidden = true;
  for (const name of names) {
    const row = entry.readings.get(name).row;
    const raw = data.readings[name];
    const parts = formatReadingParts(name, raw);
    row.num.firstChild.data = parts.value;
    const unit = row.unit.firstChild;
    if (unit.data !== parts.unit) unit.data = parts.unit;
    row.value.setAttribute('data-value', String(raw));
  }
  if (names.length) refs.empty.hidden = true;
  else refs.readings.hidden = true;
  refs.lastSeen.firstChild.data = lastSeenLabel(data.lastSeen, now);
  entry.flags = 0;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

/** Writes the dirty parts of one card. */
function render(entry, now) {
  const { data, refs, card } = entry;
  const f = entry.flags;
  entry.flags = 0;
  if (f & HEAD) {
    setText(refs.name, data.name || data.moduleId);
    setText(refs.type, data.type || '');
    if (refs.type.hidden !== !data.type) refs.type.hidden = !data.type;
  }
  if (f & STATUS) {
    const s = strings();
    const online = data.online;
    setAttr(card, 'data-online', online ? 'true' : 'false');
    setText(refs.status, online ? s.online : s.offline);
    const badge = online ? 'badge badge-online' : 'badge badge-offline';
    if (refs.status.className !== badge) refs.status.className = badge;
    setTitle(refs.status, !online && data.offlineReason ? s.offlineReason[data.offlineReason] || data.offlineReason : '');
    card.classList.toggle('is-offline', !online);
    const stale = !online || data.stale;
    let hasReadings = false;
    for (const _ in data.readings) {
      hasReadings = true;
      break;
    }
    card.classList.toggle('is-stale', stale && hasReadings);
    setAttr(card, 'data-stale', stale ? 'true' : 'false');
    setTitle(refs.readings, !online ? s.staleHint : '');
    if (!online && hasReadings) setAttr(refs.readings, 'data-last-known', s.staleHint);
    else if (refs.readings.hasAttribute('data-last-known')) refs.readings.removeAttribute('data-last-known');
    setText(refs.fw, data.fw ? firmwareText(data.fw) : '');
    if (refs.fw.hidden !== !data.fw) refs.fw.hidden = !data.fw;
  }
  setAttr(card, 'data-rev', String(data.rev));
  if (f & READINGS) renderReadings(entry);
  if (f & LAST_SEEN) {
    setText(refs.lastSeen, lastSeenLabel(data.lastSeen, now));
    // the tooltip (Intl formatting) only for cards in view: the observer marks LAST_SEEN on entry
    if (entry.visible) setTitle(refs.lastSeen, data.lastSeen === null ? '' : new Date(data.lastSeen).toLocaleString());
  }
  if (f & SPARKS && entry.visible) drawSparks(entry, now);
}

function renderReadings(entry) {
  const { data, refs } = entry;
  let names;
  if (entry.changed.size) {
    names = [...entry.changed];
    entry.changed.clear();
  } else {
    names = Object.keys(data.readings).sort(compareReadingNames);
  }
  let misplaced = false;
  for (const name of names) {
    let r = entry.readings.get(name);
    if (!(name in data.readings)) {
      if (r && r.row) {
        r.row.row.remove();
        r.row = null;
      }
      continue;
    }
    if (!r) {
      r = { ring: new Ring(SPARK_POINTS), row: null };
      entry.readings.set(name, r);
    }
    if (!r.row) {
      const last = refs.readings.lastElementChild;
      if (last && compareReadingNames(name, last.dataset.readingName) < 0) misplaced = true;
      r.row = buildReadingRow(name);
      refs.readings.append(r.row.row);
    }
    const raw = data.readings[name];
    const parts = formatReadingParts(name, raw);
    setText(r.row.num, parts.value);
    setText(r.row.unit, parts.unit);
    setAttr(r.row.value, 'data-value', String(raw));
  }
  if (misplaced) {
    const rows = Array.from(refs.readings.children);
    rows.sort((a, b) => compareReadingNames(a.dataset.readingName, b.dataset.readingName));
    for (const row of rows) refs.readings.append(row);
  }
  const none = refs.readings.children.length === 0;
  if (refs.empty.hidden !== !none) refs.empty.hidden = !none;
  if (refs.readings.hidden !== none) refs.readings.hidden = none;
}

function drawSparks(entry, now) {
  const style = sparkStyle(entry.data.online);
  for (const r of entry.readings.values()) {
    if (!r.row) continue;
    const size = sparkSize(r.row.spark);
    if (!r.row.canvas) {
      r.row.canvas = document.createElement('canvas');
      r.row.canvas.width = size ? Math.round(size.width * (devicePixelRatio || 1)) : 96;
      r.row.canvas.height = size ? Math.round(size.height * (devicePixelRatio || 1)) : 26;
      r.row.spark.append(r.row.canvas);
    }
    drawSparkline(r.row.canvas, r.ring, now, SPARK_WINDOW_MS, style, size);
  }
}

/**
 * The sparkline box's size (fixed in style.css), measured once: reading it per canvas, between
 * the flush's DOM writes, forced a layout per sparkline (140 for a first screen of cards).
 */
let sparkBox = null;
function sparkSize(box) {
  if (!sparkBox) {
    const width = box.clientWidth;
    const height = box.clientHeight;
    if (!width || !height) return null; // not laid out (hidden): measure on a later draw
    sparkBox = { width, height };
  }
  return sparkBox;
}

let styleCache = null;
function sparkStyle(online) {
  if (!styleCache) {
    const cs = getComputedStyle(document.documentElement);
    styleCache = {
      on: { stroke: cs.getPropertyValue('--spark').trim() || '#4da3ff', fill: cs.getPropertyValue('--spark-fill').trim() || 'rgba(77,163,255,0.12)' },
      off: { stroke: cs.getPropertyValue('--text-faint').trim() || '#5c6773', fill: null, carry: false },
    };
    watchTheme();
  }
  return online ? styleCache.on : styleCache.off;
}

/** One listener for the page's life (the cache is rebuilt on every switch, the listener is not). */
let themeWatched = false;
function watchTheme() {
  if (themeWatched || typeof matchMedia !== 'function') return;
  themeWatched = true;
  matchMedia('(prefers-color-scheme: light)').addEventListener?.('change', () => {
    styleCache = null;
    for (const e of entries.values()) mark(e, SPARKS);
  });
}

// ------------------------------------------------------------ scheduling

// A hidden tab gets no animation frames (Chromium may also report a headless or occluded
// window hidden), so a timer backs the frame up: the DOM (and whatever reads it: a screen
// reader, the test hooks, the tab coming back) stays current. Whichever fires first flushes.
const HIDDEN_FLUSH_MS = 250;
let frameTimer = 0;

function schedule() {
  if (frame) return;
  frame = requestAnimationFrame(flush);
  frameTimer = setTimeout(flush, HIDDEN_FLUSH_MS);
}

function mark(entry, flags) {
  entry.flags |= flags;
  dirty.add(entry);
  schedule();
}

function flush() {
  cancelAnimationFrame(frame);
  clearTimeout(frameTimer);
  frame = 0;
  frameTimer = 0;
  const now = Date.now();
  if (filterDirty) {
    filterDirty = false;
    ensureCards();
    for (const entry of entries.values()) applyMatch(entry);
    summaryDirty = true;
  }
  for (const entry of dirty) {
    if (!entry.card) {
      // not built yet: its card will render from the model; the summary counts it now
      const m = matches(entry);
      if (m !== entry.matches) {
        entry.matches = m;
        summaryDirty = true;
      }
      continue;
    }
    render(entry, now);
    if (filter.status !== 'all' || filter.text) applyMatch(entry);
  }
  dirty.clear();
  if (summaryDirty) {
    summaryDirty = false;
    renderSummary();
  }
}

function tick() {
  for (const entry of entries.values()) if (entry.visible) mark(entry, LAST_SEEN | SPARKS);
}

// ------------------------------------------------------------ filter

function matches(entry) {
  const d = entry.data;
  if (filter.status === 'online' && !d.online) return false;
  if (filter.status === 'offline' && d.online) return false;
  if (!filter.text) return true;
  const hay = `${d.name}\u0000${d.moduleId}\u0000${d.type}`.toLowerCase();
  return hay.includes(filter.text);
}

function applyMatch(entry) {
  const m = matches(entry);
  if (m !== entry.matches) {
    entry.matches = m;
    entry.card.hidden = !m;
    summaryDirty = true;
  }
}

function renderSummary() {
  let online = 0;
  let shown = 0;
  for (const e of entries.values()) {
    if (e.data.online) online++;
    if (e.matches) shown++;
  }
  const total = entries.size;
  let text = total === 1 ? t('summaryOne', { online }) : t('summary', { total, online });
  if (shown !== total) text += ` · ${t('summaryFiltered', { shown, total })}`;
  setText($('modules-summary'), text);
  const empty = $('modules-empty');
  empty.hidden = shown !== 0;
  setText(empty, total === 0 ? t('noModules') : t('noMatch'));
}

// ------------------------------------------------------------ first build in chunks

/**
 * Index in `order` from which the first snapshot's cards are not built yet; `Infinity` when
 * every entry has its card (then `order` may change freely: entries added later get theirs).
 */
let unbuiltFrom = Infinity;
/** Cards built per task after the first screen (~10 ms each on a slow core). */
const REST_CHUNK = 100;

/** Columns of the grid at this width (style.css: at least 300 px each). */
function gridColumns() {
  return Math.max(1, Math.floor((innerWidth || 1366) / 300));
}

/**
 * A first guess of the cards on the first screen: rows of a card with a few readings (~240 px).
 * Cards past the fold still cost style and layout in the first frame, so it aims low, and
 * `fillFirstScreen` adds rows while the last card still starts on screen.
 */
function cardsOnFirstScreen() {
  return Math.max(8, gridColumns() * Math.ceil((innerHeight || 900) / 240));
}

/** Rows `fillFirstScreen` may add to the guess (a filter can hide every card built so far). */
const MAX_EXTRA_ROWS = 6;

/**
 * Builds more rows of cards while the last card shown (filtered-out cards are hidden) still
 * starts above the fold: one layout per check, at most MAX_EXTRA_ROWS rows.
 */
function fillFirstScreen(grid, now) {
  for (let rows = 0; rows < MAX_EXTRA_ROWS && unbuiltFrom < order.length; rows++) {
    let last = null;
    for (let i = unbuiltFrom - 1; i >= 0 && !last; i--) if (order[i].matches) last = order[i].card;
    if (last && last.getBoundingClientRect().top >= innerHeight) return;
    const end = Math.min(order.length, unbuiltFrom + gridColumns());
    const fragment = document.createDocumentFragment();
    for (let i = unbuiltFrom; i < end; i++) fragment.append(buildCard(order[i], now));
    grid.append(fragment);
    unbuiltFrom = end;
  }
}

/**
 * Runs `fn` once the next frame has been produced: at the start of the frame after it, so the
 * work does not compete with painting that one (or soon, in a hidden tab that gets no frames).
 */
function afterPaint(fn) {
  let done = false;
  const once = () => {
    if (!done) {
      done = true;
      fn();
    }
  };
  requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(once, 0)));
  // a visible tab gets its frames (unless it is hidden meanwhile, or a frame is very late)
  setTimeout(once, document.hidden ? HIDDEN_FLUSH_MS : AFTER_PAINT_LATEST_MS);
}

/** How long `afterPaint` waits for frames in a tab that was visible when it was called. */
const AFTER_PAINT_LATEST_MS = 1000;

/** Builds the next chunk of missing cards, in display order, and schedules the one after. */
function buildRest() {
  const end = Math.min(order.length, unbuiltFrom + REST_CHUNK);
  if (unbuiltFrom >= end) return;
  const fragment = document.createDocumentFragment();
  const now = Date.now();
  for (let i = unbuiltFrom; i < end; i++) if (!order[i].card) fragment.append(buildCard(order[i], now));
  $('module-list').append(fragment);
  unbuiltFrom = end;
  if (unbuiltFrom < order.length) setTimeout(buildRest, 0);
  else {
    unbuiltFrom = Infinity;
    performance.mark?.('mc:grid-complete');
  }
}

/** Builds every missing card now: before anything that moves, removes or hides cards. */
function ensureCards() {
  while (unbuiltFrom < order.length) buildRest();
}

// ------------------------------------------------------------ snapshot

function snapshotList(snapshot) {
  const list = snapshot && Array.isArray(snapshot.modules) ? snapshot.modules : [];
  return list.filter((m) => m && m.moduleId !== undefined);
}

/** Replaces the state with a snapshot, reusing cards: only changed nodes are written. */
function applySnapshot(snapshot) {
  const list = snapshotList(snapshot);
  const grid = $('module-list');
  if (entries.size === 0) {
    performance.mark?.('mc:grid-build');
    const fragment = document.createDocumentFragment();
    for (const m of list) {
      const entry = newEntry(m);
      entries.set(entry.id, entry);
    }
    performance.mark?.('mc:grid-model');
    order = [...entries.values()];
    // one look at the names instead of two per comparison (see compareNames)
    if (!collator && simpleLocale && order.every((e) => SIMPLE_NAME.test(e.data.name || e.id))) {
      order.sort((a, b) => naturalCompare(a.data.name || a.id, b.data.name || b.id) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    } else order.sort(compareEntries);
    performance.mark?.('mc:grid-sorted');
    // The cards that fit on the first screen now, the rest after that frame (buildRest): the
    // user sees a complete screen sooner, and all cards exist a few tasks later.
    const now = Date.now();
    const first = Math.min(order.length, cardsOnFirstScreen());
    for (let i = 0; i < first; i++) fragment.append(buildCard(order[i], now));
    grid.append(fragment);
    for (let i = first; i < order.length; i++) order[i].matches = matches(order[i]);
    unbuiltFrom = first;
    fillFirstScreen(grid, now);
    performance.mark?.('mc:grid-built');
    if (unbuiltFrom < order.length) afterPaint(buildRest);
    else {
      unbuiltFrom = Infinity;
      performance.mark?.('mc:grid-complete');
    }
    summaryDirty = true;
    renderSummary();
    return;
  }
  const seen = new Set();
  for (const m of list) {
    const id = String(m.moduleId);
    seen.add(id);
    const entry = entries.get(id);
    if (!entry) {
      addEntry(m);
      continue;
    }
    const next = normalise(m);
    const d = entry.data;
    let flags = 0;
    if (d.name !== next.name || d.type !== next.type) {
      d.name = next.name;
      d.type = next.type;
      flags |= HEAD;
      resort(entry);
    }
    d.ownerId = next.ownerId;
    // The snapshot is authoritative: the stream fetched it after joining, queued the live events
    // meanwhile and applies only those newer than it (revs restart with the hub: no rev guard here).
    {
      const changedReadings = Object.keys(next.readings).filter((n) => d.readings[n] !== next.readings[n]);
      const gone = Object.keys(d.readings).filter((n) => !(n in next.readings));
      if (changedReadings.length || gone.length) {
        pushReadings(entry, Object.fromEntries(changedReadings.map((n) => [n, next.readings[n]])), next.lastSeen ?? Date.now());
        d.readings = next.readings;
        for (const n of [...changedReadings, ...gone]) entry.changed.add(n);
        flags |= READINGS | SPARKS;
      }
      d.rev = next.rev;
    }
    if (d.online !== next.online || d.stale !== next.stale || d.fw !== next.fw) {
      d.online = next.online;
      d.stale = next.stale;
      d.fw = next.fw;
      if (d.online) d.offlineReason = null;
      flags |= STATUS | SPARKS;
      summaryDirty = true;
    }
    if (next.lastSeen !== null && next.lastSeen !== d.lastSeen) {
      d.lastSeen = next.lastSeen;
      flags |= LAST_SEEN;
    }
    if (flags) mark(entry, flags);
  }
  for (const id of [...entries.keys()]) if (!seen.has(id)) removeEntry(id);
  summaryDirty = true;
  schedule();
}

function addEntry(m) {
  ensureCards();
  const entry = newEntry(m);
  entries.set(entry.id, entry);
  const card = buildCard(entry);
  // sorted insert
  let i = order.findIndex((e) => compareEntries(entry, e) < 0);
  if (i === -1) i = order.length;
  const before = order[i];
  order.splice(i, 0, entry);
  $('module-list').insertBefore(card, before ? before.card : null);
  summaryDirty = true;
  schedule();
  return entry;
}

/** True while `entry` is the page's entry for its id (not removed, not replaced by a snapshot). */
function current(entry) {
  return entries.get(entry.id) === entry;
}

function resort(entry) {
  if (!current(entry)) return;
  ensureCards();
  const i = order.indexOf(entry);
  if (i !== -1) order.splice(i, 1);
  let j = order.findIndex((e) => compareEntries(entry, e) < 0);
  if (j === -1) j = order.length;
  order.splice(j, 0, entry);
  const next = order[j + 1];
  $('module-list').insertBefore(entry.card, next ? next.card : null);
}

/** Removes the module `id`, or with `only`, only when that entry object is still the page's. */
function removeEntry(id, only) {
  const entry = entries.get(id);
  if (!entry || (only && entry !== only)) return;
  ensureCards();
  entries.delete(id);
  dirty.delete(entry);
  const i = order.indexOf(entry);
  if (i !== -1) order.splice(i, 1);
  if (observer) observer.unobserve(entry.card);
  entry.card.remove();
  summaryDirty = true;
  schedule();
}

// ------------------------------------------------------------ events

/**
 * Resynchronises (fetches a snapshot) for events about modules the page does not know: one was
 * added or reassigned to us meanwhile; the snapshot has it. `trigger()` is throttled to one
 * resync per `intervalMs` (a module the snapshot never lists must not cause a snapshot storm);
 * `trigger(true)` resyncs at once. A trigger is never dropped: when throttled, or when the stream
 * cannot resync now (replaying `missed`: not live), one timer (at most one pending) retries
 * later. A snapshot whose fetch started after a trigger covers it (`snapshotStarted()` at the
 * fetch, `snapshotApplied(token)` once applied) and cancels the pending retry.
 * @param {object} o
 * @param {() => ({synced: boolean, resync(): void} | null)} o.getStream
 */
export function createUnknownResync({ getStream, intervalMs = 10000, retryMs = 1000, now = () => Date.now(), setTimeout: setT = (fn, ms) => globalThis.setTimeout(fn, ms), clearTimeout: clearT = (id) => globalThis.clearTimeout(id) }) {
  let last = -Infinity;
  let timer = null;
  let due = Infinity;
  let triggers = 0; // triggers so far
  let covered = 0; // triggers covered by an applied snapshot
  let urgent = false; // an immediate trigger waits (not live yet): no throttle for it
  const clearTimer = () => {
    if (timer !== null) clearT(timer);
    timer = null;
    due = Infinity;
  };
  const cancel = () => {
    clearTimer();
    urgent = false;
  };
  const defer = (ms) => {
    const at = now() + ms;
    if (timer !== null && due <= at) return; // the pending timer comes first
    clearTimer();
    due = at;
    timer = setT(() => {
      timer = null;
      due = Infinity;
      if (covered >= triggers) {
        urgent = false;
        return;
      }
      const wait = urgent ? 0 : last + intervalMs - now();
      if (wait > 0) defer(wait);
      else if (!attempt()) defer(retryMs);
    }, Math.max(0, ms));
  };
  /** Resyncs when the stream is live (its resync() is a no-op while waiting for or replaying rt_session). */
  const attempt = () => {
    const stream = getStream();
    if (!stream || !stream.synced) return false;
    last = now();
    cancel();
    stream.resync();
    return true;
  };
  return {
    trigger(immediate = false) {
      triggers += 1;
      const wait = immediate ? 0 : last + intervalMs - now();
      if (wait <= 0 && attempt()) return;
      // throttled: when allowed; not live (replay): right after it (then every retryMs)
      defer(Math.max(0, wait));
      if (immediate) urgent = true;
    },
    snapshotStarted() {
      return triggers;
    },
    snapshotApplied(token) {
      if (typeof token === 'number' && token > covered) covered = token;
      if (covered >= triggers) cancel();
    },
    get pending() {
      return timer !== null;
    },
  };
}

const unknownResync = createUnknownResync({ getStream: () => stream });

function known(payload) {
  const entry = payload && entries.get(String(payload.moduleId));
  if (!entry && payload && payload.moduleId !== undefined) unknownResync.trigger();
  return entry;
}

/** rt_module_online: online, but stale (greyed readings) until its next telemetry, as the hub says. */
export function applyOnline(d, p) {
  d.online = true;
  d.offlineReason = null;
  if (p.lastSeen) d.lastSeen = parseTime(p.lastSeen) ?? d.lastSeen;
  if (p.fw) d.fw = p.fw;
}

/** rt_module_offline */
export function applyOffline(d, p) {
  d.online = false;
  d.stale = true;
  d.offlineReason = p.reason || null;
}

/** rt_telemetry_updated's status part: fresh telemetry, online and no longer stale. True when that changed. */
export function applyTelemetryStatus(d) {
  if (d.online && !d.stale) return false;
  d.online = true;
  d.stale = false;
  d.offlineReason = null;
  return true;
}

const handlers = {
  rt_module_online(p) {
    const entry = known(p);
    if (!entry) return;
    applyOnline(entry.data, p);
    summaryDirty = true;
    mark(entry, STATUS | LAST_SEEN | SPARKS);
  },
  rt_module_offline(p) {
    const entry = known(p);
    if (!entry) return;
    applyOffline(entry.data, p);
    summaryDirty = true;
    mark(entry, STATUS | SPARKS);
  },
  rt_telemetry_updated(p) {
    const entry = known(p);
    if (!entry) return;
    const d = entry.data;
    const telemetry = p.telemetry && typeof p.telemetry === 'object' ? p.telemetry : {};
    const time = sparkTime(p.ts);
    pushReadings(entry, telemetry, time);
    for (const name in telemetry) {
      d.readings[name] = telemetry[name];
      entry.changed.add(name);
    }
    if (typeof p.rev === 'number') d.rev = p.rev;
    if (p.ts) d.lastSeen = parseTime(p.ts) ?? d.lastSeen;
    let flags = READINGS | LAST_SEEN | SPARKS;
    if (applyTelemetryStatus(d)) {
      summaryDirty = true;
      flags |= STATUS;
    }
    mark(entry, flags);
  },
  rt_module_added(p) {
    if (!p || p.moduleId === undefined || entries.has(String(p.moduleId))) return;
    addEntry({ moduleId: p.moduleId, name: p.name, type: p.type, ownerId: p.userId, online: false, readings: {} });
  },
  rt_module_updated(p) {
    const entry = p && entries.get(String(p.moduleId));
    if (!entry) {
      // a module reassigned to us arrives as an update: fetch the snapshot now (not throttled)
      if (p && p.moduleId !== undefined) unknownResync.trigger(true);
      return;
    }
    if (p.name !== undefined) entry.data.name = p.name;
    if (p.type !== undefined) entry.data.type = p.type;
    resort(entry);
    mark(entry, HEAD);
  },
  rt_module_removed(p) {
    if (p && p.moduleId !== undefined) removeEntry(String(p.moduleId));
  },
  rt_user_profile_updated(p) {
    if (p && user && p.id === user.id && p.name) $('user-name').textContent = p.name;
  },
};

// ------------------------------------------------------------ actions

function errorText(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) return t('networkError');
    return err.message || t('serverError', { status: err.status });
  }
  return String(err?.message || err);
}

function setupAddForm() {
  const button = $('add-module-button');
  const form = $('add-module-form');
  const error = form.querySelector('[data-role="form-error"]');
  const submit = form.querySelector('[data-role="submit"]');
  // `refocus`: closing gives the focus back to the button that opened the form
  const open = (show, refocus = true) => {
    const wasOpen = !form.hidden;
    form.hidden = !show;
    button.setAttribute('aria-expanded', String(show));
    if (show && user?.isAdmin) fillOwners(form);
    if (show) form.elements.id.focus();
    else {
      form.reset();
      error.hidden = true;
      if (wasOpen && refocus) button.focus();
    }
  };
  button.addEventListener('click', () => open(form.hidden));
  form.querySelector('[data-action="cancel-add"]').addEventListener('click', () => open(false));
  form.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !form.hidden) {
      ev.preventDefault();
      open(false);
    }
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const id = form.elements.id.value.trim();
    const name = form.elements.name.value.trim();
    const type = form.elements.type.value.trim();
    if (!id || !name) {
      error.textContent = `${t('moduleIdLabel')}, ${t('moduleNameLabel')}: ?`;
      error.hidden = false;
      return;
    }
    const body = { id, name };
    if (type) body.type = type;
    const owner = form.elements.ownerId;
    if (user?.isAdmin && owner.value) body.ownerId = Number(owner.value);
    submit.disabled = true;
    submit.textContent = t('registering');
    error.hidden = true;
    try {
      const res = await post('/api/modules', body);
      if (res && res.module && !entries.has(String(res.module.moduleId))) addEntry(res.module);
      open(false, false);
      // the panel takes the focus; closing it gives it back to "Add module"
      showPassword(res?.module?.moduleId ?? id, res?.password, button);
    } catch (err) {
      if (handleAuthError(err)) return;
      error.textContent = errorText(err);
      error.hidden = false;
    } finally {
      submit.disabled = false;
      submit.textContent = t('register');
    }
  });
}

/** Admins register modules for anyone: the owner select, filled from GET /api/users (default: me). */
async function fillOwners(form) {
  const field = form.querySelector('[data-role="owner-field"]');
  const select = form.elements.ownerId;
  if (select.options.length) return;
  try {
    const res = await get('/api/users');
    const users = (res?.users ?? []).filter((u) => !u.disabled);
    users.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    for (const u of users) {
      const opt = el('option', { value: String(u.id), text: `${u.name} <${u.email}>` });
      if (u.id === user.id) opt.selected = true;
      select.append(opt);
    }
    field.hidden = users.length === 0;
  } catch (err) {
    handleAuthError(err);
  }
}

function setupCardActions() {
  $('module-list').addEventListener('click', (ev) => {
    const target = ev.target.closest('[data-action]');
    if (!target) return;
    const card = target.closest('[data-module-id]');
    const entry = card && entries.get(card.dataset.moduleId);
    if (!entry) return;
    switch (target.dataset.action) {
      case 'rename':
        return startRename(entry);
      case 'cancel-rename':
        return endRename(entry, true);
      case 'remove':
        return askRemove(entry);
      case 'cancel-remove':
        return endRemove(entry, true);
      case 'confirm-remove':
        return confirmRemove(entry);
    }
  });
  $('module-list').addEventListener('submit', (ev) => {
    const form = ev.target.closest('[data-role="rename-form"]');
    if (!form) return;
    ev.preventDefault();
    const card = form.closest('[data-module-id]');
    const entry = card && entries.get(card.dataset.moduleId);
    if (entry) submitRename(entry, form);
  });
  $('module-list').addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    const card = ev.target.closest('[data-module-id]');
    const entry = card && entries.get(card.dataset.moduleId);
    if (entry) {
      endRename(entry, true);
      endRemove(entry, true);
    }
  });
}

function startRename(entry) {
  if (entry.card.querySelector('[data-role="rename-form"]')) return;
  const input = el('input', { class: 'input', name: 'name', value: entry.data.name, maxlength: '100', 'aria-label': t('moduleNameLabel') });
  const form = el('form', { class: 'rename-form', 'data-role': 'rename-form' }, [
    input,
    el('button', { type: 'submit', class: 'btn btn-small btn-primary', text: t('save') }),
    el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'cancel-rename', text: t('cancel') }),
  ]);
  entry.refs.name.hidden = true;
  entry.refs.name.after(form);
  input.focus();
  input.select();
}

/** Gives the focus back to the card's `[data-action=<action>]` button (the dialog's opener). */
function focusAction(entry, action) {
  if (!current(entry)) return;
  entry.card.querySelector(`.module-actions [data-action="${action}"]`)?.focus();
}

/** Closes the rename form; `refocus`: the focus goes back to the Rename button. */
function endRename(entry, refocus = false) {
  const form = entry.card.querySelector('[data-role="rename-form"]');
  if (!form) return;
  const hadFocus = form.contains(document.activeElement);
  form.remove();
  entry.refs.name.hidden = false;
  if (refocus || hadFocus) focusAction(entry, 'rename');
}

async function submitRename(entry, form) {
  const name = form.elements.name.value.trim();
  if (!name || name === entry.data.name) return endRename(entry, true);
  form.querySelectorAll('button, input').forEach((n) => (n.disabled = true));
  try {
    const res = await patch(`/api/modules/${encodeURIComponent(entry.id)}`, { name });
    // removed (rt_module_removed) or replaced (a snapshot) meanwhile: its card is gone
    if (!current(entry)) return;
    entry.data.name = res?.name ?? name;
    resort(entry);
    mark(entry, HEAD);
    endRename(entry, true);
  } catch (err) {
    if (handleAuthError(err)) return;
    if (!current(entry)) return;
    toast(t('renameFailed', { message: errorText(err) }), 'error');
    form.querySelectorAll('button, input').forEach((n) => (n.disabled = false));
    form.elements.name.focus();
  }
}

function askRemove(entry) {
  if (entry.card.querySelector('[data-role="confirm-remove"]')) return;
  const bar = el('div', { class: 'confirm-bar', 'data-role': 'confirm-remove' }, [
    el('span', { text: t('confirmRemove', { name: entry.data.name }) }),
    el('button', { type: 'button', class: 'btn btn-small btn-danger-solid', 'data-action': 'confirm-remove', text: t('confirmRemoveButton') }),
    el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'cancel-remove', text: t('cancel') }),
  ]);
  entry.card.append(bar);
  bar.querySelector('[data-action="confirm-remove"]').focus();
}

/** Closes the confirm bar; `refocus`: the focus goes back to the Remove button. */
function endRemove(entry, refocus = false) {
  const bar = entry.card.querySelector('[data-role="confirm-remove"]');
  if (!bar) return;
  const hadFocus = bar.contains(document.activeElement);
  bar.remove();
  if (refocus || hadFocus) focusAction(entry, 'remove');
}

async function confirmRemove(entry) {
  const bar = entry.card.querySelector('[data-role="confirm-remove"]');
  bar?.querySelectorAll('button').forEach((n) => (n.disabled = true));
  try {
    await del(`/api/modules/${encodeURIComponent(entry.id)}`);
    const name = entry.data.name;
    // this entry only: a module registered again with the same id meanwhile stays
    removeEntry(entry.id, entry);
    toast(t('removed', { name }), 'ok', 3000);
  } catch (err) {
    if (handleAuthError(err)) return;
    if (err instanceof ApiError && err.status === 404) {
      removeEntry(entry.id, entry);
      return;
    }
    if (!current(entry)) return;
    toast(t('removeFailed', { message: errorText(err) }), 'error');
    endRemove(entry, true);
  }
}

/** t(key), or `fallback` while strings.js lacks the key (t returns the key itself then). */
function label(key, fallback) {
  const text = t(key);
  return typeof text === 'string' && text !== key ? text : fallback;
}

function setupFilter() {
  const search = $('module-search');
  const select = $('module-filter');
  // accessible names (the labels are visually hidden; the placeholder is no label)
  const searchLabel = $('module-search-label');
  if (searchLabel) searchLabel.textContent = label('searchLabel', t('searchPlaceholder'));
  const filterLabel = $('module-filter-label');
  if (filterLabel) filterLabel.textContent = label('filterLabel', `${t('filterOnline')} / ${t('filterOffline')}`);
  const params = new URLSearchParams(location.search);
  if (params.get('q')) search.value = params.get('q');
  if (['online', 'offline'].includes(params.get('status'))) select.value = params.get('status');
  const update = () => {
    filter.text = search.value.trim().toLowerCase();
    filter.status = select.value;
    filterDirty = true;
    schedule();
  };
  search.addEventListener('input', update);
  select.addEventListener('change', update);
  filter.text = search.value.trim().toLowerCase();
  filter.status = select.value;
}

// ------------------------------------------------------------ visibility

let observer = null;
function setupObserver() {
  if (typeof IntersectionObserver !== 'function') return;
  observer = new IntersectionObserver(
    (records) => {
      for (const r of records) {
        const entry = entries.get(r.target.dataset.moduleId);
        if (!entry) continue;
        entry.visible = r.isIntersecting;
        if (entry.visible) mark(entry, LAST_SEEN | SPARKS);
      }
    },
    { rootMargin: '200px 0px' },
  );
}

// ------------------------------------------------------------ hooks

function state() {
  const modules = {};
  for (const [id, e] of entries) {
    modules[id] = { name: e.data.name, type: e.data.type, online: e.data.online, rev: e.data.rev, readings: { ...e.data.readings } };
  }
  return { modules };
}

// ------------------------------------------------------------ main

/** snapshot -> unknownResync.snapshotStarted() at its fetch */
const snapshotTokens = new WeakMap();

async function main() {
  performance.mark?.('mc:main');
  setupObserver();
  setupFilter();
  const snapshotPromise = prefetched('modules', '/api/modules');
  let ctx;
  try {
    ctx = await boot({ page: 'modules', extra: [snapshotPromise] });
  } catch {
    return;
  }
  user = ctx.user;
  performance.mark?.('mc:snapshot-fetched');
  const [first] = ctx.extra;
  if (first.ok) {
    applySnapshot(first.v);
    requestAnimationFrame(() => {
      firstPaintMs = performance.now();
    });
  } else if (!handleAuthError(first.e)) {
    const notice = $('modules-notice');
    notice.textContent = t('loadFailed');
    notice.hidden = false;
  }
  // The forms, the card actions and the stream once the first screen is painted: the grid
  // already shows the embedded (or prefetched) snapshot, and the stream resynchronises anyway.
  if (first.ok) afterPaint(() => startLive(ctx));
  else startLive(ctx);
}

function startLive(ctx) {
  setupAddForm();
  setupPasswordPanel();
  setupCardActions();
  stream = startStream({
    page: 'modules',
    config: ctx.config,
    handlers,
    fetchSnapshot: () => {
      // a snapshot fetched from now on has every module an earlier unknown event was about
      const token = unknownResync.snapshotStarted();
      return get('/api/modules').then((s) => {
        if (s && typeof s === 'object') snapshotTokens.set(s, token);
        return s;
      });
    },
    applySnapshot: (s) => {
      applySnapshot(s);
      if (s && typeof s === 'object') unknownResync.snapshotApplied(snapshotTokens.get(s));
      $('modules-notice').hidden = true;
      if (firstPaintMs === null) requestAnimationFrame(() => (firstPaintMs ??= performance.now()));
    },
    trackRevs: true,
    snapshotRevs: (s) => snapshotList(s).map((m) => [m.moduleId, m.rev]),
    getState: state,
    onSyncComplete: (snapshot, before) => {
      // After a reconnect that needed a snapshot (hub restart, long gap), tell the user what
      // changed meanwhile; the first sync after the page loaded is not news.
      if (!stream || stream.stats().reconnects === 0) return;
      lastSync = diffModules(before, snapshot);
      const message = syncSummary(lastSync, t);
      if (message) toast(message, 'info', 8000);
    },
    extraStats: () => ({ firstPaintMs, modules: entries.size, lastSync }),
  });
  setInterval(tick, 1000);
}

// Not in Node (tests/js import the pure helpers above).
if (typeof document !== 'undefined') main();
