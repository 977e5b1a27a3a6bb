// The operator command language: one command a line, words split on whitespace, NVIDIA MPS's
// syntax (docs/commands.md). parseCommand is a pure function: it turns a line into a typed command
// or into the error text the operator sees; it never throws and never touches the daemon's state.
// Percentages and memory sizes are read by the same functions the server uses (src/server/limits.ts),
// so what the daemon accepts is what a server and a client accept.
import { parseMemorySize, parsePercentage } from '../server/limits.js';

/**
 * A device as an operator names it: an ordinal, or a GPU UUID with or without its `GPU-` prefix
 * (a unique prefix of one is resolved against the devices the servers reported: src/control/devices.ts).
 * `text` is the word as typed, for messages.
 */
export type DeviceSpec = { readonly ordinal: number; readonly text: string } | UuidSpec;

/** A GPU UUID or a prefix of one, normalized to `GPU-<lower-case hex>`. */
export interface UuidSpec {
  readonly uuid: string;
  readonly text: string;
}

/** A partition id as `sm_partition` prints it: `GPU-<uuid>/<number>`. */
export interface PartitionSpec {
  readonly device: UuidSpec;
  readonly number: number;
}

export type ControlCommand =
  | { readonly name: 'empty' }
  | { readonly name: 'get_server_list' }
  | { readonly name: 'get_server_status'; readonly pid: number }
  | { readonly name: 'start_server'; readonly uid: number }
  | { readonly name: 'shutdown_server'; readonly pid: number; readonly force: boolean }
  | { readonly name: 'get_client_list'; readonly pid: number }
  | { readonly name: 'get_device_client_list'; readonly pid: number | undefined }
  | { readonly name: 'ps'; readonly pid: number | undefined; readonly mpsOnly: boolean }
  /** openmps's own: the state snapshot as one line of JSON (src/telemetry/state.ts). */
  | { readonly name: 'state'; readonly history: boolean }
  | { readonly name: 'device_query'; readonly pid: number | undefined; readonly csv: boolean }
  | { readonly name: 'terminate_client'; readonly serverPid: number; readonly clientPid: number }
  | { readonly name: 'get_default_active_thread_percentage' }
  | { readonly name: 'set_default_active_thread_percentage'; readonly percentage: number }
  | { readonly name: 'get_active_thread_percentage'; readonly pid: number }
  | { readonly name: 'set_active_thread_percentage'; readonly pid: number; readonly percentage: number }
  | { readonly name: 'get_default_device_pinned_mem_limit'; readonly device: DeviceSpec }
  | { readonly name: 'set_default_device_pinned_mem_limit'; readonly device: DeviceSpec; readonly bytes: bigint }
  | { readonly name: 'get_device_pinned_mem_limit'; readonly pid: number; readonly device: DeviceSpec }
  | { readonly name: 'set_device_pinned_mem_limit'; readonly pid: number; readonly device: DeviceSpec; readonly bytes: bigint }
  | { readonly name: 'get_default_client_priority' }
  | { readonly name: 'set_default_client_priority'; readonly priority: 0 | 1 }
  | { readonly name: 'set_client_active_thread_percentage'; readonly serverPid: number; readonly clientPid: number; readonly percentage: number }
  | { readonly name: 'set_client_device_mem_limit'; readonly serverPid: number; readonly clientPid: number; readonly device: DeviceSpec; readonly bytes: bigint }
  | { readonly name: 'sm_partition'; readonly action: 'add'; readonly device: UuidSpec; readonly chunks: number }
  | { readonly name: 'sm_partition'; readonly action: 'rm'; readonly partition: PartitionSpec }
  | { readonly name: 'lspart' }
  /** openmps's own, for the Kubernetes device plugin: who holds an allocation (docs/kubernetes.md). */
  | { readonly name: 'label_allocation'; readonly allocation: string; readonly namespace: string; readonly pod: string; readonly container: string }
  | { readonly name: 'unlabel_allocation'; readonly allocation: string }
  | { readonly name: 'quit'; readonly timeoutSeconds: number | undefined };

export type CommandName = Exclude<ControlCommand['name'], 'empty'>;

