// A stand-in server speaking the daemon <-> server IPC contract (src/server/ipc.ts), for testing
// the daemon's supervision without a GPU or the real server. Behaviour from the environment:
//   FAKE_SERVER_MODE     ok (default) | crash (exit 4 before ready) | hang (never ready)
//   FAKE_SERVER_MODE_FILE  a file whose content, when it exists, is the mode instead: read at
//                        each start, so a test can turn a crash loop into a healthy server
//   FAKE_SERVER_EXIT_CODE  the status it exits with on SIGUSR2 (default 4; 3 asks for a relaunch)
//   FAKE_SERVER_CLIENTS  JSON list of ClientRecord to report, those of the server's own uid
//                        (terminate-client removes that pid's and reports it disconnected)
//   FAKE_SERVER_LATE_CLIENTS  JSON list of ClientRecord that join when the Nth 'partitions'
//                        request arrives (N = FAKE_SERVER_LATE_AFTER, default 1): a client
//                        connecting while the daemon changes the table
//   FAKE_SERVER_DEVICES  JSON list of DeviceRecord (default: one software GPU of 16 SMs, 2 chunks of 8)
//   FAKE_SERVER_RECORD   a file to append every request received to, one JSON a line; the
//                        server's config is written next to it, in `config`
// It answers every DaemonRequest op the way the contract's doc comments say: the per-server
// settings start from the config and are kept; the live changes count the client's records.
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ClientRecord, DeviceRecord, ServerConfig, ServerMessage } from '../../src/server/ipc.js';
import { parseDaemonMessage } from '../../src/server/ipc.js';

function send(message: ServerMessage): void {
  process.send?.(message);
}

function parseJson(text: string | undefined): unknown {
  return text === undefined || text === '' ? undefined : JSON.parse(text);
}

const config = parseJson(process.env.OPENMPS_SERVER_CONFIG) as ServerConfig | undefined;
if (!config || typeof config.socketPath !== 'string') {
  process.stderr.write('fake-server: OPENMPS_SERVER_CONFIG missing\n');
  process.exit(9);
}

const modeFile = process.env.FAKE_SERVER_MODE_FILE;
const mode = modeFile !== undefined && existsSync(modeFile) ? readFileSync(modeFile, 'utf8').trim() : (process.env.FAKE_SERVER_MODE ?? 'ok');
if (mode === 'crash') process.exit(4);

const devices = (parseJson(process.env.FAKE_SERVER_DEVICES) as DeviceRecord[] | undefined) ?? [
  {
    ordinal: 0,
    name: 'openmps software GPU',
    uuid: 'GPU-00000000-0000-4000-8000-000000000000',
    pciBusId: '0000:00:00.0',
    smCount: 16,
    totalMemory: '1073741824',
    computeMajor: 9,
    computeMinor: 0,
    kind: 'sim',
    smGroupSize: 8,
    smGroupCount: 2,
  },
];
// A server has clients of its own user only.
let clients = ((parseJson(process.env.FAKE_SERVER_CLIENTS) as ClientRecord[] | undefined) ?? []).filter((c) => c.uid === config.uid);
const lateClients = (parseJson(process.env.FAKE_SERVER_LATE_CLIENTS) as ClientRecord[] | undefined) ?? [];
const lateAfter = Number(process.env.FAKE_SERVER_LATE_AFTER ?? '1');
let partitionRequests = 0;
const record = process.env.FAKE_SERVER_RECORD;
if (record !== undefined) writeFileSync(join(dirname(record), 'config'), JSON.stringify(config));
let activeThreadPercentage = config.defaultActiveThreadPercentage;
const memLimits = new Map<string, string>(Object.entries(config.defaultDeviceMemLimits));

// The daemon going away means this server goes too, as the real one does.
process.on('disconnect', () => process.exit(0));

process.on('message', (raw: unknown) => {
  const message = parseDaemonMessage(raw);
  if (!message) return;
  // The daemon's sampler asks for stats every second: not a request any test stages or counts.
  if (record !== undefined && message.op !== 'stats') appendFileSync(record, `${JSON.stringify(message)}\n`);
  switch (message.op) {
    case 'clients':
      send({ type: 'response', id: message.id, ok: true, result: clients });
      break;
    case 'stats':
      send({ type: 'response', id: message.id, ok: true, result: { clients, devices: [] } });
      break;
    case 'terminate-client': {
      // As the real server: the number of that pid's sessions terminated, 0 for no such client.
      const before = clients.length;
      clients = clients.filter((c) => c.pid !== message.pid);
      send({ type: 'response', id: message.id, ok: true, result: before - clients.length });
      if (clients.length !== before) send({ type: 'client-disconnected', clientId: 0, pid: message.pid, reason: 'terminated' });
      break;
    }
    case 'set-active-thread-percentage':
      activeThreadPercentage = message.percentage;
      send({ type: 'response', id: message.id, ok: true, result: null });
      break;
    case 'get-active-thread-percentage':
      send({ type: 'response', id: message.id, ok: true, result: activeThreadPercentage });
      break;
    case 'set-device-mem-limit':
      memLimits.set(message.device, message.bytes);
      send({ type: 'response', id: message.id, ok: true, result: null });
      break;
    case 'get-device-mem-limit':
      send({ type: 'response', id: message.id, ok: true, result: memLimits.get(message.device) ?? '' });
      break;
    case 'set-client-active-thread-percentage':
    case 'set-client-device-mem-limit':
      send({ type: 'response', id: message.id, ok: true, result: clients.filter((c) => c.pid === message.pid).length });
      break;
    case 'partitions':
      partitionRequests++;
      if (partitionRequests === lateAfter) clients = [...clients, ...lateClients];
      // Kept in FAKE_SERVER_RECORD, like every request.
      send({ type: 'response', id: message.id, ok: true, result: null });
      break;
    case 'shutdown':
      send({ type: 'response', id: message.id, ok: true, result: null });
      // Exit once the response has left: disconnect flushes the IPC channel first.
      process.disconnect();
      break;
  }
});

// A death on cue: a crash (any status but 0 and 3) or a relaunch request (3).
process.on('SIGUSR2', () => process.exit(Number(process.env.FAKE_SERVER_EXIT_CODE ?? '4')));

if (mode !== 'hang') {
  send({ type: 'ready', pid: process.pid, socketPath: config.socketPath, devices, deviceKind: 'sim', driver: 'fake server' });
}
