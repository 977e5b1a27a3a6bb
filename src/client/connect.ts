// connect(): join the openmps server of this user (MPS mode), or, with no daemon in the pipe
// directory, run on a device in this process (bypass mode, as an MPS client without a daemon).
// Settings follow MPS's client variables under OPENMPS_ names; explicit options win over them.
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { CudaError } from '../cuda/cuda-error.js';
import { openPlatform, parseDeviceChoice, type DeviceChoice } from '../devices/index.js';
import { MAX_MAPPING_BYTES } from '../native/bindings.js';
import { PROTOCOL_VERSION, type RequestOf } from '../protocol/messages.js';
import { CALL_NAMES } from '../server/dispatcher.js';
import { deviceInfoToWire, limitsToWire } from '../server/server.js';
import { DeviceOwnership, Session } from '../server/session.js';
import { clipUtf8, FramedSocket, handshakeError, setCallNames } from '../transport/framed-socket.js';
import { MAX_COMMAND_BYTES } from '../transport/socket-bounds.js';
import { checkConnectOptions } from './arguments.js';
import { Context } from './context.js';
import { DirectChannel } from './direct-channel.js';
import { RemoteChannel, SYNC_WAITS, type SyncWait } from './remote-channel.js';

setCallNames(CALL_NAMES);

export const DEFAULT_PIPE_DIRECTORY = '/tmp/openmps';

export interface ConnectOptions {
  /** Where the daemon's control socket is (OPENMPS_PIPE_DIRECTORY, default /tmp/openmps). */
  readonly pipeDirectory?: string;
  /** 'auto' (default): MPS mode when a daemon answers, else bypass; 'mps' fails without a daemon. */
  readonly mode?: 'auto' | 'mps' | 'direct';
  /**
   * Device ordinal among those the client sees (default 0): the server's devices, or those the
   * client's CUDA_VISIBLE_DEVICES lists of them (ordinals as the server numbers them, or UUIDs).
   */
  readonly device?: number;
  /** 1-100; can only tighten the server's share (OPENMPS_ACTIVE_THREAD_PERCENTAGE). */
  readonly activeThreadPercentage?: number;
  /** `0=1G,1=512M` (OPENMPS_PINNED_DEVICE_MEM_LIMIT). */
  readonly pinnedMemLimit?: string;
  /** 0 normal, 1 below normal (OPENMPS_CLIENT_PRIORITY). */
  readonly priority?: 0 | 1;
  /** `GPU-<uuid>/<id>` under static partitioning (OPENMPS_SM_PARTITION). */
  readonly smPartition?: string;
  /** Bypass mode's device implementation (OPENMPS_DEVICE: auto, cuda, sim). */
  readonly deviceKind?: DeviceChoice;
  /** Bytes of the shared-memory staging region for large copies (default 32 MiB; 8 KiB to 4 GiB). */
  readonly stagingBytes?: number;
  /**
   * Launches and synchronizes through a shared-memory command ring (default), or over the socket
   * like every other call (false; OPENMPS_COMMAND_RING=0). MPS mode only.
   */
  readonly commandRing?: boolean;
  /**
   * How a synchronize through the command ring waits (OPENMPS_SYNC_WAIT): `auto` (default), `spin`,
   * `yield` or `block`; see src/client/remote-channel.ts.
   */
  readonly syncWait?: SyncWait;
  /** Environment to read the OPENMPS_ variables from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(path);
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

function envNumber(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuInit', `${name}="${v}" is not a number`);
  return n;
}

function parseSyncWait(value: string | undefined): SyncWait {
  if (value === undefined || value === '') return 'auto';
  const found = SYNC_WAITS.find((w) => w === value);
  if (!found) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuInit', `OPENMPS_SYNC_WAIT="${value}" is not one of ${SYNC_WAITS.join(', ')}`);
  return found;
}

/** This process's command line for `ps`, clipped so the handshake fits the daemon's frame limit. */
function commandLine(): string {
  return clipUtf8(process.argv.slice(1).join(' ') || process.argv0, MAX_COMMAND_BYTES);
}

export async function connect(options: ConnectOptions = {}): Promise<Context> {
  checkConnectOptions(options, SYNC_WAITS, MAX_MAPPING_BYTES);
  const env = options.env ?? process.env;
  const pipeDirectory = options.pipeDirectory ?? env.OPENMPS_PIPE_DIRECTORY ?? DEFAULT_PIPE_DIRECTORY;
  const mode = options.mode ?? 'auto';
  const settings = {
    version: PROTOCOL_VERSION,
    pid: process.pid,
    command: commandLine(),
    device: options.device ?? 0,
    activeThreadPercentage: options.activeThreadPercentage ?? envNumber(env, 'OPENMPS_ACTIVE_THREAD_PERCENTAGE') ?? 0,
    pinnedMemLimit: options.pinnedMemLimit ?? env.OPENMPS_PINNED_DEVICE_MEM_LIMIT ?? '',
    priority: options.priority ?? envNumber(env, 'OPENMPS_CLIENT_PRIORITY') ?? -1,
    smPartition: options.smPartition ?? env.OPENMPS_SM_PARTITION ?? '',
    // The server reads it against its own devices (MPS mode); bypass mode's platform reads it.
    visibleDevices: env.CUDA_VISIBLE_DEVICES ?? '',
  };

  if (mode !== 'direct') {
    const ringSetting = env.OPENMPS_COMMAND_RING;
    if (ringSetting !== undefined && ringSetting !== '' && ringSetting !== '0' && ringSetting !== '1') {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuInit', `OPENMPS_COMMAND_RING="${ringSetting}" is not 0 or 1`);
    }
    const commandRing = options.commandRing ?? ringSetting !== '0';
    const syncWait = options.syncWait ?? parseSyncWait(env.OPENMPS_SYNC_WAIT);
    // Set and blank hides every device, as CUDA reads it; unset (sent as '') hides none.
    if (env.CUDA_VISIBLE_DEVICES?.trim() === '') {
      throw new CudaError('CUDA_ERROR_NO_DEVICE', 'cuInit', 'CUDA_VISIBLE_DEVICES is set and empty: no device is visible');
    }
    let control: Socket | undefined;
    const controlPath = join(pipeDirectory, 'control');
    try {
      control = await openSocket(controlPath);
    } catch (err) {
      // A daemon is there but refuses this user: say so, in any mode; running without MPS behind
      // the operator's back would be the wrong surprise.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') {
        throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', 'cuInit', `permission denied on ${controlPath} (uid ${process.getuid?.() ?? '?'})`);
      }
      if (mode === 'mps') {
        throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', 'cuInit', `Cannot find openmps control daemon process in ${pipeDirectory} (${(err as Error).message})`);
      }
    }
    if (control) return connectToServer(control, settings, options.stagingBytes, commandRing, syncWait);
  }