export type ParseResult = { readonly ok: true; readonly command: ControlCommand } | { readonly ok: false; readonly error: string };

/** The syntax of every command, as its usage line prints it. */
export const USAGE: Readonly<Record<CommandName, string>> = {
  get_server_list: 'get_server_list',
  get_server_status: 'get_server_status <PID>',
  start_server: 'start_server -uid <UID>',
  shutdown_server: 'shutdown_server <PID> [-f]',
  get_client_list: 'get_client_list <PID>',
  get_device_client_list: 'get_device_client_list [<PID>]',
  ps: 'ps [-p <PID>] [--mps]',
  state: 'state [--history]',
  device_query: 'device_query [<PID>] [--csv]',
  terminate_client: 'terminate_client <server PID> <client PID>',
  get_default_active_thread_percentage: 'get_default_active_thread_percentage',
  set_default_active_thread_percentage: 'set_default_active_thread_percentage <percentage>',
  get_active_thread_percentage: 'get_active_thread_percentage <PID>',
  set_active_thread_percentage: 'set_active_thread_percentage <PID> <percentage>',
  get_default_device_pinned_mem_limit: 'get_default_device_pinned_mem_limit <device>',
  set_default_device_pinned_mem_limit: 'set_default_device_pinned_mem_limit <device> <size>',
  get_device_pinned_mem_limit: 'get_device_pinned_mem_limit <PID> <device>',
  set_device_pinned_mem_limit: 'set_device_pinned_mem_limit <PID> <device> <size>',
  get_default_client_priority: 'get_default_client_priority',
  set_default_client_priority: 'set_default_client_priority <0|1>',
  set_client_active_thread_percentage: 'set_client_active_thread_percentage <server PID> <client PID> <percentage>',
  set_client_device_mem_limit: 'set_client_device_mem_limit <server PID> <client PID> <device> <size>',
  sm_partition: 'sm_partition add <GPU UUID> <chunks> | sm_partition rm <GPU UUID>/<ID> | sm_partition rm <GPU UUID> <ID>',
  lspart: 'lspart',
  label_allocation: 'label_allocation <allocation> <namespace> <pod> <container>',
  unlabel_allocation: 'unlabel_allocation <allocation>',
  quit: 'quit [-t <seconds>]',
};

function isCommandName(word: string): word is CommandName {
  return Object.hasOwn(USAGE, word);
}

/** Largest pid Linux can hand out (pid_max is at most 2^22), kept generous at int32. */
const MAX_PID = 0x7fffffff;
/** (uid_t)-1 means "no change" to setuid, so the largest usable uid is 2^32 - 2. */
const MAX_UID = 0xfffffffe;

/** An allocation id as the device plugin makes it (src/k8s/units.ts) and a server reads it. */
export const ALLOCATION_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
/** A Kubernetes object name (DNS-1123 subdomain or label): what a namespace, pod or container may be called. */
const KUBERNETES_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function parseAllocation(word: string | undefined): string {
  if (word === undefined) throw new UsageError('missing allocation');
  if (!ALLOCATION_PATTERN.test(word)) throw new UsageError(`invalid allocation "${word}": expected 1 to 128 letters, digits, '.', '_', ':' or '-'`);
  return word;
}

function parseKubernetesName(word: string | undefined, what: string): string {
  if (word === undefined) throw new UsageError(`missing ${what}`);
  if (!KUBERNETES_NAME.test(word)) throw new UsageError(`invalid ${what} "${word}": expected a Kubernetes name (lower-case letters, digits, '-' and '.')`);
  return word;
}

/** Bad arguments; caught in parseCommand and turned into the reply's text. */
class UsageError extends Error {
  readonly problem: string;
  constructor(problem: string) {
    super(problem);
    this.problem = problem;
  }
}

function parsePid(word: string | undefined, what = 'PID'): number {
  if (word === undefined) throw new UsageError(`missing ${what}`);
  if (!/^[0-9]+$/.test(word)) throw new UsageError(`invalid ${what} "${word}": expected a positive integer`);
  const n = Number(word);
  if (n < 1 || n > MAX_PID) throw new UsageError(`invalid ${what} "${word}": out of range`);
  return n;
}

