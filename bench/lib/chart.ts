// throughput.svg: aggregate kernels per second against N, one line per mode, written by hand (no
// charting dependency). N runs on a log2 axis, since it doubles from 1 to 32 and the interesting
// part (where modes part ways) is at small N; kernels/s on a linear axis from 0.
import type { Mode, Result } from './types.js';

const WIDTH = 720;
const HEIGHT = 440;
const MARGIN = { left: 84, right: 150, top: 56, bottom: 60 } as const;
const COLORS: Readonly<Record<Mode, string>> = { openmps: '#1f6fb4', bypass: '#8a8a8a', 'nvidia-mps': '#76b900' };

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A round step for about `ticks` gridlines up to `max` (1, 2 or 5 times a power of ten). */
function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function compact(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toLocaleString('en-US', { maximumFractionDigits: 1 })}M`;
  if (v >= 1e3) return `${(v / 1e3).toLocaleString('en-US', { maximumFractionDigits: 1 })}k`;
  return v.toLocaleString('en-US', { maximumFractionDigits: 1 });
}

/**
 * `subtitle` goes under the title: the stamps of a real run, or (with `warn`) the software GPU's
 * label, in red so a chart copied out of its directory still says its figures mean nothing.
 */
export function throughputSvg(results: readonly Result[], modes: readonly Mode[], title: string, subtitle: string, warn: boolean): string {
  const points = results.filter((r) => r.bench === 'throughput' && Number.isFinite(r.value));
  const ns = [...new Set(points.map((r) => r.n))].sort((a, b) => a - b);
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const minN = ns[0] ?? 1;
  const maxN = ns[ns.length - 1] ?? 2;
  const span = Math.log2(maxN) - Math.log2(minN) || 1;
  const x = (n: number): number => MARGIN.left + ((Math.log2(n) - Math.log2(minN)) / span) * plotW;
  const top = Math.max(1, ...points.map((r) => r.value));
  const step = niceStep(top, 5);
  const yMax = Math.ceil((top * 1.05) / step) * step;
  const y = (v: number): number => MARGIN.top + plotH - (v / yMax) * plotH;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`);
  out.push(`<text x="${WIDTH / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}</text>`);
  out.push(`<text x="${WIDTH / 2}" y="40" text-anchor="middle" fill="${warn ? '#c0392b' : '#555555'}">${escapeXml(subtitle)}</text>`);
  // Gridlines and y ticks.
  for (let v = 0; v <= yMax + step / 2; v += step) {
    out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${MARGIN.left - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${compact(v)}</text>`);
  }
  for (const n of ns) {
    out.push(`<line x1="${x(n).toFixed(1)}" x2="${x(n).toFixed(1)}" y1="${MARGIN.top}" y2="${MARGIN.top + plotH}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x(n).toFixed(1)}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${n}</text>`);
  }
  out.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333333"/>`);
  out.push(`<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 16}" text-anchor="middle">processes sharing the GPU (N, log scale)</text>`);
  out.push(`<text transform="translate(20 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">kernels per second (aggregate)</text>`);
  // One line per mode, with its points, and the legend on the right.
  modes.forEach((mode, i) => {
    const line = points.filter((r) => r.mode === mode).sort((a, b) => a.n - b.n);
    const color = COLORS[mode];
    if (line.length > 0) {
      const path = line.map((r, j) => `${j === 0 ? 'M' : 'L'}${x(r.n).toFixed(1)},${y(r.value).toFixed(1)}`).join(' ');
      out.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2.5"/>`);
      for (const r of line) out.push(`<circle cx="${x(r.n).toFixed(1)}" cy="${y(r.value).toFixed(1)}" r="3.5" fill="${color}"><title>${escapeXml(`${mode}, N = ${r.n}: ${Math.round(r.value).toLocaleString('en-US')} kernels/s`)}</title></circle>`);
    }
    const ly = MARGIN.top + 14 + i * 22;
    const lx = MARGIN.left + plotW + 16;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2.5"/>`);
    out.push(`<text x="${lx + 30}" y="${ly + 4}">${escapeXml(mode)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