  // Bypass mode: this process owns a device context of its own.
  const choice = options.deviceKind ?? parseDeviceChoice(env.OPENMPS_DEVICE);
  if (choice === undefined) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuInit', `OPENMPS_DEVICE="${env.OPENMPS_DEVICE ?? ''}" is not auto, cuda or sim`);
  const { platform } = await openPlatform(choice, env);
  const info = platform.devices[settings.device];
  if (!info) throw new CudaError('CUDA_ERROR_INVALID_DEVICE', 'cuDeviceGet', `device ${settings.device} does not exist (${platform.devices.length} visible)`);
  const device = await platform.open(info.ordinal);
  // Without MPS there is nobody to share with: the whole device, as a CUDA program without MPS has.
  const limits = { activeThreadPercentage: 100, smCount: info.smCount, memoryLimit: undefined, priority: 0, smPartition: '', smGroups: undefined };
  const session = new Session(device, { clientId: 1, pid: process.pid, uid: process.getuid?.() ?? 0, command: settings.command }, limits, new DeviceOwnership());
  return new Context({
    mode: 'direct',
    channel: new DirectChannel(session, device),
    clientId: 1,
    serverPid: process.pid,
    device: deviceInfoToWire(info),
    limits: limitsToWire(session.limits),
  });
}

async function connectToServer(
  control: Socket,
  settings: RequestOf<'SESSION_OPEN'>,
  stagingBytes: number | undefined,
  commandRing: boolean,
  syncWait: SyncWait,
): Promise<Context> {
  const controlChannel = new FramedSocket(control);
  let server: { serverPid: number; socketPath: string };
  try {
    server = await controlChannel.request('CONTROL_CONNECT', { version: settings.version, pid: settings.pid, command: settings.command });
  } catch (err) {
    throw handshakeError(err, controlChannel, 'cuInit', 'the control daemon');
  } finally {
    controlChannel.close();
  }
  let socket: Socket;
  try {
    socket = await openSocket(server.socketPath);
  } catch (err) {
    throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', 'cuInit', `cannot reach server ${server.serverPid} at ${server.socketPath}: ${(err as Error).message}`);
  }
  const channel = new FramedSocket(socket);
  let opened;
  try {
    opened = await channel.request('SESSION_OPEN', settings);
  } catch (err) {
    channel.close();
    throw handshakeError(err, channel, 'cuCtxCreate_v4', `server ${server.serverPid}`);
  }
  const remote = new RemoteChannel(channel, syncWait);
  // Without a ring (an older server, a server that cannot open our descriptors) every call takes
  // the socket: slower, the same.
  if (commandRing) await remote.attachRing();
  return new Context({
    mode: 'mps',
    channel: remote,
    clientId: opened.clientId,
    serverPid: opened.serverPid,
    device: opened.device,
    limits: opened.limits,
    ...(stagingBytes === undefined ? {} : { stagingBytes }),
  });
}
