// Numbers as people read them: bytes in binary units, times in ms/s/min, rates with k and M.

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '–';
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${BYTE_UNITS[unit] ?? ''}`;
}

/** Decimal byte strings of the snapshot; '' (no limit) gives undefined. */
export function parseBytes(text: string): number | undefined {
  return /^[0-9]+$/.test(text) ? Number(text) : undefined;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, '0')}m`;
}

export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '–';
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(abs >= 1e10 ? 0 : 1)}G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(abs >= 1e7 ? 0 : 1)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(abs >= 1e5 ? 0 : 1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(abs >= 100 ? 0 : abs >= 10 ? 1 : 2);
}

export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return '–';
  const p = fraction * 100;
  return `${p >= 10 || p === 0 ? Math.round(p) : p.toFixed(1)}%`;
}

export function formatClock(time: number): string {
  return new Date(time).toLocaleTimeString([], { hour12: false });
}

/** Seconds relative to now for a time axis: `now`, `-30s`, `-2m`. */
export function formatAgo(ms: number): string {
  if (ms < 500) return 'now';
  const s = Math.round(ms / 1000);
  return s < 120 && s % 60 !== 0 ? `-${s}s` : `-${Math.round(s / 60)}m`;
}