function parseUid(word: string | undefined): number {
  if (word === undefined) throw new UsageError('missing UID');
  if (!/^[0-9]+$/.test(word)) throw new UsageError(`invalid UID "${word}": expected a non-negative integer`);
  const n = Number(word);
  if (n > MAX_UID) throw new UsageError(`invalid UID "${word}": out of range`);
  return n;
}

/** A decimal number, no exponent or sign tricks: what an operator types. */
function parseDecimal(word: string | undefined, what: string): number {
  if (word === undefined) throw new UsageError(`missing ${what}`);
  if (!/^[0-9]+(\.[0-9]+)?$|^\.[0-9]+$/.test(word)) throw new UsageError(`invalid ${what} "${word}": expected a number`);
  return Number(word);
}

/** 1 to 100, decimals allowed (MPS prints them back as `40.0`); the server's own rule. */
function parsePercentageWord(word: string | undefined): number {
  if (word === undefined) throw new UsageError('missing percentage');
  const percentage = parsePercentage(word);
  if (percentage === undefined) throw new UsageError(`invalid percentage "${word}": expected a number above 0 and at most 100`);
  return percentage;
}

/** The largest limit the client protocol carries (a u64, docs/protocol.md). */
const MAX_MEMORY_BYTES = 2n ** 64n - 1n;

/** MPS's `<int><G|M>`; K, T and plain bytes too (parseMemorySize). Zero is no limit at all: refused. */
function parseSize(word: string | undefined): bigint {
  if (word === undefined) throw new UsageError('missing size');
  const bytes = parseMemorySize(word);
  if (bytes === undefined) throw new UsageError(`invalid size "${word}": expected an integer with an optional K, M, G or T suffix (8G, 512M)`);
  if (bytes === 0n) throw new UsageError(`invalid size "${word}": a limit must be more than 0 bytes`);
  if (bytes > MAX_MEMORY_BYTES) throw new UsageError(`invalid size "${word}": out of range`);
  return bytes;
}

/** Ordinals beyond this are no device any platform reports; bounded so the number stays exact. */
const MAX_ORDINAL = 0xffff;
/** Hex digits and dashes after an optional `GPU-`: a full UUID or a prefix of one. */
const UUID_WORD = /^(?:GPU-)?([0-9a-f][0-9a-f-]*)$/i;

function parseUuid(word: string | undefined): UuidSpec {
  if (word === undefined) throw new UsageError('missing GPU UUID');
  const m = UUID_WORD.exec(word);
  if (!m?.[1]) throw new UsageError(`invalid GPU UUID "${word}": expected GPU-<hex digits and dashes>`);
  // Normalized so one device has one spelling; drivers print UUIDs in lower case.
  return { uuid: `GPU-${m[1].toLowerCase()}`, text: word };
}

/** An ordinal (all digits) or a GPU UUID; all digits is always an ordinal, as CUDA_VISIBLE_DEVICES reads it. */
function parseDevice(word: string | undefined): DeviceSpec {
  if (word === undefined) throw new UsageError('missing device');
  if (/^[0-9]+$/.test(word)) {
    const ordinal = Number(word);
    if (ordinal > MAX_ORDINAL) throw new UsageError(`invalid device "${word}": out of range`);
    return { ordinal, text: word };
  }
  if (!UUID_WORD.test(word)) throw new UsageError(`invalid device "${word}": expected an ordinal or a GPU UUID`);
  return parseUuid(word);
}

/** Bounded count of chunks: no device has more than a few hundred. */
const MAX_CHUNKS = 0xffff;

function parseChunks(word: string | undefined): number {
  if (word === undefined) throw new UsageError('missing chunk count');
  if (!/^[0-9]+$/.test(word)) throw new UsageError(`invalid chunk count "${word}": expected a positive integer`);
  const n = Number(word);
  if (n < 1 || n > MAX_CHUNKS) throw new UsageError(`invalid chunk count "${word}": out of range`);
  return n;
}

