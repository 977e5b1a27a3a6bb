// The shapes the benchmark runner passes around: the three modes, the seven benchmarks, one result
// (what a `BENCH {json}` line carries), and the sizes of a run (full, or --quick for CI).

/** openmps: through an openmps daemon; bypass: no daemon, the GPU time-slices the processes'
 * contexts; nvidia-mps: bypass clients that libcuda turns into NVIDIA MPS clients. */
export const MODES = ['openmps', 'bypass', 'nvidia-mps'] as const;
export type Mode = (typeof MODES)[number];

export const BENCHES = ['throughput', 'latency', 'copy', 'inference', 'neighbour', 'footprint', 'torch'] as const;
export type BenchName = (typeof BENCHES)[number];

export function isMode(s: string): s is Mode {
  return (MODES as readonly string[]).includes(s);
}

export function isBench(s: string): s is BenchName {
  return (BENCHES as readonly string[]).includes(s);
}

/** One measured figure. `value` is the headline the tables and ratios use; its unit says which. */
export interface Result {
  readonly bench: BenchName;
  readonly mode: Mode;
  /** Client processes running the workload at once. */
  readonly n: number;
  /** Which case of the benchmark (copy: htod/dtoh, htod-pinned/dtoh-pinned; neighbour: alone/beside/beside-50). */
  readonly variant?: string;
  readonly value: number;
  readonly unit: string;
  readonly p50?: number;
  readonly p99?: number;
  /** Secondary figures (footprint's parts, a neighbour's own rate, ...), by name. */
  readonly detail?: Readonly<Record<string, number | string>>;
}

/** A benchmark not run at all on this machine (torch without PyTorch or a GPU): why. */
export interface Skip {
  readonly bench: BenchName;
  readonly reason: string;
}

/** A benchmark that could not be measured in one mode: why, so the run goes on and says so. */
export interface Failure {
  readonly bench: BenchName;
  readonly mode: Mode;
  readonly n?: number;
  readonly error: string;
}

export interface Sizes {
  readonly throughputN: readonly number[];
  /** Launches of spin per throughput client, and how many between synchronizes. */
  readonly launches: number;
  readonly every: number;
  readonly latencyIterations: number;
  readonly copyBytes: number;
  /** Timed repetitions per direction, after one warm-up copy each way. */
  readonly copyReps: number;
  readonly inferenceN: readonly number[];
  readonly requests: number;
  readonly hidden: number;
  readonly periods: number;
  readonly footprintN: readonly number[];
  readonly footprintBytes: number;
  /** torch: PyTorch processes at once, and requests of each (bench/clients/torch-mlp.py). */
  readonly torchN: readonly number[];
  readonly torchRequests: number;
}

const MIB = 1024 * 1024;

/**
 * The full run, planned to finish within 8 minutes on an H200 with all three modes (bench/NOTES.md
 * has the budget per benchmark): the workloads of /work/shared/reference/anchors.md, so figures
 * compare with those.
 */
export const FULL_SIZES: Sizes = {
  throughputN: [1, 2, 4, 8, 16, 32, 48],
  launches: 400,
  every: 4,
  latencyIterations: 5000,
  copyBytes: 256 * MIB,
  copyReps: 5,
  inferenceN: [1, 4, 16],
  requests: 500,
  hidden: 1024,
  periods: 1000,
  footprintN: [1, 16, 64],
  footprintBytes: MIB,
  torchN: [1, 4, 16],
  torchRequests: 500,
};

/** --quick: every benchmark and mode exercised at tiny sizes (CI on the software GPU, seconds). */
export const QUICK_SIZES: Sizes = {
  throughputN: [1, 2],
  launches: 40,
  every: 4,
  latencyIterations: 200,
  copyBytes: 4 * MIB,
  copyReps: 3,
  inferenceN: [1, 2],
  requests: 20,
  hidden: 1024,
  periods: 50,
  footprintN: [1, 4],
  footprintBytes: MIB,
  torchN: [1, 2],
  torchRequests: 20,
};
