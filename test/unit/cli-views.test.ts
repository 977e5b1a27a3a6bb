// `openmps status` and `openmps top` frames from synthetic state replies: what they show, the
// order of top's rows, and that nothing passes the terminal's width or height.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateState, type StateView } from '../../src/cli/snapshot.js';
import { renderStatus } from '../../src/cli/status-view.js';
import { gpuMeterFraction, renderTop, sortClients } from '../../src/cli/top-view.js';
import { clientJson, DAEMON_PID, SERVER_PID, stateJson, type Json } from '../support/cli-state.js';

function view(extra: Json = {}): StateView {
  return validateState(stateJson(extra));
}

const USERS = new Map([[0, 'root']]);

test('status shows the daemon, its server, its device and every client', () => {
  const lines = renderStatus(view(), 160);
  const text = lines.join('\n');
  assert.match(lines[0] ?? '', new RegExp(`^DAEMON +pid ${DAEMON_PID}, openmps 0\\.1\\.0, up 5m12s, device sim$`));
  assert.match(text, /pipe directory \/tmp\/openmps, log directory \/tmp\/openmps-log/);
  assert.match(text, /single-user: one user's server at a time; default active thread percentage 100%/);
  assert.match(text, /^SERVERS \(1\)$/m);
  assert.match(text, new RegExp(`^ *${SERVER_PID} +0 +ACTIVE +sim +openmps sim +5m00s +ready$`, 'm'));
  assert.match(text, /^DEVICES \(1\)$/m);
  assert.match(text, new RegExp(`^ *${SERVER_PID} +0 +openmps software GPU +sim +132 +6\\.0M/16G +1\\.35 +120 +3 +1 +-$`, 'm'));
  assert.match(text, /^CLIENTS \(3\)$/m);
  assert.match(text, /^ *PID +ID +SERVER +DEV +STATE +SM SHARE +MEM +LIMIT +GPU TIME +KERNELS +ERR +COMMAND$/m);
  assert.match(text, new RegExp(`^ *5002 +2 +${SERVER_PID} +0 +ACTIVE +24% \\(32\\) +2\\.0M +1\\.0G +0:00\\.30 +120 +0 +node worker\\.js spin 2$`, 'm'));
  assert.match(text, new RegExp(`^ *5003 +3 +${SERVER_PID} +0 +INACTIVE +100% \\(132\\) +2\\.0M +- +0:03\\.30 +120 +1 +node worker\\.js spin 3$`, 'm'));
  assert.match(text, /Rates over the daemon's last sampling interval, 1\.0 s\./);
});

test('status with nothing running says so in each section', () => {
  const text = renderStatus(view({ servers: [], devices: [], clients: [] }), 120).join('\n');
  assert.match(text, /SERVERS \(0\)\n {2}\(none: one starts with the first client\)/);
  assert.match(text, /DEVICES \(0\)\n {2}\(none until a server runs\)/);
  assert.match(text, /CLIENTS \(0\)\n {2}\(none\)/);
});

test('status lists static partitions and a multi-user daemon', () => {
  const base = stateJson();
  const text = renderStatus(
    validateState({
      ...base,
      daemon: { ...(base.daemon as Json), multiUser: true, staticPartitioning: true },
      partitions: [{ id: 'GPU-5e5e0000-0000-4000-8000-000000000000/1', deviceUuid: 'GPU-5e5e0000-0000-4000-8000-000000000000', chunks: [0, 1, 2] }],
    }),
    160,
  ).join('\n');
  assert.match(text, /multi-user \(-M\)/);
  assert.match(text, /static SM partitions \(-S\), 1 defined/);
  assert.match(text, /SM PARTITIONS \(1\)\n {2}GPU-5e5e0000-0000-4000-8000-000000000000\/1 {2}3 chunks \(0,1,2\)/);
});

test('top sorts by GPU share, then total GPU time, then server and client id', () => {
  const sorted = sortClients(view().clients);
  assert.deepEqual(
    sorted.map((c) => c.pid),
    [5002, 5003, 5001],
  );
  const tied = sortClients(view({ clients: [clientJson(9, 9, { gpuShare: 0, gpuTimeMs: 5 }), clientJson(4, 4, { gpuShare: 0, gpuTimeMs: 5 })] }).clients);
  assert.deepEqual(
    tied.map((c) => c.clientId),
    [4, 9],
  );
});

test('a top frame: summary, device meters, then the client table heaviest first', () => {
  const lines = renderTop(view(), { width: 120, live: false, users: USERS });
  assert.match(lines[0] ?? '', new RegExp(`^openmps top - \\d\\d:\\d\\d:\\d\\d {2}daemon ${DAEMON_PID} up 5m12s {2}1 server {2}3 clients {2}rates over 1\\.0 s$`));
  const text = lines.join('\n');
  assert.match(text, new RegExp(`^GPU 0 {2}openmps software GPU \\(sim\\) {2}132 SMs {2}server ${SERVER_PID} {2}clients 3 {2}kernels/s 120$`, 'm'));
  // 1.35 s of GPU time per second over 3 clients: the meter is 45% full.
  assert.match(text, /^ {2}GPU \[\|+ +1\.35 s\/s\] {2}MEM \[ +6\.0M\/16G\]$/m);
  const header = lines.findIndex((l) => /^ *PID +USER +DEV +SM% +GPU% +GPU TIME +KERN\/S +MEM +PEAK +ERR +STATE +COMMAND$/.test(l));
  assert.ok(header > 0, text);
  assert.match(lines[header + 1] ?? '', /^ *5002 +root +0 +24 +90 +0:00\.30 +40 +2\.0M +3\.0M +0 +ACTIVE +node worker\.js spin 2$/);
  assert.match(lines[header + 2] ?? '', /^ *5003 +root +0 +100 +10 +0:03\.30 +40 +2\.0M +3\.0M +1 +INACTIVE +node worker\.js spin 3$/);
  assert.match(lines[header + 3] ?? '', /^ *5001 /);
  assert.equal(lines.length, header + 4);
});

test('the GPU meter is full when every client keeps the GPU busy', () => {
  const [device] = view().devices;
  assert.ok(device);
  assert.equal(gpuMeterFraction(device), 0.45);
  assert.equal(gpuMeterFraction({ ...device, clients: 0, gpuTimePerSecond: 0.5 }), 0.5);
});

test('top shows uids without a name as numbers, a fault, the live key help and a fetch error', () => {
  const base = stateJson();
  const devices = base.devices as Json[];
  const lines = renderTop(
    validateState({ ...base, devices: [{ ...devices[0], fault: 'CUDA_ERROR_ILLEGAL_ADDRESS' }], clients: [clientJson(1, 77, { uid: 1234 })] }),
    { width: 120, live: true, users: USERS, error: 'Cannot find openmps control daemon process in /tmp/x' },
  );
  const text = lines.join('\n');
  assert.match(lines[0] ?? '', /\(q quits\)$/);
  assert.match(lines[1] ?? '', /^! Cannot find openmps control daemon process in \/tmp\/x$/);
  assert.match(text, /^ {2}FAULT CUDA_ERROR_ILLEGAL_ADDRESS$/m);
  assert.match(text, /^ *77 +1234 +0 /m);
});

test('top with no devices or clients says so', () => {
  const text = renderTop(view({ devices: [], clients: [], servers: [] }), { width: 100, live: false, users: USERS }).join('\n');
  assert.match(text, /No devices: a server starts with the first client\./);
  assert.match(text, /PID +USER .* COMMAND\n\(no clients\)$/);
});

test('no line of a frame passes the width, and a live frame fits the height with a count of the rest', () => {
  const many = Array.from({ length: 40 }, (_, i) => clientJson(i + 1, 6000 + i, { gpuShare: i / 100, command: `python train.py --rank ${i} ${'x'.repeat(200)}` }));
  for (const width of [20, 60, 80, 120, 250]) {
    const lines = renderTop(view({ clients: many }), { width, live: false, users: USERS });
    for (const l of lines) assert.ok(l.length <= width, `${width}: ${l}`);
    for (const l of renderStatus(view({ clients: many }), width)) assert.ok(l.length <= width, `${width}: ${l}`);
  }
  const live = renderTop(view({ clients: many }), { width: 100, height: 20, live: true, users: USERS });
  assert.equal(live.length, 20);
  assert.match(live[19] ?? '', /^… \d+ more clients$/);
  const shown = live.filter((l) => /^ *60\d\d /.test(l)).length;
  assert.equal(shown + Number(/(\d+) more/.exec(live[19] ?? '')?.[1]), 40);
  // The heaviest (rank 39) is on screen.
  assert.ok(live.some((l) => l.includes('--rank 39')));
});

test('commands with newlines or escape sequences reach the terminal as ?', () => {
  const lines = renderTop(view({ clients: [clientJson(1, 5, { command: 'node "x.js"\n\x1b[2J' })] }), { width: 120, live: false, users: USERS });
  assert.ok(lines.some((l) => l.endsWith('node "x.js"??[2J')));
  assert.ok(lines.every((l) => Array.from({ length: l.length }, (_, i) => l.charCodeAt(i)).every((c) => c >= 0x20)));
});
