// `openmps status` as text: the daemon, its servers, their devices and every client in one view,
// from one StateView. Pure: the width comes from the caller, times from the snapshot.
import type { ClientView, DeviceView, ServerView, StateView } from './snapshot.js';
import { formatBytes, formatDuration, printable, formatGpuTime, formatPercent, formatRate, table, truncate, type Column } from './render.js';

function modes(s: StateView): string {
  const d = s.daemon;
  const users = d.multiUser ? 'multi-user (-M): every user\'s server at once' : 'single-user: one user\'s server at a time';
  const shares = d.staticPartitioning
    ? `static SM partitions (-S), ${s.partitions.length} defined`
    : `default active thread percentage ${d.defaultActiveThreadPercentage}%`;
  return `${users}; ${shares}`;
}

const SERVER_COLUMNS: readonly Column<{ server: ServerView; now: number }>[] = [
  { header: 'PID', align: 'right', cell: ({ server }) => String(server.pid) },
  { header: 'UID', align: 'right', cell: ({ server }) => String(server.uid) },
  { header: 'STATE', align: 'left', cell: ({ server }) => server.state },
  { header: 'DEVICE', align: 'left', cell: ({ server }) => (server.deviceKind === '' ? '-' : server.deviceKind) },
  { header: 'DRIVER', align: 'left', cell: ({ server }) => (server.driver === '' ? '-' : server.driver) },
  { header: 'UP', align: 'right', cell: ({ server, now }) => formatDuration(now - server.startedAt) },
  { header: 'REASON', align: 'left', cell: ({ server }) => server.reason, flex: true },
];

/** Memory used of total, `1.2G/16.0G`. */
export function memoryOf(used: string, total: string): string {
  return `${formatBytes(used)}/${formatBytes(total)}`;
}

const DEVICE_COLUMNS: readonly Column<DeviceView>[] = [
  { header: 'SERVER', align: 'right', cell: (d) => String(d.serverPid) },
  { header: 'DEV', align: 'right', cell: (d) => String(d.ordinal) },
  { header: 'NAME', align: 'left', cell: (d) => d.name },
  { header: 'KIND', align: 'left', cell: (d) => d.kind },
  { header: 'SMS', align: 'right', cell: (d) => String(d.smCount) },
  { header: 'MEMORY', align: 'right', cell: (d) => memoryOf(d.memoryUsed, d.totalMemory) },
  { header: 'GPU TIME/S', align: 'right', cell: (d) => d.gpuTimePerSecond.toFixed(2) },
  { header: 'KERN/S', align: 'right', cell: (d) => formatRate(d.kernelsPerSecond) },
  { header: 'CLIENTS', align: 'right', cell: (d) => String(d.clients) },
  { header: 'ERR', align: 'right', cell: (d) => String(d.errors) },
  { header: 'FAULT', align: 'left', cell: (d) => (d.fault === '' ? '-' : d.fault), flex: true },
];

/** The SM share as a percentage of the device with the SM count: `25% (32)`. */
export function smShareOf(c: ClientView): string {
  return `${formatPercent(c.smShare)}% (${c.smCount})`;
}

/** The memory limit, `-` when only the device limits the client. */
export function limitOf(c: ClientView): string {
  return c.memoryLimit === '' ? '-' : formatBytes(c.memoryLimit);
}

const CLIENT_COLUMNS: readonly Column<ClientView>[] = [
  { header: 'PID', align: 'right', cell: (c) => String(c.pid) },
  { header: 'ID', align: 'right', cell: (c) => String(c.clientId) },
  { header: 'SERVER', align: 'right', cell: (c) => String(c.serverPid) },
  { header: 'DEV', align: 'right', cell: (c) => String(c.device) },
  { header: 'STATE', align: 'left', cell: (c) => c.state },
  { header: 'SM SHARE', align: 'right', cell: smShareOf },
  { header: 'MEM', align: 'right', cell: (c) => formatBytes(c.memoryInUse) },
  { header: 'LIMIT', align: 'right', cell: limitOf },
  { header: 'GPU TIME', align: 'right', cell: (c) => formatGpuTime(c.gpuTimeMs) },
  { header: 'KERNELS', align: 'right', cell: (c) => String(c.kernels) },
  { header: 'ERR', align: 'right', cell: (c) => String(c.errors) },
  { header: 'COMMAND', align: 'left', cell: (c) => c.command, flex: true },
];

/** A titled block: its rows, or `(empty)` when there are none to show. */
function section(title: string, rows: readonly string[] | undefined, empty: string): string[] {
  return ['', title, ...(rows ?? [`  (${empty})`])];
}

/** The whole `openmps status` view, one string per line. */
export function renderStatus(s: StateView, width: number): string[] {
  const d = s.daemon;
  const clients = [...s.clients].sort((a, b) => a.serverPid - b.serverPid || a.device - b.device || a.clientId - b.clientId);
  const lines = [
    `DAEMON   pid ${d.pid}, openmps ${d.version}, up ${formatDuration(s.time - d.startedAt)}, device ${d.device}`,
    `         pipe directory ${d.pipeDirectory}, log directory ${d.logDirectory}`,
    `         ${modes(s)}`,
    ...section(`SERVERS (${s.servers.length})`, s.servers.length === 0 ? undefined : table(SERVER_COLUMNS, s.servers.map((server) => ({ server, now: s.time })), width), 'none: one starts with the first client'),
    ...section(`DEVICES (${s.devices.length})`, s.devices.length === 0 ? undefined : table(DEVICE_COLUMNS, s.devices, width), 'none until a server runs'),
    ...section(`CLIENTS (${s.clients.length})`, clients.length === 0 ? undefined : table(CLIENT_COLUMNS, clients, width), 'none'),
  ];
  if (d.staticPartitioning) {
    const parts = s.partitions.map((p) => `  ${p.id}  ${p.chunks.length} chunks (${p.chunks.join(',')})`);
    lines.push(...section(`SM PARTITIONS (${s.partitions.length})`, parts.length === 0 ? undefined : parts, 'none: sm_partition add'));
  }
  if (s.intervalMs > 0) lines.push('', `Rates over the daemon's last sampling interval, ${(s.intervalMs / 1000).toFixed(1)} s.`);
  return lines.map((l) => truncate(printable(l), width));
}
