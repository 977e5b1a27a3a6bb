// What a flood of incomplete frames costs the daemon or a server (issue 12, item 3): starts a
// private `openmps-control -d` (software GPU), opens N connections that each announce a frame and
// send all of it but its last byte, and prints the resident memory (VmRSS, and its anonymous part
// from smaps_rollup) of the process under attack before, during, and after the peers close.
//
//   node dist/bench/socket-flood.js [--target control|server] [--connections 60]
//                                   [--announce <bytes>] [--settle-ms 30000]
//
// --target control (default): the daemon's world-writable control socket, with --announce 16 MiB
// by default (the frame limit before the fix; the daemon now refuses more than 64 KiB at the
// header: --announce 65536 shows what it still takes). --target server: the user's server, each
// connection after SESSION_OPEN, where 16 MiB frames are allowed (at most 60 clients a device).
// OPENMPS_FRAME_DEADLINE_MS=60000 keeps the deadline from firing before "during" is sampled; after
// the close, memory is sampled until --settle-ms.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encodeFields, encodeFrame, MESSAGES, PROTOCOL_VERSION } from '../src/protocol/index.js';

const CONTROL = fileURLToPath(new URL('../src/cli/openmps-control.js', import.meta.url));

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '60' },
    announce: { type: 'string', default: String(16 * 1024 * 1024) },
    target: { type: 'string', default: 'control' },
    'settle-ms': { type: 'string', default: '30000' },
  },
});
const target = values.target === 'server' ? 'server' : 'control';
const connections = Number(values.connections);
const announce = Number(values.announce);
const settleMs = Number(values['settle-ms']);

interface Memory {
  readonly rssKiB: number;
  readonly anonKiB: number;
}

function memoryOf(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (text: string, name: string): number => Number(new RegExp(`^${name}:\\s+([0-9]+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssKiB: field(status, 'VmRSS'), anonKiB: field(rollup, 'Anonymous') };
}

function show(label: string, m: Memory): void {
  console.log(`${label.padEnd(34)} RSS ${(m.rssKiB / 1024).toFixed(1).padStart(8)} MiB   anonymous ${(m.anonKiB / 1024).toFixed(1).padStart(8)} MiB`);
}

function header(length: number, opcode: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(length, 0);
  h.writeUInt16LE(opcode, 4);
  h.writeUInt32LE(1, 8);
  return h;
}

/** SESSION_OPEN as a raw frame, for a flood of a server after the handshake. */
function sessionOpen(): Uint8Array {
  const open = { version: PROTOCOL_VERSION, pid: process.pid, command: 'socket-flood', device: 0, activeThreadPercentage: 0, pinnedMemLimit: '', priority: -1, smPartition: '', visibleDevices: '' };
  return encodeFrame(MESSAGES.SESSION_OPEN.opcode, 0, 1, 0, encodeFields(MESSAGES.SESSION_OPEN.request, open));
}

/**
 * Opens one connection (after SESSION_OPEN when `session`) and sends a header claiming `length`
 * (CONTROL_COMMAND on the control socket, MODULE_LOAD on a server) and length - 1 payload bytes.
 */
function flood(path: string, length: number, session: boolean): Promise<{ socket: Socket; closedByDaemon: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const state = { socket, closedByDaemon: false };
    socket.on('error', () => undefined);
    socket.once('close', () => {
      state.closedByDaemon = true;
      resolve(state);
    });
    const send = (): void => {
      socket.on('data', () => undefined);
      socket.write(header(length, session ? MESSAGES.MODULE_LOAD.opcode : MESSAGES.CONTROL_COMMAND.opcode));
      if (socket.write(Buffer.alloc(Math.max(0, length - 1), 0x61))) resolve(state);
      else
        socket.once('drain', () => {
          resolve(state);
        });
    };
    socket.once('connect', () => {
      if (!session) {
        send();
        return;
      }
      socket.write(sessionOpen());
      // Its reply (status at offset 12) comes before the flood frame is sent.
      socket.once('data', (reply: Buffer) => {
        if (reply.length < 16 || reply.readUInt32LE(12) !== 0) reject(new Error(`SESSION_OPEN failed (status ${reply.length >= 16 ? reply.readUInt32LE(12) : '?'})`));
        else send();
      });
    });
  });
}

const root = mkdtempSync(join(tmpdir(), 'openmps-flood-'));
const env = {
  ...process.env,
  OPENMPS_DEVICE: 'sim',
  OPENMPS_PIPE_DIRECTORY: join(root, 'pipe'),
  OPENMPS_LOG_DIRECTORY: join(root, 'log'),
  OPENMPS_FRAME_DEADLINE_MS: '60000',
};
const control = (line: string): string => spawnSync(process.execPath, [CONTROL], { env, input: `${line}\n`, encoding: 'utf8' }).stdout.trim();
const started = spawnSync(process.execPath, [CONTROL, '-d'], { env, encoding: 'utf8' });
if (started.status !== 0) throw new Error(`openmps-control -d failed: ${started.stderr}`);
try {
  let pid = Number(readFileSync(join(root, 'pipe', 'openmps-control.pid'), 'utf8').trim());
  let socketPath = join(root, 'pipe', 'control');
  if (target === 'server') {
    const uid = process.getuid?.() ?? 0;
    control(`start_server -uid ${uid}`);
    pid = Number(control('get_server_list').split('\n')[0]);
    socketPath = join(root, 'pipe', `user-${uid}`, 'server');
  }
  console.log(`${target} ${pid}; ${connections} connections, each announcing ${announce} payload bytes and sending all but the last`);
  show('before', memoryOf(pid));
  const peers = await Promise.all(Array.from({ length: connections }, () => flood(socketPath, announce, target === 'server')));
  // The process reads what the kernel has buffered on its own schedule: give it a moment.
  await new Promise((r) => setTimeout(r, 1000));
  const refused = peers.filter((p) => p.closedByDaemon).length;
  show(`during (${refused} refused and closed)`, memoryOf(pid));
  for (const p of peers) p.socket.destroy();
  const closedAt = Date.now();
  for (const at of [100, 1000, 5000, 15_000, 30_000, 60_000].filter((ms) => ms <= settleMs)) {
    await new Promise((r) => setTimeout(r, Math.max(0, closedAt + at - Date.now())));
    show(`after close (+${at} ms)`, memoryOf(pid));
  }
} finally {
  control('quit');
  rmSync(root, { recursive: true, force: true });
}
