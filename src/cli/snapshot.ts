// Reading the daemon's `state` reply (src/telemetry/state.ts) at the CLI's boundary: the JSON is
// `unknown` until every field the CLI shows has been checked, so a daemon of another version or a
// garbled reply is one clear error ("state reply: clients[2].gpuTimeMs is not a number"), never a
// crash deep inside the renderer or a table of `undefined`s. The CLI reads a StateView: the part of
// a StateSnapshot it shows, picked from state.ts's own types (a field the CLI uses that changes
// type there fails the build here). Other fields are neither required nor checked, since adding a
// field does not bump STATE_VERSION; `status --json` prints the reply whole.
import { controlCommand } from '../client/control-client.js';
import { CommandError } from './common.js';
import type { ClientState, PartitionRecord, ServerState } from '../server/ipc.js';
import { STATE_VERSION, type ClientSnapshot, type DaemonSnapshot, type DeviceSnapshot, type ServerSnapshot, type StateSnapshot } from '../telemetry/state.js';

export type DaemonView = Pick<
  DaemonSnapshot,
  'pid' | 'version' | 'pipeDirectory' | 'logDirectory' | 'device' | 'multiUser' | 'staticPartitioning' | 'startedAt' | 'defaultActiveThreadPercentage'
>;
export type ServerView = Pick<ServerSnapshot, 'pid' | 'uid' | 'state' | 'reason' | 'startedAt' | 'deviceKind' | 'driver'>;
export type DeviceView = Pick<
  DeviceSnapshot,
  'serverPid' | 'ordinal' | 'uuid' | 'name' | 'kind' | 'smCount' | 'totalMemory' | 'memoryUsed' | 'fault' | 'clients' | 'gpuTimeMs' | 'kernels' | 'errors' | 'gpuTimePerSecond' | 'kernelsPerSecond'
>;
export type ClientView = Pick<
  ClientSnapshot,
  | 'clientId'
  | 'pid'
  | 'uid'
  | 'command'
  | 'serverPid'
  | 'device'
  | 'state'
  | 'connectedAt'
  | 'activeThreadPercentage'
  | 'smCount'
  | 'smShare'
  | 'smPartition'
  | 'memoryLimit'
  | 'gpuTimeMs'
  | 'kernels'
  | 'memoryInUse'
  | 'memoryPeak'
  | 'errors'
  | 'gpuShare'
  | 'kernelsPerSecond'
>;

/** What `openmps status` and `openmps top` show of a StateSnapshot. */
export interface StateView {
  readonly version: StateSnapshot['version'];
  readonly time: number;
  readonly intervalMs: number;
  readonly daemon: DaemonView;
  readonly servers: readonly ServerView[];
  readonly devices: readonly DeviceView[];
  readonly clients: readonly ClientView[];
  readonly partitions: readonly PartitionRecord[];
}

/** A reply that is not a valid StateSnapshot; `path` names the first bad field. */
export class SnapshotError extends CommandError {
  readonly path: string;

  constructor(path: string, problem: string) {
    super(`state reply: ${path === '' ? '' : `${path} `}${problem}`);
    this.name = 'SnapshotError';
    this.path = path;
  }
}

type Obj = Readonly<Record<string, unknown>>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function object(v: unknown, path: string): Obj {
  if (!isObject(v)) throw new SnapshotError(path, 'is not an object');
  return v;
}

function array(v: unknown, path: string): readonly unknown[] {
  if (!Array.isArray(v)) throw new SnapshotError(path, 'is not an array');
  return v;
}

function field(o: Obj, key: string, path: string): { value: unknown; at: string } {
  return { value: o[key], at: path === '' ? key : `${path}.${key}` };
}

function num(o: Obj, key: string, path: string): number {
  const { value, at } = field(o, key, path);
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new SnapshotError(at, 'is not a number');
  return value;
}

function int(o: Obj, key: string, path: string): number {
  const v = num(o, key, path);
  if (!Number.isSafeInteger(v)) throw new SnapshotError(field(o, key, path).at, 'is not an integer');
  return v;
}

function str(o: Obj, key: string, path: string): string {
  const { value, at } = field(o, key, path);
  if (typeof value !== 'string') throw new SnapshotError(at, 'is not a string');
  return value;
}

function bool(o: Obj, key: string, path: string): boolean {
  const { value, at } = field(o, key, path);
  if (typeof value !== 'boolean') throw new SnapshotError(at, 'is not a boolean');
  return value;
}

/** A byte count as a decimal string; `allowEmpty` for limits, where '' means "none". */
function bytes(o: Obj, key: string, path: string, allowEmpty = false): string {
  const v = str(o, key, path);
  if ((v === '' && allowEmpty) || /^[0-9]+$/.test(v)) return v;
  throw new SnapshotError(field(o, key, path).at, `is not a decimal byte count ("${v}")`);
}

function oneOf<T extends string>(o: Obj, key: string, path: string, allowed: readonly T[]): T {
  const v = str(o, key, path);
  const found = allowed.find((a) => a === v);
  if (found === undefined) throw new SnapshotError(field(o, key, path).at, `is "${v}", not one of ${allowed.join(', ')}`);
  return found;
}

const SERVER_STATES: readonly ServerState[] = ['INITIALIZING', 'ACTIVE', 'FAULT', 'SHUTTING_DOWN'];
const CLIENT_STATES: readonly ClientState[] = ['ACTIVE', 'INACTIVE'];

