// Bounded time series and a small canvas line chart (no library): one Ring per reading keeps
// at most `capacity` points and nothing older than `windowMs` matters when drawing.

/** A fixed-capacity ring of (time ms, value) points, oldest overwritten first. */
export class Ring {
  constructor(capacity = 300) {
    this.capacity = capacity;
    this.times = null; // allocated on the first push: most readings of a big fleet never chart
    this.values = null;
    this.start = 0;
    this.length = 0;
  }

  push(time, value) {
    if (typeof value !== 'number' || !Number.isFinite(value)) return;
    if (!this.times) {
      // Start small and grow: most readings of a big fleet never fill the window. Plain arrays
      // first (a page of 500 modules makes 2,500 rings before its first paint; typed arrays
      // cost more to create), typed arrays once it grows.
      const size = Math.min(this.capacity, 16);
      this.times = new Array(size).fill(0);
      this.values = new Array(size).fill(0);
    }
    const size = this.times.length;
    // Same timestamp as the last point: replace it (several changes within one ms).
    if (this.length > 0) {
      const last = (this.start + this.length - 1) % size;
      if (this.times[last] === time) {
        this.values[last] = value;
        return;
      }
    }
    if (this.length === size && size < this.capacity) this._grow(Math.min(this.capacity, size * 2));
    const n = this.times.length;
    const idx = (this.start + this.length) % n;
    this.times[idx] = time;
    this.values[idx] = value;
    if (this.length < n) this.length += 1;
    else this.start = (this.start + 1) % n;
  }

  _grow(size) {
    const times = new Float64Array(size);
    const values = new Float32Array(size);
    for (let i = 0; i < this.length; i++) {
      const [tm, v] = this.at(i);
      times[i] = tm;
      values[i] = v;
    }
    this.times = times;
    this.values = values;
    this.start = 0;
  }

  clear() {
    this.start = 0;
    this.length = 0;
  }

  /** The i-th oldest point. */
  at(i) {
    const idx = (this.start + i) % this.times.length;
    return [this.times[idx], this.values[idx]];
  }

  /** Points with time >= since, oldest first, plus the last point before it (the line enters the window). */
  since(since) {
    const out = [];
    let before = null;
    for (let i = 0; i < this.length; i++) {
      const p = this.at(i);
      if (p[0] < since) before = p;
      else out.push(p);
    }
    if (before) out.unshift(before);
    return out;
  }

  last() {
    return this.length ? this.at(this.length - 1) : null;
  }
}

/** Min and max of the values, padded so a flat line sits in the middle. */
export function valueRange(points) {
  let min = Infinity;
  let max = -Infinity;
  for (const [, v] of points) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!Number.isFinite(min)) return [0, 1];
  if (max - min < 1e-9) {
    const pad = Math.abs(min) * 0.01 || 1;
    return [min - pad, max + pad];
  }
  const pad = (max - min) * 0.1;
  return [min - pad, max + pad];
}

/**
 * Draws `ring` on `canvas` as a step-free line over [now - windowMs, now], the last value
 * carried to `now`. Colors come from CSS (`--spark`, `--spark-fill` on the canvas).
 * `size` ({width, height} in CSS px), when the caller knows it, spares reading the canvas's
 * layout: a read after DOM writes forces a layout, and many sparklines drawn in one frame
 * would force one each.
 */
export function drawSparkline(canvas, ring, now, windowMs, style = {}, size = null) {
  const dpr = (typeof window !== 'undefined' && window.devicePixelRatio) || 1;
  const cssW = size?.width || canvas.clientWidth || 120;
  const cssH = size?.height || canvas.clientHeight || 28;
  const w = Math.round(cssW * dpr);
  const h = Math.round(cssH * dpr);
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.clearRect(0, 0, w, h);
  // Offline (no carry): the chart ends at the last reading, not now.
  if (style.carry === false && ring.length) now = ring.last()[0];
  // Less history than the window: stretch what there is (at least `minSpanMs`).
  const oldest = ring.length ? ring.at(0)[0] : now;
  const span = Math.min(windowMs, Math.max(style.minSpanMs ?? 10000, now - oldest));
  const from = now - span;
  windowMs = span;
  const points = ring.since(from);
  if (points.length === 0) return;
  const last = points[points.length - 1];
  // Online: the value holds until it changes (report by exception). Offline: stop where it stopped.
  const carry = style.carry !== false;
  if (carry) points.push([now, last[1]]);
  const endX = carry ? now : last[0];
  const [lo, hi] = valueRange(points);
  const pad = 2 * dpr;
  const x = (tm) => ((Math.max(tm, from) - from) / windowMs) * (w - 2 * pad) + pad;
  const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  ctx.beginPath();
  ctx.moveTo(x(points[0][0]), y(points[0][1]));
  for (let i = 1; i < points.length; i++) ctx.lineTo(x(points[i][0]), y(points[i][1]));
  ctx.lineWidth = 1.5 * dpr;
  ctx.lineJoin = 'round';
  ctx.strokeStyle = style.stroke || '#4da3ff';
  ctx.stroke();
  if (style.fill) {
    ctx.lineTo(x(endX), h);
    ctx.lineTo(x(points[0][0]), h);
    ctx.closePath();
    ctx.fillStyle = style.fill;
    ctx.fill();
  }
  // the current value as a dot
  ctx.beginPath();
  ctx.arc(Math.min(x(endX), w - 2 * dpr), y(last[1]), 2 * dpr, 0, Math.PI * 2);
  ctx.fillStyle = style.stroke || '#4da3ff';
  ctx.fill();
}
