// openmps benchmarks, side by side in one run: the same client code through openmps, in bypass
// mode (no sharing service: the GPU time-slices between the processes' contexts), and under
// NVIDIA's own MPS (started here with private pipe and log directories, stopped at the end).
//   node dist/bench/run.js [--device cuda|sim] [--modes openmps,bypass,nvidia-mps] [--n 1,2,4,8,16]
//                          [--launches 400] [--latency 2000] [--out DIR]
// Prints one `BENCH {json}` line per result and a Markdown table last; --out also writes
// results.json and results.md there. On the software GPU the figures mean nothing (labelled so).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLIENT = join(HERE, 'clients', 'bench-client.js');
const CONTROL = join(HERE, '..', 'src', 'cli', 'openmps-control.js');

type Mode = 'openmps' | 'bypass' | 'nvidia-mps';
interface Result {
  readonly bench: 'throughput' | 'latency';
  readonly mode: Mode;
  readonly n: number;
  readonly value: number;
  readonly p99?: number;
  readonly unit: string;
}

interface Report {
  event: string;
  start?: number;
  end?: number;
  launches?: number;
  p50?: number;
  p99?: number;
  code?: string;
  message?: string;
}

function progress(text: string): void {
  process.stderr.write(`[bench] ${text}\n`);
}

/** Runs `n` clients of one job released together; resolves with their final reports. */
async function runClients(n: number, env: NodeJS.ProcessEnv, args: readonly string[]): Promise<Report[]> {
  const children = Array.from({ length: n }, () => spawn(process.execPath, [CLIENT, ...args], { env, stdio: ['pipe', 'pipe', 'inherit'] }));
  try {
    const ready: Promise<void>[] = [];
    const done: Promise<Report>[] = [];
    for (const child of children) {
      let markReady!: () => void;
      let fail!: (e: Error) => void;
      ready.push(
        new Promise<void>((resolve, reject) => {
          markReady = resolve;
          fail = reject;
        }),
      );
      done.push(
        new Promise<Report>((resolve, reject) => {
          createInterface({ input: child.stdout }).on('line', (line) => {
            let r: Report;
            try {
              r = JSON.parse(line) as Report;
            } catch {
              return;
            }
            if (r.event === 'ready') markReady();
            else if (r.event === 'done') resolve(r);
            else if (r.event === 'error') {
              const e = new Error(`client failed: ${r.code ?? ''} ${r.message ?? ''}`);
              fail(e);
              reject(e);
            }
          });
          child.on('close', (code) => {
            const e = new Error(`client exited with ${code}`);
            fail(e);
            reject(e);
          });
        }),
      );
    }
    await Promise.all(ready);
    for (const child of children) child.stdin.write('go\n');
    return await Promise.all(done);
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  }
}

interface Service {
  readonly env: NodeJS.ProcessEnv;
  stop(): void;
}