function parseDaemon(v: unknown, path: string): DaemonView {
  const o = object(v, path);
  return {
    pid: int(o, 'pid', path),
    version: str(o, 'version', path),
    pipeDirectory: str(o, 'pipeDirectory', path),
    logDirectory: str(o, 'logDirectory', path),
    device: oneOf(o, 'device', path, ['cuda', 'sim', 'auto'] as const),
    multiUser: bool(o, 'multiUser', path),
    staticPartitioning: bool(o, 'staticPartitioning', path),
    startedAt: num(o, 'startedAt', path),
    defaultActiveThreadPercentage: num(o, 'defaultActiveThreadPercentage', path),
  };
}

function parseServer(v: unknown, path: string): ServerView {
  const o = object(v, path);
  return {
    pid: int(o, 'pid', path),
    uid: int(o, 'uid', path),
    state: oneOf(o, 'state', path, SERVER_STATES),
    reason: str(o, 'reason', path),
    startedAt: num(o, 'startedAt', path),
    deviceKind: oneOf(o, 'deviceKind', path, ['cuda', 'sim', ''] as const),
    driver: str(o, 'driver', path),
  };
}

function parseDevice(v: unknown, path: string): DeviceView {
  const o = object(v, path);
  return {
    serverPid: int(o, 'serverPid', path),
    ordinal: int(o, 'ordinal', path),
    uuid: str(o, 'uuid', path),
    name: str(o, 'name', path),
    kind: oneOf(o, 'kind', path, ['cuda', 'sim'] as const),
    smCount: int(o, 'smCount', path),
    totalMemory: bytes(o, 'totalMemory', path),
    memoryUsed: bytes(o, 'memoryUsed', path),
    fault: str(o, 'fault', path),
    clients: int(o, 'clients', path),
    gpuTimeMs: num(o, 'gpuTimeMs', path),
    kernels: int(o, 'kernels', path),
    errors: int(o, 'errors', path),
    gpuTimePerSecond: num(o, 'gpuTimePerSecond', path),
    kernelsPerSecond: num(o, 'kernelsPerSecond', path),
  };
}

function parseClient(v: unknown, path: string): ClientView {
  const o = object(v, path);
  return {
    clientId: int(o, 'clientId', path),
    pid: int(o, 'pid', path),
    uid: int(o, 'uid', path),
    command: str(o, 'command', path),
    serverPid: int(o, 'serverPid', path),
    device: int(o, 'device', path),
    state: oneOf(o, 'state', path, CLIENT_STATES),
    connectedAt: num(o, 'connectedAt', path),
    activeThreadPercentage: num(o, 'activeThreadPercentage', path),
    smCount: int(o, 'smCount', path),
    smShare: num(o, 'smShare', path),
    smPartition: str(o, 'smPartition', path),
    memoryLimit: bytes(o, 'memoryLimit', path, true),
    gpuTimeMs: num(o, 'gpuTimeMs', path),
    kernels: int(o, 'kernels', path),
    memoryInUse: bytes(o, 'memoryInUse', path),
    memoryPeak: bytes(o, 'memoryPeak', path),
    errors: int(o, 'errors', path),
    gpuShare: num(o, 'gpuShare', path),
    kernelsPerSecond: num(o, 'kernelsPerSecond', path),
  };
}

function parsePartitionRecord(v: unknown, path: string): PartitionRecord {
  const o = object(v, path);
  const chunks = array(o.chunks, `${path}.chunks`).map((c, i) => {
    if (typeof c !== 'number' || !Number.isSafeInteger(c) || c < 0) throw new SnapshotError(`${path}.chunks[${i}]`, 'is not a chunk index');
    return c;
  });
  return { id: str(o, 'id', path), deviceUuid: str(o, 'deviceUuid', path), chunks };
}

function list<T>(o: Obj, key: string, parse: (v: unknown, path: string) => T): T[] {
  return array(o[key], key).map((item, i) => parse(item, `${key}[${i}]`));
}

/** Checks a parsed `state` reply; throws SnapshotError naming the first field that is wrong. */
export function validateState(v: unknown): StateView {
  const o = object(v, '');
  const version = num(o, 'version', '');
  if (version !== STATE_VERSION) throw new SnapshotError('version', `is ${version}; this openmps reads state version ${STATE_VERSION}`);
  return {
    version: STATE_VERSION,
    time: num(o, 'time', ''),
    intervalMs: num(o, 'intervalMs', ''),
    daemon: parseDaemon(o.daemon, 'daemon'),
    servers: list(o, 'servers', parseServer),
    devices: list(o, 'devices', parseDevice),
    clients: list(o, 'clients', parseClient),
    partitions: list(o, 'partitions', parsePartitionRecord),
  };
}

/** A `state` reply: what the CLI shows, checked, and the whole JSON as the daemon sent it. */
export interface StateReply {
  readonly view: StateView;
  readonly json: unknown;
}

/** The text of a `state` reply (one line of JSON), checked. */
export function parseStateReply(text: string): StateReply {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SnapshotError('', `is not JSON (${err instanceof Error ? err.message : String(err)}): ${JSON.stringify(text.slice(0, 80))}`);
  }
  return { view: validateState(json), json };
}

/**
 * Asks the daemon in `pipeDirectory` for its state. Without a daemon this rejects with the
 * control client's CudaError (805, "Cannot find openmps control daemon process in <dir> (...)");
 * a daemon that refuses the command (an older one: `Unknown command "state"`) or answers
 * something that is not a snapshot rejects with a SnapshotError.
 */
export async function fetchState(pipeDirectory: string): Promise<StateReply> {
  const reply = await controlCommand(pipeDirectory, 'state');
  if (!reply.ok) throw new SnapshotError('', `refused by the control daemon in ${pipeDirectory}: ${reply.output.trim()}`);
  return parseStateReply(reply.output);
}
