// One frame of `openmps top`, from one StateView: a summary line, a header per device with a
// GPU-time meter and a memory meter (htop's meters), then every client as a row of a table sorted
// the way htop sorts by CPU% (here: by GPU share over the daemon's last sampling interval). Pure:
// width, height, clock and user names come from the caller.
import type { ClientView, DeviceView, StateView } from './snapshot.js';
import { bar, formatBytes, printable, formatDuration, formatGpuTime, formatPercent, formatRate, table, truncate, type Column } from './render.js';

export interface TopFrameOptions {
  /** Terminal columns: every line is cut to it. */
  readonly width: number;
  /** Terminal rows in live mode: clients that do not fit are counted, not drawn. None in --once. */
  readonly height?: number;
  /** Live mode adds the key help to the summary line. */
  readonly live: boolean;
  /** uid -> user name (/etc/passwd); a uid not in it shows as the number. */
  readonly users: ReadonlyMap<number, string>;
  /** What went wrong fetching the latest state, shown under the summary (live mode keeps going). */
  readonly error?: string;
}

/**
 * Heaviest first: by GPU share over the last interval (what is busy now, as htop's CPU%), then by
 * total GPU time (so a frame before the second sample, when every share is 0, is still ranked),
 * then by server and client id so equal rows never swap between frames.
 */
export function compareClients(a: ClientView, b: ClientView): number {
  return b.gpuShare - a.gpuShare || b.gpuTimeMs - a.gpuTimeMs || a.serverPid - b.serverPid || a.clientId - b.clientId;
}

export function sortClients(clients: readonly ClientView[]): ClientView[] {
  return [...clients].sort(compareClients);
}

function clock(ms: number): string {
  const t = new Date(ms);
  return [t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/**
 * How full the GPU-time meter is. gpuTimePerSecond sums every client's GPU time per wall second,
 * so it passes 1 when clients' kernels run side by side; each client's default stream is at most
 * about 1, so the meter is full when every connected client keeps the GPU busy all the time.
 */
export function gpuMeterFraction(d: DeviceView): number {
  return d.gpuTimePerSecond / Math.max(1, d.clients);
}

function memoryFraction(d: DeviceView): number {
  const total = Number(d.totalMemory);
  return total > 0 ? Number(d.memoryUsed) / total : 0;
}

function deviceHeader(d: DeviceView, width: number): string[] {
  const title = `GPU ${d.ordinal}  ${d.name} (${d.kind})  ${d.smCount} SMs  server ${d.serverPid}  clients ${d.clients}  kernels/s ${formatRate(d.kernelsPerSecond)}`;
  // Two meters side by side with their labels: "  GPU [...]  MEM [...]".
  const meter = Math.max(12, Math.min(48, Math.floor((width - 12) / 2)));
  const gpu = bar(gpuMeterFraction(d), meter, `${d.gpuTimePerSecond.toFixed(2)} s/s`);
  const mem = bar(memoryFraction(d), meter, `${formatBytes(d.memoryUsed)}/${formatBytes(d.totalMemory)}`);
  const lines = [title, `  GPU ${gpu}  MEM ${mem}`];
  if (d.fault !== '') lines.push(`  FAULT ${d.fault}`);
  return lines;
}

function clientColumns(users: ReadonlyMap<number, string>): Column<ClientView>[] {
  return [
    { header: 'PID', align: 'right', cell: (c) => String(c.pid) },
    { header: 'USER', align: 'left', cell: (c) => users.get(c.uid) ?? String(c.uid) },
    { header: 'DEV', align: 'right', cell: (c) => String(c.device) },
    { header: 'SM%', align: 'right', cell: (c) => formatPercent(c.smShare) },
    { header: 'GPU%', align: 'right', cell: (c) => formatPercent(c.gpuShare) },
    { header: 'GPU TIME', align: 'right', cell: (c) => formatGpuTime(c.gpuTimeMs) },
    { header: 'KERN/S', align: 'right', cell: (c) => formatRate(c.kernelsPerSecond) },
    { header: 'MEM', align: 'right', cell: (c) => formatBytes(c.memoryInUse) },
    { header: 'PEAK', align: 'right', cell: (c) => formatBytes(c.memoryPeak) },
    { header: 'ERR', align: 'right', cell: (c) => String(c.errors) },
    { header: 'STATE', align: 'left', cell: (c) => c.state },
    { header: 'COMMAND', align: 'left', cell: (c) => c.command, flex: true },
  ];
}

/** One frame, one string per line, none longer than `width`, at most `height` lines when given. */
export function renderTop(s: StateView, options: TopFrameOptions): string[] {
  const { width } = options;
  const interval = s.intervalMs > 0 ? `rates over ${(s.intervalMs / 1000).toFixed(1)} s` : 'rates after the second sample';
  const summary =
    `openmps top - ${clock(s.time)}  daemon ${s.daemon.pid} up ${formatDuration(s.time - s.daemon.startedAt)}  ` +
    `${s.servers.length} server${s.servers.length === 1 ? '' : 's'}  ${s.clients.length} client${s.clients.length === 1 ? '' : 's'}  ${interval}` +
    (options.live ? '  (q quits)' : '');
  const head = [summary];
  if (options.error !== undefined) head.push(`! ${options.error}`);
  for (const d of s.devices) head.push('', ...deviceHeader(d, width));
  if (s.devices.length === 0) head.push('', 'No devices: a server starts with the first client.');
  head.push('');

  const clients = sortClients(s.clients);
  const rows = clients.length === 0 ? [table(clientColumns(options.users), [], width)[0] ?? '', '(no clients)'] : table(clientColumns(options.users), clients, width);
  let body = rows;
  if (options.height !== undefined) {
    const room = Math.max(2, options.height - head.length);
    if (rows.length > room) {
      const hidden = rows.length - (room - 1);
      body = [...rows.slice(0, room - 1), `… ${hidden} more client${hidden === 1 ? '' : 's'}`];
    }
  }
  const frame = [...head, ...body].map((l) => truncate(printable(l), width));
  // Many devices can fill the screen on their own: never draw past the last row (it would scroll).
  return options.height === undefined ? frame : frame.slice(0, options.height);
}
