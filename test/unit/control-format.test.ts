// The output shapes of the command language, from fixed records.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { csvField, formatBytesShort, formatDeviceClientList, formatDeviceQuery, formatLines, formatPercentage, formatPs, formatTable, pciQueryId, pciShortId } from '../../src/control/format.js';
import { controlSocketPath, directoriesFromEnv, MAX_SOCKET_PATH_BYTES, pidFilePath, serverSocketPath, socketPathProblem } from '../../src/control/paths.js';
import { parseActiveThreadPercentage, parseClientPriority, parseClientRecord, primaryGid } from '../../src/control/servers.js';
import type { ClientRecord, DeviceRecord } from '../../src/server/ipc.js';
import { NO_ACCOUNTING } from '../support/records.js';

const H200: DeviceRecord = {
  ordinal: 0,
  name: 'NVIDIA H200',
  uuid: 'GPU-cb1213a3-d6a4-be7f-1d3c-5e6f7a8b9c0d',
  pciBusId: '0000:00:00.0',
  smCount: 132,
  totalMemory: '150754820096',
  computeMajor: 9,
  computeMinor: 0,
  kind: 'cuda',
  smGroupSize: 8,
  smGroupCount: 16,
};
const SECOND: DeviceRecord = { ...H200, ordinal: 1, uuid: 'GPU-468af2de-d4f0-0000-0000-000000000001', pciBusId: '0000:48:00.0' };
const SIM: DeviceRecord = { ...H200, name: 'openmps software GPU', uuid: 'GPU-5e5e0000-0000-4000-8000-000000000000', kind: 'sim' };

function client(pid: number, clientId: number, device: number, command: string): ClientRecord {
  return {
    clientId,
    pid,
    uid: 0,
    device,
    deviceUuid: device === 0 ? H200.uuid : SECOND.uuid,
    command,
    allocation: '',
    state: 'ACTIVE',
    activeThreadPercentage: 100,
    smCount: 132,
    memoryLimit: '0',
    memoryInUse: '0',
    smPartition: '',
    priority: 0,
    connectedAt: 0,
    ...NO_ACCOUNTING,
  };
}

test('lists: one item a line, nothing for none', () => {
  assert.equal(formatLines([]), '');
  assert.equal(formatLines([1866]), '1866');
  assert.equal(formatLines([1866, 440]), '1866\n440');
});

test('tables: columns padded to the widest cell, one space apart, no trailing blanks', () => {
  assert.equal(formatTable(['A', 'BB', 'C'], [['xxx', 'y', '']]), 'A   BB C\nxxx y');
  assert.equal(formatTable(['A', 'B'], []), 'A B');
});

test('ps: openmps accounting columns after MPS\'s, COMMAND padded so they line up', () => {
  const out = formatPs(
    [
      {
        pid: 9741, clientId: 0, serverPid: 6472, deviceUuid: 'GPU-cb', namespace: '-', command: './nbody',
        gpuTimeMs: 12345.6789, gpuShare: 0.5, smShare: 0.25, memoryInUse: String(1536 * 1024 ** 2), memoryPeak: String(2 * 1024 ** 3),
        kernels: 400, bytesHtoD: String(256 * 1024 ** 2), bytesDtoH: '1000', errors: 1, state: 'ACTIVE',
      },
      { pid: 9743, clientId: 1, serverPid: 6472, deviceUuid: 'GPU-cb', namespace: '-', command: './matrixMul -wA=320' },
    ],
    false,
  );
  assert.equal(
    out,
    [
      'PID  ID SERVER DEVICE NAMESPACE COMMAND             GPU_TIME GPU% SM%  MEM  PEAK KERNELS HTOD DTOH ERRORS STATE',
      '9741 0  6472   GPU-cb -         ./nbody             12.346   50.0 25.0 1.5G 2G   400     256M 1000 1      ACTIVE',
      '9743 1  6472   GPU-cb -         ./matrixMul -wA=320 0.000    0.0  0.0  0    0    0       0    0    0',
    ].join('\n'),
  );
});

test('ps: a command line\'s control characters are shown as ?, so they neither reach the terminal nor break the table', () => {
  const out = formatPs([{ pid: 1, clientId: 1, serverPid: 2, deviceUuid: 'GPU-cb', namespace: '-', command: 'evil\u001b]0;pwned\u0007\nnext' }], false);
  assert.equal(out.split('\n').length, 2);
  assert.match(out, /evil\?\]0;pwned\?\?next/);
  assert.ok(!out.includes('\u001b'));
});