function parsePartitionNumber(word: string | undefined): number {
  if (word === undefined || word === '') throw new UsageError('missing partition ID');
  if (!/^[0-9]+$/.test(word)) throw new UsageError(`invalid partition ID "${word}": expected a non-negative integer`);
  const n = Number(word);
  if (n > MAX_PID) throw new UsageError(`invalid partition ID "${word}": out of range`);
  return n;
}

/** `add <uuid> <chunks>`, `rm <uuid>/<id>` or `rm <uuid> <id>` (MPS takes both rm forms). */
function parseSmPartition(args: readonly string[]): ControlCommand {
  const [action, target, ...rest] = args;
  if (action === 'add') {
    const device = parseUuid(target);
    const chunks = parseChunks(rest[0]);
    noArguments(rest.slice(1));
    return { name: 'sm_partition', action, device, chunks };
  }
  if (action === 'rm') {
    if (target === undefined) throw new UsageError('missing partition');
    const slash = target.lastIndexOf('/');
    if (slash >= 0) {
      const partition = { device: parseUuid(target.slice(0, slash)), number: parsePartitionNumber(target.slice(slash + 1)) };
      noArguments(rest);
      return { name: 'sm_partition', action, partition };
    }
    const partition = { device: parseUuid(target), number: parsePartitionNumber(rest[0]) };
    noArguments(rest.slice(1));
    return { name: 'sm_partition', action, partition };
  }
  throw new UsageError(action === undefined ? 'missing add or rm' : `unknown action "${action}": expected add or rm`);
}

function noArguments(args: readonly string[]): void {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
}