function startService(mode: Mode, device: string, root: string): Service {
  const base: NodeJS.ProcessEnv = { ...process.env, OPENMPS_DEVICE: device, OPENMPS_BENCH_MODE: mode };
  delete base.CUDA_MPS_PIPE_DIRECTORY;
  delete base.CUDA_MPS_LOG_DIRECTORY;
  const empty = join(root, `${mode}-nodaemon`);
  mkdirSync(empty, { recursive: true });
  if (mode === 'bypass') return { env: { ...base, OPENMPS_PIPE_DIRECTORY: empty }, stop: () => undefined };
  if (mode === 'nvidia-mps') {
    const env = { ...base, OPENMPS_PIPE_DIRECTORY: empty, CUDA_MPS_PIPE_DIRECTORY: join(root, 'nvmps-pipe'), CUDA_MPS_LOG_DIRECTORY: join(root, 'nvmps-log') };
    mkdirSync(env.CUDA_MPS_PIPE_DIRECTORY, { recursive: true });
    mkdirSync(env.CUDA_MPS_LOG_DIRECTORY, { recursive: true });
    const r = spawnSync('nvidia-cuda-mps-control', ['-d'], { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`nvidia-cuda-mps-control -d failed: ${r.stderr}`);
    return { env, stop: () => spawnSync('nvidia-cuda-mps-control', [], { env, input: 'quit\n', encoding: 'utf8' }) };
  }
  const env = { ...base, OPENMPS_PIPE_DIRECTORY: join(root, 'openmps-pipe'), OPENMPS_LOG_DIRECTORY: join(root, 'openmps-log') };
  const r = spawnSync(process.execPath, [CONTROL, '-d', '--device', device], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openmps-control -d failed: ${r.stderr}${r.stdout}`);
  return { env, stop: () => spawnSync(process.execPath, [CONTROL], { env, input: 'quit\n', encoding: 'utf8' }) };
}

function gpuStamp(device: string): { gpu: string; driver: string } {
  if (device === 'sim') return { gpu: 'openmps software GPU', driver: 'software GPU (figures mean nothing)' };
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader'], { encoding: 'utf8' });
  const [gpu = 'unknown GPU', driver = 'unknown'] = (r.stdout || '').split('\n')[0]?.split(',').map((s) => s.trim()) ?? [];
  return { gpu, driver };
}

function commit(): string {
  try {
    const head = readFileSync(join(HERE, '..', '..', '.git', 'HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head.slice(0, 12);
    return readFileSync(join(HERE, '..', '..', '.git', head.slice(5)), 'utf8').trim().slice(0, 12);
  } catch {
    return process.env.OPENMPS_COMMIT ?? 'unknown';
  }
}

function table(results: readonly Result[], modes: readonly Mode[], ns: readonly number[]): string {
  const get = (bench: string, mode: Mode, n: number): Result | undefined => results.find((r) => r.bench === bench && r.mode === mode && r.n === n);
  const ratio = (a: number | undefined, b: number | undefined): string => (a && b ? `${(a / b).toFixed(2)}x` : '-');
  const lines = [
    `| N | ${modes.join(' | ')} | openmps / bypass | openmps / nvidia-mps |`,
    `|---|${modes.map(() => '---').join('|')}|---|---|`,
    ...ns.map((n) => {
      const v = (m: Mode): number | undefined => get('throughput', m, n)?.value;
      return `| ${n} | ${modes.map((m) => (v(m) === undefined ? '-' : Math.round(v(m) ?? 0).toLocaleString('en-US'))).join(' | ')} | ${ratio(v('openmps'), v('bypass'))} | ${ratio(v('openmps'), v('nvidia-mps'))} |`;
    }),
    '',
    `| launch + synchronize, 1 client | ${modes.join(' | ')} |`,
    `|---|${modes.map(() => '---').join('|')}|`,
    `| p50 (us) | ${modes.map((m) => get('latency', m, 1)?.value.toFixed(1) ?? '-').join(' | ')} |`,
    `| p99 (us) | ${modes.map((m) => get('latency', m, 1)?.p99?.toFixed(1) ?? '-').join(' | ')} |`,
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      device: { type: 'string', default: 'cuda' },
      modes: { type: 'string' },
      n: { type: 'string', default: '1,2,4,8,16' },
      launches: { type: 'string', default: '400' },
      latency: { type: 'string', default: '2000' },
      out: { type: 'string' },
    },
  });
  const device = values.device;
  const hasNvidiaMps = device === 'cuda' && spawnSync('which', ['nvidia-cuda-mps-control']).status === 0;
  const modes = (values.modes?.split(',') ?? ['openmps', 'bypass', ...(hasNvidiaMps ? ['nvidia-mps'] : [])]) as Mode[];
  const ns = values.n.split(',').map(Number);
  const root = mkdtempSync(join(tmpdir(), 'openmps-bench-'));
  const results: Result[] = [];
  const emit = (r: Result): void => {
    results.push(r);
    process.stdout.write(`BENCH ${JSON.stringify(r)}\n`);
  };
  const started = Date.now();
  try {
    for (const mode of modes) {
      const service = startService(mode, device, root);
      try {
        for (const n of ns) {
          progress(`${mode}: throughput with ${n} client(s)`);
          const reports = await runClients(n, service.env, ['spin', values.launches, '4']);
          const first = Math.min(...reports.map((r) => r.start ?? Infinity));
          const last = Math.max(...reports.map((r) => r.end ?? 0));
          const kernels = reports.reduce((s, r) => s + (r.launches ?? 0), 0);
          emit({ bench: 'throughput', mode, n, value: (kernels / (last - first)) * 1000, unit: 'kernels/s' });
        }
        progress(`${mode}: latency`);
        const [lat] = await runClients(1, service.env, ['latency', values.latency]);
        emit({ bench: 'latency', mode, n: 1, value: lat?.p50 ?? NaN, p99: lat?.p99 ?? NaN, unit: 'us' });
      } finally {
        service.stop();
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const stamp = { ...gpuStamp(device), node: process.version, commit: commit(), date: new Date().toISOString(), seconds: (Date.now() - started) / 1000 };
  const md = `# openmps benchmarks: ${stamp.gpu}\n\n${stamp.driver}; Node.js ${stamp.node}; commit ${stamp.commit}; ${stamp.date}; ${stamp.seconds.toFixed(0)} s\n\nThroughput: aggregate kernels/s of N processes, each ${values.launches} launches of spin (4 x 128 threads, 100,000 cycles), synchronizing every 4.\n\n${table(results, modes, ns)}\n`;
  if (values.out !== undefined) {
    mkdirSync(values.out, { recursive: true });
    writeFileSync(join(values.out, 'results.json'), `${JSON.stringify({ ...stamp, results }, null, 2)}\n`);
    writeFileSync(join(values.out, 'results.md'), md);
  }
  process.stdout.write(`\n${md}`);
  if (!existsSync(CLIENT)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
