// Summarizes V8 CPU profiles (.cpuprofile, as OPENMPS_SERVER_CPU_PROFILE_DIR writes them): busy
// and idle time, and the functions with the most self time, so a run on the GPU machine can say
// where the server's time goes without copying the profiles back.
//
//   node dist/bench/profile-summary.js <file.cpuprofile | directory> [--top 25]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

function isProfile(value: unknown): value is Profile {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return Array.isArray(v.nodes) && Array.isArray(v.samples) && Array.isArray(v.timeDeltas);
}

function label(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.replace(/^.*\/dist\//, '').replace(/^file:\/\//, '');
  return `${functionName || '(anonymous)'}${file ? ` ${file}:${lineNumber + 1}` : ''}`;
}

function summarize(path: string, top: number): void {
  const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
  if (!isProfile(parsed)) throw new Error(`${path} is not a V8 CPU profile`);
  const byId = new Map(parsed.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < parsed.samples.length; i++) {
    const node = byId.get(parsed.samples[i] ?? -1);
    const dt = (parsed.timeDeltas[i] ?? 0) / 1000;
    if (!node) continue;
    total += dt;
    const name = label(node);
    if (node.callFrame.functionName === '(idle)') idle += dt;
    self.set(name, (self.get(name) ?? 0) + dt);
  }
  const busy = total - idle;
  console.log(`${path}: ${total.toFixed(0)} ms sampled, ${busy.toFixed(0)} ms busy (${((busy / total) * 100).toFixed(1)}%), ${idle.toFixed(0)} ms idle`);
  const rows = [...self.entries()].filter(([n]) => !n.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [name, ms] of rows) console.log(`  ${ms.toFixed(1).padStart(8)} ms ${((ms / busy) * 100).toFixed(1).padStart(5)}%  ${name}`);
}

const { values, positionals } = parseArgs({ options: { top: { type: 'string', default: '25' } }, allowPositionals: true });
const top = Number(values.top);
for (const target of positionals) {
  const files = statSync(target).isDirectory()
    ? readdirSync(target).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(target, f))
    : [target];
  for (const file of files) summarize(file, top);
}
