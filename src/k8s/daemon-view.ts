// What the device plugin reads of the control daemon, over its control socket with the command
// language (as `echo state | openmps-control` would): the GPUs (device_query, which starts the
// caller's server when none has run, so the daemon knows its devices) and, every poll, the state
// snapshot (src/telemetry/state.ts) that health is decided from. A GPU is Unhealthy while
//   - the daemon does not answer (every GPU: no pod could become a client),
//   - its device has a sticky fault (until recovery: the faulted clients have exited and the
//     device is usable again; the server's FAULT state covers all its devices, and a server in
//     FAULT for one device goes on serving the others, so it is not what decides),
//   - server restarts are being delayed because servers keep dying right after their start
//     (daemon.restartDelays: every GPU, since a pod's first call would fail with 807 meanwhile);
// and Healthy otherwise, including while no server runs (the next client starts one).
import { controlCommand } from '../client/control-client.js';
import { HEALTHY, UNHEALTHY, type Health } from './grpc.js';

export interface GpuHealth {
  readonly health: Health;
  /** Why it is Unhealthy ('' when Healthy), for the plugin's log. */
  readonly reason: string;
}

/** The parts of a state snapshot health and labels are decided from. */
export interface DaemonState {
  readonly daemonPid: number;
  readonly daemonStartedAt: number;
  readonly devices: readonly { readonly uuid: string; readonly serverPid: number; readonly fault: string; readonly totalMemory: bigint | undefined }[];
  readonly servers: readonly { readonly pid: number; readonly state: string; readonly reason: string }[];
  readonly restartDelays: readonly { readonly uid: number; readonly last: string }[];
}

type Obj = Readonly<Record<string, unknown>>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function field<T>(o: Obj, key: string, check: (v: unknown) => v is T, what: string): T {
  const v = o[key];
  if (!check(v)) throw new Error(`state reply: ${what}.${key} is missing or malformed`);
  return v;
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isString = (v: unknown): v is string => typeof v === 'string';
const isArray = (v: unknown): v is readonly unknown[] => Array.isArray(v);

/** The `state` reply's JSON, checked for what the plugin reads. */
export function readDaemonState(text: string): DaemonState {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error('state reply is not JSON');
  }
  if (!isObject(json)) throw new Error('state reply is not an object');
  const daemon = json.daemon;
  if (!isObject(daemon)) throw new Error('state reply: daemon is missing');
  const devices = field(json, 'devices', isArray, 'state').map((d, i) => {
    if (!isObject(d)) throw new Error(`state reply: devices[${i}] is not an object`);
    const total = d.totalMemory;
    return {
      uuid: field(d, 'uuid', isString, `devices[${i}]`),
      serverPid: field(d, 'serverPid', isNumber, `devices[${i}]`),
      fault: field(d, 'fault', isString, `devices[${i}]`),
      totalMemory: typeof total === 'string' && /^[0-9]+$/.test(total) ? BigInt(total) : undefined,
    };
  });
  const servers = field(json, 'servers', isArray, 'state').map((s, i) => {
    if (!isObject(s)) throw new Error(`state reply: servers[${i}] is not an object`);
    return { pid: field(s, 'pid', isNumber, `servers[${i}]`), state: field(s, 'state', isString, `servers[${i}]`), reason: typeof s.reason === 'string' ? s.reason : '' };
  });
  // Older daemons have no restartDelays: none known.
  const delays = Array.isArray(daemon.restartDelays) ? daemon.restartDelays : [];
  const restartDelays = delays.filter(isObject).map((r) => ({ uid: typeof r.uid === 'number' ? r.uid : -1, last: typeof r.last === 'string' ? r.last : '' }));
  return {
    daemonPid: field(daemon, 'pid', isNumber, 'daemon'),
    daemonStartedAt: field(daemon, 'startedAt', isNumber, 'daemon'),
    devices,
    servers,
    restartDelays,
  };
}

/** Each GPU's health from one state reading; `undefined` state: the daemon did not answer. */
export function gpuHealth(uuids: readonly string[], state: DaemonState | undefined, unreachable = 'the control daemon does not answer'): Map<string, GpuHealth> {
  const out = new Map<string, GpuHealth>();
  for (const uuid of uuids) {
    if (state === undefined) {
      out.set(uuid, { health: UNHEALTHY, reason: unreachable });
      continue;
    }
    let reason = '';
    for (const d of state.devices) {
      if (d.uuid.toLowerCase() !== uuid.toLowerCase()) continue;
      // The device's own sticky fault, not the server's FAULT state: a server in FAULT for one
      // device still serves its others, and their pods should keep being scheduled.
      if (d.fault !== '') {
        reason = `device fault ${d.fault} on server ${d.serverPid}`;
        break;
      }
    }
    const delay = state.restartDelays[0];
    if (reason === '' && delay !== undefined) reason = `servers keep dying: restarts of user ${delay.uid}'s server are delayed (${delay.last})`;
    out.set(uuid, reason === '' ? { health: HEALTHY, reason: '' } : { health: UNHEALTHY, reason });
  }
  return out;
}

/** The daemon's state, or undefined when it does not answer (or answers something unreadable). */
export async function fetchDaemonState(pipeDirectory: string): Promise<DaemonState | undefined> {
  try {
    const reply = await controlCommand(pipeDirectory, 'state');
    return reply.ok ? readDaemonState(reply.output) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The GPUs the daemon's servers see, by UUID, from `device_query --csv` (its Default section: what
 * a new server opens; the command starts the caller's server when none has run yet).
 */
export async function fetchGpuUuids(pipeDirectory: string): Promise<string[]> {
  const reply = await controlCommand(pipeDirectory, 'device_query --csv');
  if (!reply.ok) throw new Error(`device_query failed: ${reply.output}`);
  const uuids: string[] = [];
  for (const line of reply.output.split('\n').slice(1)) {
    // Server,Device Ordinal,PCI IDs,UUID,Name,Attributes: the UUID never needs quoting.
    const cells = line.split(',');
    if (cells[0] === 'Default' && cells[3] !== undefined && !uuids.includes(cells[3])) uuids.push(cells[3]);
  }
  return uuids;
}

/** Sends one command line; throws with the daemon's words when it refuses. */
export async function daemonCommand(pipeDirectory: string, line: string): Promise<void> {
  const reply = await controlCommand(pipeDirectory, line);
  if (!reply.ok) throw new Error(`${line.split(' ')[0] ?? line}: ${reply.output}`);
}
