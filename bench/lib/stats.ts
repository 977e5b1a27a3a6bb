// Order statistics for the benchmark figures. Percentiles are nearest-rank on the sorted samples
// (no interpolation), so a p99 is always a latency that was actually measured.

/** The q-quantile (0..1) of `samples`, nearest rank; NaN when there are none. */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? NaN;
}

export function median(samples: readonly number[]): number {
  return quantile(samples, 0.5);
}

export function mean(samples: readonly number[]): number {
  return samples.length === 0 ? NaN : samples.reduce((s, x) => s + x, 0) / samples.length;
}