function parseArguments(name: CommandName, args: readonly string[]): ControlCommand {
  switch (name) {
    case 'get_server_list':
    case 'get_default_active_thread_percentage':
    case 'get_default_client_priority':
    case 'lspart':
      noArguments(args);
      return { name };
    case 'get_server_status':
    case 'get_client_list': {
      const pid = parsePid(args[0]);
      noArguments(args.slice(1));
      return { name, pid };
    }
    case 'start_server': {
      if (args[0] !== '-uid') throw new UsageError(args[0] === undefined ? 'missing -uid <UID>' : `unexpected argument "${args[0]}"`);
      const uid = parseUid(args[1]);
      noArguments(args.slice(2));
      return { name, uid };
    }
    case 'shutdown_server': {
      // `-f` may come before or after the pid: operators type both.
      const force = args.includes('-f');
      const rest = args.filter((a) => a !== '-f');
      if (args.filter((a) => a === '-f').length > 1) throw new UsageError('-f given twice');
      const pid = parsePid(rest[0]);
      noArguments(rest.slice(1));
      return { name, pid, force };
    }
    case 'get_device_client_list': {
      const pid = args[0] === undefined ? undefined : parsePid(args[0]);
      noArguments(args.slice(1));
      return { name, pid };
    }
    case 'ps': {
      const mpsOnly = args.includes('--mps');
      if (args.filter((a) => a === '--mps').length > 1) throw new UsageError('--mps given twice');
      const rest = args.filter((a) => a !== '--mps');
      if (rest.length === 0) return { name, pid: undefined, mpsOnly };
      if (rest[0] !== '-p') throw new UsageError(`unexpected argument "${rest[0] ?? ''}"`);
      const pid = parsePid(rest[1]);
      noArguments(rest.slice(2));
      return { name, pid, mpsOnly };
    }
    case 'state': {
      if (args.length === 0) return { name, history: false };
      if (args[0] !== '--history') throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
      noArguments(args.slice(1));
      return { name, history: true };
    }
    case 'device_query': {
      let csv = false;
      let pid: number | undefined;
      for (const arg of args) {
        if (arg === '--csv') {
          if (csv) throw new UsageError('--csv given twice');
          csv = true;
        } else if (pid === undefined) {
          pid = parsePid(arg);
        } else {
          throw new UsageError(`unexpected argument "${arg}"`);
        }
      }
      return { name, pid, csv };
    }
    case 'terminate_client': {
      const serverPid = parsePid(args[0], 'server PID');
      const clientPid = parsePid(args[1], 'client PID');
      noArguments(args.slice(2));
      return { name, serverPid, clientPid };
    }
    case 'set_default_active_thread_percentage': {
      const percentage = parsePercentageWord(args[0]);
      noArguments(args.slice(1));
      return { name, percentage };
    }
    case 'get_active_thread_percentage': {
      const pid = parsePid(args[0]);
      noArguments(args.slice(1));
      return { name, pid };
    }
    case 'set_active_thread_percentage': {
      const pid = parsePid(args[0]);
      const percentage = parsePercentageWord(args[1]);
      noArguments(args.slice(2));
      return { name, pid, percentage };
    }
    case 'get_default_device_pinned_mem_limit': {
      const device = parseDevice(args[0]);
      noArguments(args.slice(1));
      return { name, device };
    }
    case 'set_default_device_pinned_mem_limit': {
      const device = parseDevice(args[0]);
      const bytes = parseSize(args[1]);
      noArguments(args.slice(2));
      return { name, device, bytes };
    }
    case 'get_device_pinned_mem_limit': {
      const pid = parsePid(args[0]);
      const device = parseDevice(args[1]);
      noArguments(args.slice(2));
      return { name, pid, device };
    }
    case 'set_device_pinned_mem_limit': {
      const pid = parsePid(args[0]);
      const device = parseDevice(args[1]);
      const bytes = parseSize(args[2]);
      noArguments(args.slice(3));
      return { name, pid, device, bytes };
    }
    case 'set_default_client_priority': {
      const word = args[0];
      if (word === undefined) throw new UsageError('missing priority');
      if (word !== '0' && word !== '1') throw new UsageError(`invalid priority "${word}": expected 0 (normal) or 1 (below normal)`);
      noArguments(args.slice(1));
      return { name, priority: word === '0' ? 0 : 1 };
    }
    case 'set_client_active_thread_percentage': {
      const serverPid = parsePid(args[0], 'server PID');
      const clientPid = parsePid(args[1], 'client PID');
      const percentage = parsePercentageWord(args[2]);
      noArguments(args.slice(3));
      return { name, serverPid, clientPid, percentage };
    }
    case 'set_client_device_mem_limit': {
      const serverPid = parsePid(args[0], 'server PID');
      const clientPid = parsePid(args[1], 'client PID');
      const device = parseDevice(args[2]);
      const bytes = parseSize(args[3]);
      noArguments(args.slice(4));
      return { name, serverPid, clientPid, device, bytes };
    }
    case 'sm_partition':
      return parseSmPartition(args);
    case 'label_allocation': {
      const allocation = parseAllocation(args[0]);
      const namespace = parseKubernetesName(args[1], 'namespace');
      const pod = parseKubernetesName(args[2], 'pod');
      const container = parseKubernetesName(args[3], 'container');
      noArguments(args.slice(4));
      return { name, allocation, namespace, pod, container };
    }
    case 'unlabel_allocation': {
      const allocation = parseAllocation(args[0]);
      noArguments(args.slice(1));
      return { name, allocation };
    }
    case 'quit': {
      if (args.length === 0) return { name, timeoutSeconds: undefined };
      if (args[0] !== '-t') throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
      const timeoutSeconds = parseDecimal(args[1], 'timeout');
      noArguments(args.slice(2));
      return { name, timeoutSeconds };
    }
  }
}

/**
 * One line of the command language. Errors read as MPS's do: `Unknown command "x"` for a word
 * that is no command; for bad arguments, what is wrong and then `Usage: <syntax>` on its own line.
 */
export function parseCommand(line: string): ParseResult {
  const words = line.trim().split(/\s+/).filter((w) => w !== '');
  const [first, ...args] = words;
  if (first === undefined) return { ok: true, command: { name: 'empty' } };
  if (!isCommandName(first)) return { ok: false, error: `Unknown command "${first}"` };
  try {
    return { ok: true, command: parseArguments(first, args) };
  } catch (err) {
    if (err instanceof UsageError) return { ok: false, error: `${first}: ${err.problem}\nUsage: ${USAGE[first]}` };
    throw err;
  }
}
