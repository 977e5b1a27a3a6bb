// What the command language prints: the shapes of NVIDIA's nvidia-cuda-mps-control output
// (docs/commands.md shows each). Pure functions over records the servers reported; output never
// ends with a newline (the shell adds one per non-empty reply).
import type { ClientRecord, DeviceRecord, PartitionRecord } from '../server/ipc.js';
import { formatMemorySize } from '../server/limits.js';
import { chunkLayoutProblem, formatChunkRanges, freeChunks, partitionNumber } from './partitions.js';

/**
 * `text` with control characters shown as `?`: a client's command line (its argv, which it
 * chooses) must not send escape sequences to an operator's terminal or break a table's lines.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** One item a line; nothing at all for an empty list (as MPS prints an empty server list). */
export function formatLines(items: readonly (string | number)[]): string {
  return items.map(String).join('\n');
}

/**
 * Columns left-aligned, each padded to its widest cell and separated by one space, trailing
 * spaces trimmed: the layout of MPS's `ps` and `device_query` tables, which read the same when a
 * tool collapses whitespace (as NVIDIA's own documentation shows them).
 */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return formatColumns([header, ...rows]);
}

/** formatTable's layout for lines that are all alike (a header of two lines, as lspart's). */
export function formatColumns(lines: readonly (readonly string[])[]): string {
  const columns = Math.max(0, ...lines.map((l) => l.length));
  const widths = Array.from({ length: columns }, (_, i) => Math.max(...lines.map((l) => (l[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    widths
      .map((w, i) => (cells[i] ?? '').padEnd(w))
      .join(' ')
      .trimEnd();
  return lines.map(line).join('\n');
}

/** One CSV field, quoted when it holds a comma, quote or line break (RFC 4180). */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

interface PciAddress {
  readonly domain: number;
  readonly bus: number;
  readonly device: number;
  readonly fn: number;
}

/** `0000:65:00.0` (or without the domain, or nvidia-smi's 8-digit domain) to its parts. */
function parsePciBusId(busId: string): PciAddress | undefined {
  const m = /^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(busId.trim());
  if (!m) return undefined;
  return {
    domain: m[1] === undefined ? 0 : parseInt(m[1], 16),
    bus: parseInt(m[2] ?? '0', 16),
    device: parseInt(m[3] ?? '0', 16),
    fn: parseInt(m[4] ?? '0', 16),
  };
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

/** `00:00.0`: bus, device and function, as get_device_client_list prints a device. */
export function pciShortId(busId: string): string {
  const a = parsePciBusId(busId);
  return a ? `${hex(a.bus, 2)}:${hex(a.device, 2)}.${hex(a.fn, 1)}` : busId;
}

/** `0000:20.00.00`: the "PCI IDs" column of MPS's device_query (domain:bus.device.function). */
export function pciQueryId(busId: string): string {
  const a = parsePciBusId(busId);
  return a ? `${hex(a.domain, 4)}:${hex(a.bus, 2)}.${hex(a.device, 2)}.${hex(a.fn, 2)}` : busId;
}

export interface PsRow {
  readonly pid: number;
  readonly clientId: number;
  readonly serverPid: number;
  readonly deviceUuid: string;
  /** The inode of the client's pid namespace (`4026531836`), or `-` when it cannot be read. */
  readonly namespace: string;
  readonly command: string;
}

export const PS_HEADER = ['PID', 'ID', 'SERVER', 'DEVICE', 'NAMESPACE', 'COMMAND'] as const;

/** What openmps adds to ps, after MPS's columns (docs/commands.md, "ps"). */
export interface PsAccounting {
  /** GPU time of the client's completed work, ms. */
  readonly gpuTimeMs: number;
  /** GPU time per wall time over the last sampling interval (0.5 = 50%). */
  readonly gpuShare: number;
  /** The client's SMs over the device's, 0..1. */
  readonly smShare: number;
  readonly memoryInUse: string;
  readonly memoryPeak: string;
  readonly kernels: number;
  readonly bytesHtoD: string;
  readonly bytesDtoH: string;
  readonly errors: number;
  readonly state: string;
}

/** The POD column: `<namespace>/<pod>/<container>` of a client a device plugin labelled. */
export interface PsPod {
  readonly pod?: string;
}

export const PS_ACCOUNTING_HEADER = ['GPU_TIME', 'GPU%', 'SM%', 'MEM', 'PEAK', 'KERNELS', 'HTOD', 'DTOH', 'ERRORS', 'STATE'] as const;

/** Bytes for a table cell: at most 4 significant characters and a binary unit (`1.5G`, `256M`, `0`). */
export function formatBytesShort(bytes: string | bigint | number): string {
  const n = Number(bytes);
  if (!(n > 0)) return '0';
  const units = ['', 'K', 'M', 'G', 'T', 'P'] as const;
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = i === 0 || v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  const trimmed = text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
  return `${trimmed}${units[i] ?? ''}`;
}

/** Seconds with millisecond resolution: `12.345`. */
export function formatGpuTime(ms: number): string {
  return (ms / 1000).toFixed(3);
}

function percent(fraction: number): string {
  return (fraction * 100).toFixed(1);
}

function accountingCells(a: PsAccounting): string[] {
  return [
    formatGpuTime(a.gpuTimeMs),
    percent(a.gpuShare),
    percent(a.smShare),
    formatBytesShort(a.memoryInUse),
    formatBytesShort(a.memoryPeak),
    String(a.kernels),
    formatBytesShort(a.bytesHtoD),
    formatBytesShort(a.bytesDtoH),
    String(a.errors),
    a.state,
  ];
}

/**
 * `ps`: MPS's `PID ID SERVER DEVICE NAMESPACE COMMAND`, one row per client context, then (unless
 * `mpsOnly`, `ps --mps`) openmps's accounting columns. COMMAND is padded to its widest so the
 * columns after it line up.
 */
export function formatPs(rows: readonly (PsRow & Partial<PsAccounting> & PsPod)[], mpsOnly = true): string {
  // POD only when some client has one (a node with the Kubernetes device plugin), so ps reads as
  // before everywhere else; last, since a script may cut the columns before it by position.
  const pods = !mpsOnly && rows.some((r) => r.pod !== undefined && r.pod !== '');
  const header = mpsOnly ? [...PS_HEADER] : [...PS_HEADER, ...PS_ACCOUNTING_HEADER, ...(pods ? ['POD'] : [])];
  return formatTable(
    header,
    rows.map((r) => {
      const mps = [String(r.pid), String(r.clientId), String(r.serverPid), r.deviceUuid, r.namespace, printable(r.command)];
      if (mpsOnly) return mps;
      const a: PsAccounting = {
        gpuTimeMs: r.gpuTimeMs ?? 0,
        gpuShare: r.gpuShare ?? 0,
        smShare: r.smShare ?? 0,
        memoryInUse: r.memoryInUse ?? '0',
        memoryPeak: r.memoryPeak ?? '0',
        kernels: r.kernels ?? 0,
        bytesHtoD: r.bytesHtoD ?? '0',
        bytesDtoH: r.bytesDtoH ?? '0',
        errors: r.errors ?? 0,
        state: r.state ?? '',
      };
      return [...mps, ...accountingCells(a), ...(pods ? [r.pod !== undefined && r.pod !== '' ? r.pod : '-'] : [])];
    }),
  );
}

export interface DeviceQuerySection {
  /** `Default`: the devices a new server would open; `Server <pid>`: what that server opened. */
  readonly title: string;
  readonly devices: readonly DeviceRecord[];
}

export const DEVICE_QUERY_HEADER = ['Device Ordinal', 'PCI IDs', 'UUID', 'Name', 'Attributes'] as const;

/**
 * The Attributes column: MPS prints `M`/`MD` for MLOPart devices, which openmps does not make;
 * openmps marks a software GPU `sim` so nobody mistakes it for hardware.
 */
export function deviceAttributes(device: DeviceRecord): string {
  return device.kind === 'sim' ? 'sim' : '';
}

function deviceQueryRow(d: DeviceRecord): string[] {
  return [String(d.ordinal), pciQueryId(d.pciBusId), d.uuid, d.name, deviceAttributes(d)];
}

/**
 * MPS's device_query: per section a title line, the header and one row per device. With csv, one
 * table: a first column names the section (`Default` or the server pid), fields quoted as needed.
 */
export function formatDeviceQuery(sections: readonly DeviceQuerySection[], csv: boolean): string {
  if (csv) {
    const lines = [['Server', ...DEVICE_QUERY_HEADER].join(',')];
    for (const s of sections) {
      const server = s.title.startsWith('Server ') ? s.title.slice('Server '.length) : s.title;
      for (const d of s.devices) lines.push([server, ...deviceQueryRow(d)].map(csvField).join(','));
    }
    return lines.join('\n');
  }
  return sections.map((s) => `${s.title}\n${formatTable(DEVICE_QUERY_HEADER, s.devices.map(deviceQueryRow))}`).join('\n');
}

/**
 * MPS's get_device_client_list for one server: per device `[<ordinal>] <bus:dev.fn>, <name>`,
 * then one `<client pid>.<client id>` line per client context on that device.
 */
export function formatDeviceClientList(devices: readonly DeviceRecord[], clients: readonly ClientRecord[]): string {
  const lines: string[] = [];
  for (const d of devices) {
    lines.push(`[${d.ordinal}] ${pciShortId(d.pciBusId)}, ${d.name}`);
    for (const c of clients) if (c.device === d.ordinal) lines.push(`${c.pid}.${c.clientId}`);
  }
  return lines.join('\n');
}

/** A thread percentage as MPS prints it: `100.0`, `40.0`, `33.5`. */
export function formatPercentage(p: number): string {
  return Number.isInteger(p) ? p.toFixed(1) : String(p);
}

/**
 * A memory limit as MPS prints it (`8G`, `512M`: formatMemorySize) from the decimal byte string a
 * server reports; '' (the line prints nothing) when there is no limit.
 */
export function formatMemoryLimit(bytes: string): string {
  if (!/^[0-9]+$/.test(bytes) || BigInt(bytes) === 0n) return '';
  return formatMemorySize(BigInt(bytes));
}

/** lspart's header: MPS's two lines, and openmps's chunk indices column. */
export const LSPART_HEADER: readonly (readonly string[])[] = [
  ['GPU', 'Partition', 'free', 'used', 'free', 'used', 'clients', 'chunk'],
  ['', '', 'chunk', 'chunk', 'SM', 'SM', '', 'indices'],
];

/**
 * MPS's lspart: per device a row with `-` as partition (free and used chunks and SMs, free SMs
 * counting those outside whole chunks, which no partition can take), then a row per partition of
 * it, oldest first (its number, its chunks and SMs, `Yes` if a client runs in it, else `No`). The
 * last column, openmps's, lists chunk indices: the free ones on a device row, the partition's own
 * on a partition row. UUIDs are printed whole, as in ps.
 */
export function formatLspart(devices: readonly DeviceRecord[], partitions: readonly PartitionRecord[], inUse: ReadonlySet<string>): string {
  const rows: string[][] = [];
  for (const d of devices) {
    const own = partitions.filter((p) => p.deviceUuid === d.uuid);
    const size = chunkLayoutProblem(d) === undefined ? d.smGroupSize : 0;
    const usedChunks = own.reduce((n, p) => n + p.chunks.length, 0);
    const free = freeChunks(d, partitions);
    rows.push([d.uuid, '-', String(free.length), String(usedChunks), String(d.smCount - usedChunks * size), String(usedChunks * size), '-', formatChunkRanges(free)]);
    for (const p of own) {
      rows.push([d.uuid, partitionNumber(p.id), '-', String(p.chunks.length), '-', String(p.chunks.length * size), inUse.has(p.id) ? 'Yes' : 'No', formatChunkRanges(p.chunks)]);
    }
  }
  return formatColumns([...LSPART_HEADER, ...rows]);
}
