// Pure formatting helpers shared by the pages (no DOM): readings with units, relative times.

import { t } from './strings.js';

/** Units and digits by reading name; anything else is shown with up to 3 significant decimals. */
export const READING_FORMATS = {
  temperature: { unit: '°C', digits: 1 },
  humidity: { unit: '%', digits: 1 },
  pressure: { unit: 'hPa', digits: 1 },
  battery: { unit: 'V', digits: 2 },
  rssi: { unit: 'dBm', digits: 0 },
};

const READING_ORDER = ['temperature', 'humidity', 'pressure', 'battery', 'rssi'];

/** `{ value: "21.5", unit: "°C" }` for display; `—` when there is no finite number. */
export function formatReadingParts(name, value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return { value: '—', unit: '' };
  const spec = READING_FORMATS[String(name).toLowerCase()];
  if (spec) return { value: value.toFixed(spec.digits), unit: spec.unit };
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  return { value: String(Number(value.toFixed(digits))), unit: '' };
}

/** "21.5 °C". */
export function formatReading(name, value) {
  const { value: v, unit } = formatReadingParts(name, value);
  return unit ? `${v} ${unit}` : v;
}

/** Human label of a reading name: known ones translated, others "wind_speed" → "Wind speed". */
export function readingLabel(name) {
  const known = t('readingLabels')[String(name).toLowerCase()];
  if (known) return known;
  const words = String(name).replace(/[_.-]+/g, ' ').trim();
  return words ? words.charAt(0).toUpperCase() + words.slice(1) : String(name);
}

/** Known readings first in a fixed order, then the others alphabetically. */
export function compareReadingNames(a, b) {
  const ia = READING_ORDER.indexOf(a.toLowerCase());
  const ib = READING_ORDER.indexOf(b.toLowerCase());
  if (ia !== -1 || ib !== -1) {
    if (ia === -1) return 1;
    if (ib === -1) return -1;
    return ia - ib;
  }
  return a.localeCompare(b);
}

/** Milliseconds since the epoch from an RFC 3339 string, Unix seconds or ms; null if none. */
export function parseTime(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'number') return Number.isFinite(value) ? (value < 1e11 ? value * 1000 : value) : null;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

/** "12 s ago" (no prefix); `justNow` under 2 s. */
export function ago(ms, now) {
  const s = Math.max(0, Math.floor((now - ms) / 1000));
  if (s < 2) return t('justNow');
  if (s < 60) return t('secondsAgo', { n: s });
  if (s < 3600) return t('minutesAgo', { n: Math.floor(s / 60) });
  if (s < 86400) return t('hoursAgo', { n: Math.floor(s / 3600) });
  return t('daysAgo', { n: Math.floor(s / 86400) });
}

/** "last seen 12 s ago" or "never seen". */
export function lastSeenText(ms, now) {
  return ms === null || ms === undefined ? t('neverSeen') : t('lastSeen', { ago: ago(ms, now) });
}

/** A rate or count for the stats panels: integers as is, rates with one decimal below 100. */
export function formatNumber(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return t('notAvailable');
  if (Number.isInteger(value)) return value.toLocaleString();
  return Math.abs(value) < 100 ? value.toFixed(1) : Math.round(value).toLocaleString();
}

/** "850 ms" or "2.3 s". */
export function formatDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return t('notAvailable');
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