test('byte cells: binary units, at most four significant characters', () => {
  assert.equal(formatBytesShort('0'), '0');
  assert.equal(formatBytesShort(1023), '1023');
  assert.equal(formatBytesShort(1024), '1K');
  assert.equal(formatBytesShort(1536), '1.5K');
  assert.equal(formatBytesShort(10.5 * 1024 ** 2), '10.5M');
  assert.equal(formatBytesShort(123.4 * 1024 ** 3), '123G');
  assert.equal(formatBytesShort(`${2n ** 60n}`), '1024P');
});

test('ps: header and rows as MPS prints them', () => {
  assert.equal(formatPs([]), 'PID ID SERVER DEVICE NAMESPACE COMMAND');
  const out = formatPs([
    { pid: 9741, clientId: 0, serverPid: 6472, deviceUuid: 'GPU-cb1213a3-d6a4-be7f', namespace: '4026531836', command: './nbody' },
    { pid: 9743, clientId: 1, serverPid: 6472, deviceUuid: 'GPU-cb1213a3-d6a4-be7f', namespace: '-', command: './matrixMul -wA=320' },
  ]);
  assert.equal(
    out,
    [
      'PID  ID SERVER DEVICE                 NAMESPACE  COMMAND',
      '9741 0  6472   GPU-cb1213a3-d6a4-be7f 4026531836 ./nbody',
      '9743 1  6472   GPU-cb1213a3-d6a4-be7f -          ./matrixMul -wA=320',
    ].join('\n'),
  );
  // Collapsing whitespace gives the rows of NVIDIA's documentation.
  assert.equal(out.split('\n')[1]?.replace(/ +/g, ' '), '9741 0 6472 GPU-cb1213a3-d6a4-be7f 4026531836 ./nbody');
});

test('PCI ids: device_query form and get_device_client_list form', () => {
  assert.equal(pciQueryId('0000:20:00.0'), '0000:20.00.00');
  assert.equal(pciQueryId('00000000:48:00.0'), '0000:48.00.00');
  assert.equal(pciQueryId('0000:a2:00.1'), '0000:a2.00.01');
  assert.equal(pciShortId('0000:00:00.0'), '00:00.0');
  assert.equal(pciShortId('0000:c8:1f.3'), 'c8:1f.3');
  assert.equal(pciShortId('48:00.0'), '48:00.0');
  assert.equal(pciShortId('not a bus id'), 'not a bus id');
  assert.equal(pciQueryId('not a bus id'), 'not a bus id');
});

test('device_query: a Default section and one per server, aligned', () => {
  const out = formatDeviceQuery(
    [
      { title: 'Default', devices: [H200, SECOND] },
      { title: 'Server 908527', devices: [H200] },
    ],
    false,
  );
  assert.equal(
    out,
    [
      'Default',
      'Device Ordinal PCI IDs       UUID                                     Name        Attributes',
      '0              0000:00.00.00 GPU-cb1213a3-d6a4-be7f-1d3c-5e6f7a8b9c0d NVIDIA H200',
      '1              0000:48.00.00 GPU-468af2de-d4f0-0000-0000-000000000001 NVIDIA H200',
      'Server 908527',
      'Device Ordinal PCI IDs       UUID                                     Name        Attributes',
      '0              0000:00.00.00 GPU-cb1213a3-d6a4-be7f-1d3c-5e6f7a8b9c0d NVIDIA H200',
    ].join('\n'),
  );
  assert.match(formatDeviceQuery([{ title: 'Default', devices: [SIM] }], false), /openmps software GPU sim$/);
});

test('device_query --csv: one table, the section in the first column, fields quoted when needed', () => {
  const out = formatDeviceQuery(
    [
      { title: 'Default', devices: [SIM] },
      { title: 'Server 42', devices: [{ ...H200, name: 'GPU, "big"' }] },
    ],
    true,
  );
  assert.equal(
    out,
    [
      'Server,Device Ordinal,PCI IDs,UUID,Name,Attributes',
      'Default,0,0000:00.00.00,GPU-5e5e0000-0000-4000-8000-000000000000,openmps software GPU,sim',
      '42,0,0000:00.00.00,GPU-cb1213a3-d6a4-be7f-1d3c-5e6f7a8b9c0d,"GPU, ""big""",',
    ].join('\n'),
  );
  assert.equal(csvField('plain'), 'plain');
  assert.equal(csvField('a\nb'), '"a\nb"');
});

