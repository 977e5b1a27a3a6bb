// Pure text rendering for the `openmps` command: number formats, bars and column tables. Nothing
// here reads the terminal or the clock; callers pass the width and the time, so every output can
// be tested byte for byte.

/** What ends a cell or a line that had to be cut: one column wide, so widths stay exact. */
export const ELLIPSIS = '…';

import { printable } from '../control/format.js';

export { printable };

/** Cuts `text` to at most `width` characters, ending in an ellipsis when something was cut. */
export function truncate(text: string, width: number): string {
  if (width <= 0) return '';
  if (text.length <= width) return text;
  return width === 1 ? ELLIPSIS : `${text.slice(0, width - 1)}${ELLIPSIS}`;
}

const BYTE_UNITS = ['K', 'M', 'G', 'T', 'P'] as const;

/**
 * Bytes in binary units the way htop and nvidia-smi print them: `512B`, `9.6M`, `523M`, `16.0G`.
 * One decimal below 10 of a unit, none above; takes the decimal strings of the state snapshot
 * (byte counts can pass 2^53) as well as numbers.
 */
export function formatBytes(bytes: bigint | number | string): string {
  const n = typeof bytes === 'bigint' ? bytes : typeof bytes === 'number' ? BigInt(Math.max(0, Math.round(bytes))) : BigInt(bytes === '' ? '0' : bytes);
  if (n < 1024n) return `${n}B`;
  // Scale in bigint until the value is small enough to be exact as a double.
  let unit = 0;
  let scaled = n;
  while (scaled >= 1024n * 1024n && unit < BYTE_UNITS.length - 1) {
    scaled /= 1024n;
    unit++;
  }
  let value = Number(scaled) / 1024;
  let text = value < 10 ? value.toFixed(1) : String(Math.round(value));
  // 1023.7K rounds to 1024K: say 1.0M instead.
  if (Number(text) >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
    text = value.toFixed(1);
  }
  return `${text}${BYTE_UNITS[unit] ?? 'P'}`;
}

/** GPU time as htop's TIME+: `m:ss.cc` below an hour, `h:mm:ss` above. */
export function formatGpuTime(ms: number): string {
  const centis = Math.floor(Math.max(0, ms) / 10);
  const totalSeconds = Math.floor(centis / 100);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, '0')}:${String(seconds).padStart(2, '0')}`;
  return `${minutes}:${String(seconds).padStart(2, '0')}.${String(centis % 100).padStart(2, '0')}`;
}

/** A wall-clock duration for uptimes: `42s`, `5m12s`, `3h04m`, `2d05h`. */
export function formatDuration(ms: number): string {
  const s = Math.floor(Math.max(0, ms) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

/** A percentage of a 0..1 fraction: one decimal below 10 %, none above (`4.5`, `48`). */
export function formatPercent(fraction: number): string {
  const p = Math.max(0, fraction * 100);
  return p < 10 ? p.toFixed(1) : String(Math.round(p));
}

/** A rate: `0`, `8.5`, `950`, `12.3k`, `1.2M`. */
export function formatRate(perSecond: number): string {
  const r = Math.max(0, perSecond);
  if (r === 0) return '0';
  if (r < 10) return r.toFixed(1);
  if (r < 1000) return String(Math.round(r));
  if (r < 1e6) return `${(r / 1000).toFixed(r < 1e4 ? 2 : 1)}k`;
  return `${(r / 1e6).toFixed(1)}M`;
}

/**
 * A meter as htop draws one: `[|||||||     ]`, `width` characters in all with the brackets,
 * filled in proportion to `fraction` (clamped to 0..1); `label` is printed inside at the right
 * end when it fits, as htop prints its percentages.
 */
export function bar(fraction: number, width: number, label = ''): string {
  const inner = Math.max(0, width - 2);
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(f * inner);
  const meter = '|'.repeat(filled).padEnd(inner, ' ');
  // The label overwrites the right end of the meter, as htop's does.
  if (label === '' || label.length >= inner) return `[${meter}]`;
  return `[${meter.slice(0, inner - label.length)}${label}]`;
}

export interface Column<Row> {
  readonly header: string;
  readonly align: 'left' | 'right';
  readonly cell: (row: Row) => string;
  /**
   * The one column that absorbs what is left of the width (COMMAND): cut to fit, never padded;
   * it must be the last column.
   */
  readonly flex?: boolean;
}

/**
 * Rows as aligned columns separated by two spaces, header first. Fixed columns are as wide as
 * their widest cell; the flex column gets what is left of `width` (at least its header) and its
 * cells are truncated to it; every line is finally cut to `width`, so nothing wraps.
 */
export function table<Row>(columns: readonly Column<Row>[], rows: readonly Row[], width: number): string[] {
  const cells = rows.map((row) => columns.map((c) => printable(c.cell(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => (r[i] ?? '').length)));
  const gap = '  ';
  const fixed = columns.reduce((sum, c, i) => (c.flex === true ? sum : sum + (widths[i] ?? 0) + gap.length), 0);
  const flexWidth = Math.max(0, width - fixed);
  const line = (values: readonly string[]): string => {
    const parts = columns.map((c, i) => {
      const v = values[i] ?? '';
      if (c.flex === true) return truncate(v, Math.max(flexWidth, c.header.length));
      const w = widths[i] ?? 0;
      return c.align === 'right' ? v.padStart(w) : v.padEnd(w);
    });
    return truncate(parts.join(gap).trimEnd(), width);
  };
  return [line(columns.map((c) => c.header)), ...cells.map(line)];
}
