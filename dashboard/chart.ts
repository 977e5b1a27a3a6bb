// Time-series charts drawn as inline SVG: lines, or stacked areas. Redrawn whole on each update
// (a few hundred points at one update a second costs less than diffing them), sized to the
// element's box so text stays crisp at any width.
import { svg } from './dom.js';
import { formatAgo } from './format.js';

export interface ChartSeries {
  readonly key: string;
  readonly label: string;
  readonly color: string;
  /** One value per time of the chart; undefined where the series did not exist. */
  readonly values: readonly (number | undefined)[];
}

export interface ChartData {
  readonly times: readonly number[];
  readonly series: readonly ChartSeries[];
}

export interface ChartOptions {
  readonly stacked: boolean;
  readonly format: (value: number) => string;
  /** The y axis reaches at least this far, so an idle chart does not magnify noise. */
  readonly minMax: number;
  /** How much time the x axis spans, ending at the last time. */
  readonly windowMs: number;
  /** The y grid step for a rough step (niceStep unless given: binaryStep for bytes). */
  readonly step?: (raw: number) => number;
}

const MARGIN = { left: 56, right: 10, top: 8, bottom: 20 } as const;

/** 1, 2, 2.5 or 5 times a power of ten, at least `raw`. */
export function niceStep(raw: number): number {
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * power;
}

/** A nice step in the binary unit `raw` falls in (KiB, MiB, GiB), so byte axes read 1, 2, 4 MiB. */
export function binaryStep(raw: number): number {
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  let unit = 1;
  while (raw / unit >= 1024) unit *= 1024;
  return niceStep(raw / unit) * unit;
}

function pathOf(points: readonly (readonly [number, number] | undefined)[]): string {
  let d = '';
  let pen = false;
  for (const p of points) {
    if (!p) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${p[0].toFixed(1)},${p[1].toFixed(1)}`;
    pen = true;
  }
  return d;
}

export function drawChart(target: SVGSVGElement, data: ChartData, options: ChartOptions): void {
  const box = target.getBoundingClientRect();
  const width = Math.max(160, Math.round(box.width));
  const height = Math.max(100, Math.round(box.height));
  target.setAttribute('viewBox', `0 0 ${width} ${height}`);
  target.replaceChildren();
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const now = data.times.at(-1) ?? 0;
  const from = now - options.windowMs;
  const first = data.times.findIndex((t) => t >= from);
  const start = first === -1 ? data.times.length : first;
  const times = data.times.slice(start);

  // Stacked series add up per time; absent counts as 0 there.
  const tops: (number | undefined)[][] = [];
  const bottoms: number[][] = [];
  let base = times.map(() => 0);
  for (const s of data.series) {
    const values = s.values.slice(start);
    if (options.stacked) {
      const upper = times.map((_t, i) => (base[i] ?? 0) + (values[i] ?? 0));
      tops.push(upper);
      bottoms.push(base);
      base = upper;
    } else {
      tops.push(values);
    }
  }
  let max = options.minMax;
  for (const values of tops) for (const v of values) if (v !== undefined && v > max) max = v;
  const step = (options.step ?? niceStep)(max / 4);
  const top = Math.ceil(max / step - 1e-9) * step;
  const x = (t: number): number => MARGIN.left + ((t - from) / options.windowMs) * plotW;
  const y = (v: number): number => MARGIN.top + plotH - (v / top) * plotH;

  const grid = svg('g', { class: 'grid' });
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.append(svg('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v).toFixed(1), y2: y(v).toFixed(1) }));
    grid.append(svg('text', { x: MARGIN.left - 6, y: (y(v) + 4).toFixed(1), 'text-anchor': 'end' }, options.format(v)));
  }
  const tickMs = options.windowMs <= 120_000 ? 30_000 : 60_000;
  for (let ago = 0; ago <= options.windowMs; ago += tickMs) {
    const tx = x(now - ago);
    grid.append(svg('line', { class: 'vertical', x1: tx.toFixed(1), x2: tx.toFixed(1), y1: MARGIN.top, y2: MARGIN.top + plotH }));
    grid.append(svg('text', { x: tx.toFixed(1), y: height - 5, 'text-anchor': ago === 0 ? 'end' : 'middle' }, formatAgo(ago)));
  }
  target.append(grid);

  const plot = svg('g', { class: 'series' });
  data.series.forEach((s, index) => {
    const upper = tops[index] ?? [];
    const line = upper.map((v, i): [number, number] | undefined => (v === undefined ? undefined : [x(times[i] ?? now), y(v)]));
    const group = svg('g', { 'data-series-key': s.key }, svg('title', {}, s.label));
    if (options.stacked) {
      const lower = bottoms[index] ?? [];
      const forward = upper.map((v, i) => `${x(times[i] ?? now).toFixed(1)},${y(v ?? 0).toFixed(1)}`);
      const back = lower.map((v, i) => `${x(times[i] ?? now).toFixed(1)},${y(v).toFixed(1)}`).reverse();
      if (forward.length > 0) group.append(svg('path', { class: 'area', d: `M${forward.join('L')}L${back.join('L')}Z`, fill: s.color }));
      // The top edge only where the series existed, so a client's arrival and exit show.
      const own = s.values.slice(start).map((v, i) => (v === undefined ? undefined : line[i]));
      group.append(svg('path', { class: 'line', d: pathOf(own), stroke: s.color }));
    } else {
      group.append(svg('path', { class: 'line', d: pathOf(line), stroke: s.color }));
      const last = line.at(-1);
      if (last) group.append(svg('circle', { cx: last[0].toFixed(1), cy: last[1].toFixed(1), r: 2.5, fill: s.color }));
    }
    plot.append(group);
  });
  target.append(plot);
  if (times.length === 0) {
    target.append(svg('text', { class: 'empty', x: MARGIN.left + plotW / 2, y: MARGIN.top + plotH / 2, 'text-anchor': 'middle' }, 'waiting for samples…'));
  }
  // For tests and for anyone inspecting the page: how much is drawn.
  target.dataset.points = String(times.length);
  target.dataset.series = String(data.series.length);
  target.dataset.lastTime = String(now);
}