test('get_device_client_list: each device, then its clients as pid.clientId', () => {
  assert.equal(
    formatDeviceClientList([H200, SECOND], [client(1848, 1, 0, 'a'), client(1900, 2, 1, 'b'), client(1901, 3, 0, 'c')]),
    ['[0] 00:00.0, NVIDIA H200', '1848.1', '1901.3', '[1] 48:00.0, NVIDIA H200', '1900.2'].join('\n'),
  );
  assert.equal(formatDeviceClientList([H200], []), '[0] 00:00.0, NVIDIA H200');
  assert.equal(formatDeviceClientList([], []), '');
});

test('percentages print as MPS prints them', () => {
  assert.equal(formatPercentage(100), '100.0');
  assert.equal(formatPercentage(40), '40.0');
  assert.equal(formatPercentage(12.5), '12.5');
});

test('paths: layout and the 107-byte socket limit', () => {
  assert.equal(controlSocketPath('/tmp/openmps'), '/tmp/openmps/control');
  assert.equal(pidFilePath('/tmp/openmps'), '/tmp/openmps/openmps-control.pid');
  assert.equal(serverSocketPath('/tmp/openmps', 1000), '/tmp/openmps/user-1000/server');
  assert.equal(MAX_SOCKET_PATH_BYTES, 107);
  assert.equal(socketPathProblem(`/${'a'.repeat(106)}`), undefined);
  assert.match(socketPathProblem(`/${'a'.repeat(107)}`) ?? '', /108 bytes long.*at most 107 bytes/);
  // Bytes, not characters: each é is two bytes.
  assert.match(socketPathProblem(`/${'é'.repeat(54)}`) ?? '', /109 bytes/);
  assert.deepEqual(directoriesFromEnv({}), { pipeDirectory: '/tmp/openmps', logDirectory: '/tmp/openmps-log' });
  assert.deepEqual(directoriesFromEnv({ OPENMPS_PIPE_DIRECTORY: '/p', OPENMPS_LOG_DIRECTORY: '' }), { pipeDirectory: '/p', logDirectory: '/tmp/openmps-log' });
});

test('server records and settings are narrowed at the boundary', () => {
  assert.deepEqual(parseClientRecord(client(1, 2, 0, 'x')), client(1, 2, 0, 'x'));
  assert.equal(parseClientRecord({ ...client(1, 2, 0, 'x'), pid: '1' }), undefined);
  assert.equal(parseClientRecord({ ...client(1, 2, 0, 'x'), state: 'GONE' }), undefined);
  assert.equal(parseClientRecord(null), undefined);
  assert.equal(parseClientRecord([]), undefined);
  assert.equal(parseActiveThreadPercentage('50'), 50);
  assert.equal(parseActiveThreadPercentage(' 25.5 '), 25.5);
  assert.equal(parseActiveThreadPercentage('0'), undefined);
  assert.equal(parseActiveThreadPercentage('150'), undefined);
  assert.equal(parseActiveThreadPercentage('abc'), undefined);
  assert.equal(parseActiveThreadPercentage(undefined), undefined);
  assert.equal(parseClientPriority('0'), 0);
  assert.equal(parseClientPriority(' 1 '), 1);
  assert.equal(parseClientPriority('2'), undefined);
  assert.equal(parseClientPriority('low'), undefined);
  assert.equal(parseClientPriority(undefined), undefined);
  // A server that predates smPartition/priority still has its clients listed.
  const older: Record<string, unknown> = { ...client(1, 2, 0, 'x') };
  delete older.smPartition;
  delete older.priority;
  assert.deepEqual(parseClientRecord(older), client(1, 2, 0, 'x'));
  const passwd = 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1001::/home/alice:/bin/sh\n';
  assert.equal(primaryGid(1000, passwd), 1001);
  assert.equal(primaryGid(0, passwd), 0);
  assert.equal(primaryGid(4242, passwd), 4242);
});

test('ps: a POD column last, only when a device plugin labelled some client; --mps never has it', () => {
  const rows = [
    { pid: 10, clientId: 1, serverPid: 2, deviceUuid: 'GPU-cb', namespace: '-', command: 'a', state: 'ACTIVE', pod: 'team-a/infer-0/main' },
    { pid: 11, clientId: 2, serverPid: 2, deviceUuid: 'GPU-cb', namespace: '-', command: 'b', state: 'ACTIVE' },
  ];
  const lines = formatPs(rows, false).split('\n');
  assert.ok(lines[0]?.endsWith(' STATE  POD'), lines[0]);
  assert.ok(lines[1]?.endsWith(' ACTIVE team-a/infer-0/main'), lines[1]);
  assert.ok(lines[2]?.endsWith(' ACTIVE -'), lines[2]);
  assert.ok(!formatPs(rows, true).includes('POD'));
  assert.ok(!formatPs(rows.slice(1), false).includes('POD'));
});
