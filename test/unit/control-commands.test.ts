// The command language parser: every command, every malformed form.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseCommand, USAGE, type ControlCommand } from '../../src/control/commands.js';

function ok(line: string): ControlCommand {
  const r = parseCommand(line);
  assert.ok(r.ok, `"${line}" should parse, got: ${r.ok ? '' : r.error}`);
  return r.command;
}

function error(line: string): string {
  const r = parseCommand(line);
  assert.ok(!r.ok, `"${line}" should not parse`);
  return r.error;
}

test('blank lines are the empty command', () => {
  assert.deepEqual(ok(''), { name: 'empty' });
  assert.deepEqual(ok('   \t '), { name: 'empty' });
});

test('words split on any whitespace, surrounding blanks ignored', () => {
  assert.deepEqual(ok('  get_server_status \t 42  '), { name: 'get_server_status', pid: 42 });
  assert.deepEqual(ok('shutdown_server\t7\t-f\r'), { name: 'shutdown_server', pid: 7, force: true });
});

test('unknown commands name the first word, as MPS does', () => {
  assert.equal(error('bogus'), 'Unknown command "bogus"');
  assert.equal(error('bogus 1 2'), 'Unknown command "bogus"');
  assert.equal(error('GET_SERVER_LIST'), 'Unknown command "GET_SERVER_LIST"');
  assert.equal(error('toString'), 'Unknown command "toString"');
  assert.equal(error('__proto__'), 'Unknown command "__proto__"');
});

test('get_server_list', () => {
  assert.deepEqual(ok('get_server_list'), { name: 'get_server_list' });
  assert.equal(error('get_server_list 1'), 'get_server_list: unexpected argument "1"\nUsage: get_server_list');
});

test('get_server_status <PID>', () => {
  assert.deepEqual(ok('get_server_status 1234'), { name: 'get_server_status', pid: 1234 });
  assert.equal(error('get_server_status'), 'get_server_status: missing PID\nUsage: get_server_status <PID>');
  assert.equal(error('get_server_status abc'), 'get_server_status: invalid PID "abc": expected a positive integer\nUsage: get_server_status <PID>');
  assert.match(error('get_server_status 0'), /invalid PID "0": out of range/);
  assert.match(error('get_server_status -5'), /invalid PID "-5"/);
  assert.match(error('get_server_status 1.5'), /invalid PID "1.5"/);
  assert.match(error('get_server_status 1e3'), /invalid PID "1e3"/);
  assert.match(error('get_server_status 0x10'), /invalid PID "0x10"/);
  assert.match(error('get_server_status 99999999999'), /out of range/);
  assert.match(error('get_server_status 1 2'), /unexpected argument "2"/);
});

test('start_server -uid <UID>', () => {
  assert.deepEqual(ok('start_server -uid 0'), { name: 'start_server', uid: 0 });
  assert.deepEqual(ok('start_server -uid 1000'), { name: 'start_server', uid: 1000 });
  assert.equal(error('start_server'), 'start_server: missing -uid <UID>\nUsage: start_server -uid <UID>');
  assert.match(error('start_server -uid'), /missing UID/);
  assert.match(error('start_server -uid bob'), /invalid UID "bob"/);
  assert.match(error('start_server -uid -1'), /invalid UID "-1"/);
  assert.match(error('start_server -uid 4294967295'), /out of range/);
  assert.match(error('start_server 1000'), /unexpected argument "1000"/);
  assert.match(error('start_server -uid 1 -mlopart'), /unexpected argument "-mlopart"/);
});

test('shutdown_server <PID> [-f]', () => {
  assert.deepEqual(ok('shutdown_server 9'), { name: 'shutdown_server', pid: 9, force: false });
  assert.deepEqual(ok('shutdown_server 9 -f'), { name: 'shutdown_server', pid: 9, force: true });
  assert.deepEqual(ok('shutdown_server -f 9'), { name: 'shutdown_server', pid: 9, force: true });
  assert.equal(error('shutdown_server'), 'shutdown_server: missing PID\nUsage: shutdown_server <PID> [-f]');
  assert.match(error('shutdown_server -f'), /missing PID/);
  assert.match(error('shutdown_server 9 -f -f'), /-f given twice/);
  assert.match(error('shutdown_server 9 --force'), /invalid PID "--force"|unexpected argument "--force"/);
  assert.match(error('shutdown_server x'), /invalid PID "x"/);
});

test('get_client_list <PID>', () => {
  assert.deepEqual(ok('get_client_list 5'), { name: 'get_client_list', pid: 5 });
  assert.equal(error('get_client_list'), 'get_client_list: missing PID\nUsage: get_client_list <PID>');
  assert.match(error('get_client_list five'), /invalid PID "five"/);
});

test('get_device_client_list [<PID>]', () => {
  assert.deepEqual(ok('get_device_client_list'), { name: 'get_device_client_list', pid: undefined });
  assert.deepEqual(ok('get_device_client_list 77'), { name: 'get_device_client_list', pid: 77 });
  assert.equal(error('get_device_client_list x'), 'get_device_client_list: invalid PID "x": expected a positive integer\nUsage: get_device_client_list [<PID>]');
  assert.match(error('get_device_client_list 1 2'), /unexpected argument "2"/);
});

test('ps [-p <PID>] [--mps]', () => {
  assert.deepEqual(ok('ps'), { name: 'ps', pid: undefined, mpsOnly: false });
  assert.deepEqual(ok('ps -p 31'), { name: 'ps', pid: 31, mpsOnly: false });
  assert.deepEqual(ok('ps --mps'), { name: 'ps', pid: undefined, mpsOnly: true });
  assert.deepEqual(ok('ps -p 31 --mps'), { name: 'ps', pid: 31, mpsOnly: true });
  assert.deepEqual(ok('ps --mps -p 31'), { name: 'ps', pid: 31, mpsOnly: true });
  assert.match(error('ps --mps --mps'), /--mps given twice/);
  assert.equal(error('ps -p'), 'ps: missing PID\nUsage: ps [-p <PID>] [--mps]');
  assert.match(error('ps 31'), /unexpected argument "31"/);
  assert.match(error('ps -p x'), /invalid PID "x"/);
  assert.match(error('ps -p 1 2'), /unexpected argument "2"/);
});

test('state [--history]', () => {
  assert.deepEqual(ok('state'), { name: 'state', history: false });
  assert.deepEqual(ok('state --history'), { name: 'state', history: true });
  assert.match(error('state --now'), /unexpected argument "--now"/);
  assert.match(error('state --history 1'), /unexpected argument "1"/);
});

test('device_query [<PID>] [--csv]', () => {
  assert.deepEqual(ok('device_query'), { name: 'device_query', pid: undefined, csv: false });
  assert.deepEqual(ok('device_query --csv'), { name: 'device_query', pid: undefined, csv: true });
  assert.deepEqual(ok('device_query 12'), { name: 'device_query', pid: 12, csv: false });
  assert.deepEqual(ok('device_query 12 --csv'), { name: 'device_query', pid: 12, csv: true });
  assert.deepEqual(ok('device_query --csv 12'), { name: 'device_query', pid: 12, csv: true });
  assert.match(error('device_query --csv --csv'), /--csv given twice/);
  assert.match(error('device_query 1 2'), /unexpected argument "2"/);
  assert.match(error('device_query --json'), /invalid PID "--json"/);
});

test('terminate_client <server PID> <client PID>', () => {
  assert.deepEqual(ok('terminate_client 10 20'), { name: 'terminate_client', serverPid: 10, clientPid: 20 });
  assert.match(error('terminate_client'), /missing server PID/);
  assert.match(error('terminate_client 10'), /missing client PID/);
  assert.match(error('terminate_client a 20'), /invalid server PID "a"/);
  assert.match(error('terminate_client 10 b'), /invalid client PID "b"/);
  assert.match(error('terminate_client 10 20 30'), /unexpected argument "30"/);
});

test('get/set_default_active_thread_percentage', () => {
  assert.deepEqual(ok('get_default_active_thread_percentage'), { name: 'get_default_active_thread_percentage' });
  assert.deepEqual(ok('set_default_active_thread_percentage 50'), { name: 'set_default_active_thread_percentage', percentage: 50 });
  assert.deepEqual(ok('set_default_active_thread_percentage 12.5'), { name: 'set_default_active_thread_percentage', percentage: 12.5 });
  assert.deepEqual(ok('set_default_active_thread_percentage 100'), { name: 'set_default_active_thread_percentage', percentage: 100 });
  assert.equal(error('set_default_active_thread_percentage'), 'set_default_active_thread_percentage: missing percentage\nUsage: set_default_active_thread_percentage <percentage>');
  assert.equal(
    error('set_default_active_thread_percentage 0'),
    'set_default_active_thread_percentage: invalid percentage "0": expected a number above 0 and at most 100\nUsage: set_default_active_thread_percentage <percentage>',
  );
  for (const bad of ['150', '100.5', 'abc', 'half', '-5', '1e2', '50%', '0x10', '.5', 'NaN', 'Infinity']) {
    assert.match(error(`set_default_active_thread_percentage ${bad}`), new RegExp(`invalid percentage "${bad.replace(/[.+]/g, '\\$&')}": expected a number above 0 and at most 100`), bad);
  }
  assert.match(error('set_default_active_thread_percentage 50 60'), /unexpected argument "60"/);
  assert.match(error('get_default_active_thread_percentage 5'), /unexpected argument "5"/);
});

test('get/set_active_thread_percentage <PID> [<percentage>]', () => {
  assert.deepEqual(ok('get_active_thread_percentage 42'), { name: 'get_active_thread_percentage', pid: 42 });
  assert.deepEqual(ok('set_active_thread_percentage 42 40'), { name: 'set_active_thread_percentage', pid: 42, percentage: 40 });
  assert.deepEqual(ok('set_active_thread_percentage 42 33.5'), { name: 'set_active_thread_percentage', pid: 42, percentage: 33.5 });
  assert.equal(error('get_active_thread_percentage'), 'get_active_thread_percentage: missing PID\nUsage: get_active_thread_percentage <PID>');
  assert.match(error('get_active_thread_percentage x'), /invalid PID "x"/);
  assert.match(error('get_active_thread_percentage 1 2'), /unexpected argument "2"/);
  assert.equal(error('set_active_thread_percentage 42'), 'set_active_thread_percentage: missing percentage\nUsage: set_active_thread_percentage <PID> <percentage>');
  assert.match(error('set_active_thread_percentage'), /missing PID/);
  assert.match(error('set_active_thread_percentage 40.0 42'), /invalid PID "40.0"/);
  assert.match(error('set_active_thread_percentage 42 0'), /invalid percentage "0"/);
  assert.match(error('set_active_thread_percentage 42 101'), /invalid percentage "101"/);
  assert.match(error('set_active_thread_percentage 42 40 1'), /unexpected argument "1"/);
});

test('get/set_default_device_pinned_mem_limit <device> [<size>]', () => {
  const G = 1024n ** 3n;
  assert.deepEqual(ok('get_default_device_pinned_mem_limit 0'), { name: 'get_default_device_pinned_mem_limit', device: { ordinal: 0, text: '0' } });
  assert.deepEqual(ok('set_default_device_pinned_mem_limit 0 8G'), { name: 'set_default_device_pinned_mem_limit', device: { ordinal: 0, text: '0' }, bytes: 8n * G });
  assert.deepEqual(ok('set_default_device_pinned_mem_limit 1 512M'), { name: 'set_default_device_pinned_mem_limit', device: { ordinal: 1, text: '1' }, bytes: 512n * 1024n ** 2n });
  // K, T, lower case and plain bytes, as parseMemorySize reads them.
  assert.equal((ok('set_default_device_pinned_mem_limit 0 2t') as { bytes: bigint }).bytes, 2n * 1024n ** 4n);
  assert.equal((ok('set_default_device_pinned_mem_limit 0 64K') as { bytes: bigint }).bytes, 64n * 1024n);
  assert.equal((ok('set_default_device_pinned_mem_limit 0 1000') as { bytes: bigint }).bytes, 1000n);
  // UUIDs: with or without GPU-, any case, normalized.
  assert.deepEqual(ok('set_default_device_pinned_mem_limit GPU-74D43ED3-cdf7 1G'), {
    name: 'set_default_device_pinned_mem_limit',
    device: { uuid: 'GPU-74d43ed3-cdf7', text: 'GPU-74D43ED3-cdf7' },
    bytes: G,
  });
  assert.deepEqual((ok('get_default_device_pinned_mem_limit 74d43ed3') as { device: unknown }).device, { uuid: 'GPU-74d43ed3', text: '74d43ed3' });
  assert.equal(
    error('set_default_device_pinned_mem_limit 0 1Q'),
    'set_default_device_pinned_mem_limit: invalid size "1Q": expected an integer with an optional K, M, G or T suffix (8G, 512M)\nUsage: set_default_device_pinned_mem_limit <device> <size>',
  );
  for (const bad of ['G', '-1G', '1.5G', '8GB', '0x10', '1e9']) assert.match(error(`set_default_device_pinned_mem_limit 0 ${bad}`), /invalid size/, bad);
  assert.match(error('set_default_device_pinned_mem_limit 0 0'), /invalid size "0": a limit must be more than 0 bytes/);
  assert.match(error('set_default_device_pinned_mem_limit 0 0G'), /more than 0 bytes/);
  assert.match(error('set_default_device_pinned_mem_limit 0 16777216T'), /invalid size "16777216T": out of range/);
  assert.ok(ok('set_default_device_pinned_mem_limit 0 16777215T'));
  assert.match(error('set_default_device_pinned_mem_limit 0'), /missing size/);
  assert.match(error('set_default_device_pinned_mem_limit'), /missing device/);
  assert.match(error('set_default_device_pinned_mem_limit MIG-1234 1G'), /invalid device "MIG-1234": expected an ordinal or a GPU UUID/);
  assert.match(error('set_default_device_pinned_mem_limit -1 1G'), /invalid device "-1"/);
  assert.match(error('set_default_device_pinned_mem_limit 0=1G'), /invalid device "0=1G"/);
  assert.match(error('set_default_device_pinned_mem_limit 99999 1G'), /invalid device "99999": out of range/);
  assert.match(error('set_default_device_pinned_mem_limit 0 1G 2G'), /unexpected argument "2G"/);
  assert.match(error('get_default_device_pinned_mem_limit'), /missing device/);
  assert.match(error('get_default_device_pinned_mem_limit 0 1G'), /unexpected argument "1G"/);
});

test('get/set_device_pinned_mem_limit <PID> <device> [<size>]', () => {
  assert.deepEqual(ok('get_device_pinned_mem_limit 42 0'), { name: 'get_device_pinned_mem_limit', pid: 42, device: { ordinal: 0, text: '0' } });
  assert.deepEqual(ok('set_device_pinned_mem_limit 42 1 2G'), { name: 'set_device_pinned_mem_limit', pid: 42, device: { ordinal: 1, text: '1' }, bytes: 2n * 1024n ** 3n });
  assert.equal(error('get_device_pinned_mem_limit 42'), 'get_device_pinned_mem_limit: missing device\nUsage: get_device_pinned_mem_limit <PID> <device>');
  assert.match(error('get_device_pinned_mem_limit'), /missing PID/);
  assert.match(error('get_device_pinned_mem_limit 0 0'), /invalid PID "0"/);
  assert.match(error('set_device_pinned_mem_limit 42 0'), /missing size/);
  assert.match(error('set_device_pinned_mem_limit 42 0 1Q'), /invalid size "1Q"/);
  assert.match(error('set_device_pinned_mem_limit 42 zz 1G'), /invalid device "zz"/);
  assert.match(error('set_device_pinned_mem_limit 42 0 1G x'), /unexpected argument "x"/);
});

test('get/set_default_client_priority', () => {
  assert.deepEqual(ok('get_default_client_priority'), { name: 'get_default_client_priority' });
  assert.deepEqual(ok('set_default_client_priority 0'), { name: 'set_default_client_priority', priority: 0 });
  assert.deepEqual(ok('set_default_client_priority 1'), { name: 'set_default_client_priority', priority: 1 });
  assert.equal(
    error('set_default_client_priority 2'),
    'set_default_client_priority: invalid priority "2": expected 0 (normal) or 1 (below normal)\nUsage: set_default_client_priority <0|1>',
  );
  for (const bad of ['-1', '01', 'high', '0.0', '1.']) assert.match(error(`set_default_client_priority ${bad}`), /invalid priority/, bad);
  assert.match(error('set_default_client_priority'), /missing priority/);
  assert.match(error('set_default_client_priority 0 1'), /unexpected argument "1"/);
  assert.match(error('get_default_client_priority 0'), /unexpected argument "0"/);
});

test('set_client_active_thread_percentage / set_client_device_mem_limit: live changes', () => {
  assert.deepEqual(ok('set_client_active_thread_percentage 10 20 25'), { name: 'set_client_active_thread_percentage', serverPid: 10, clientPid: 20, percentage: 25 });
  assert.deepEqual(ok('set_client_device_mem_limit 10 20 0 1G'), {
    name: 'set_client_device_mem_limit',
    serverPid: 10,
    clientPid: 20,
    device: { ordinal: 0, text: '0' },
    bytes: 1024n ** 3n,
  });
  assert.match(error('set_client_active_thread_percentage'), /missing server PID/);
  assert.match(error('set_client_active_thread_percentage 10'), /missing client PID/);
  assert.equal(
    error('set_client_active_thread_percentage 10 20'),
    'set_client_active_thread_percentage: missing percentage\nUsage: set_client_active_thread_percentage <server PID> <client PID> <percentage>',
  );
  assert.match(error('set_client_active_thread_percentage 10 20 0'), /invalid percentage "0"/);
  assert.match(error('set_client_active_thread_percentage x 20 5'), /invalid server PID "x"/);
  assert.match(error('set_client_active_thread_percentage 10 y 5'), /invalid client PID "y"/);
  assert.match(error('set_client_active_thread_percentage 10 20 5 6'), /unexpected argument "6"/);
  assert.match(error('set_client_device_mem_limit 10 20'), /missing device/);
  assert.match(error('set_client_device_mem_limit 10 20 0'), /missing size/);
  assert.match(error('set_client_device_mem_limit 10 20 0 1Q'), /invalid size "1Q"/);
  assert.match(error('set_client_device_mem_limit 10 20 0 1G 5'), /unexpected argument "5"/);
});

test('sm_partition add <uuid> <chunks> / rm <uuid>/<id> / rm <uuid> <id>', () => {
  const uuid = 'GPU-74d43ed3-cdf7-e667-3644-bf5b4f46ed65';
  assert.deepEqual(ok(`sm_partition add ${uuid} 7`), { name: 'sm_partition', action: 'add', device: { uuid, text: uuid }, chunks: 7 });
  assert.deepEqual(ok('sm_partition add 74D43ED3 1'), { name: 'sm_partition', action: 'add', device: { uuid: 'GPU-74d43ed3', text: '74D43ED3' }, chunks: 1 });
  // All digits is a UUID prefix here: sm_partition takes UUIDs only, as MPS does.
  assert.deepEqual(ok('sm_partition add 1234 2'), { name: 'sm_partition', action: 'add', device: { uuid: 'GPU-1234', text: '1234' }, chunks: 2 });
  const rm = { name: 'sm_partition', action: 'rm', partition: { device: { uuid, text: uuid }, number: 3 } };
  assert.deepEqual(ok(`sm_partition rm ${uuid}/3`), rm);
  assert.deepEqual(ok(`sm_partition rm ${uuid} 3`), rm);
  assert.deepEqual(ok('sm_partition rm 74d43ed3/0'), { name: 'sm_partition', action: 'rm', partition: { device: { uuid: 'GPU-74d43ed3', text: '74d43ed3' }, number: 0 } });
  const usage = '\nUsage: sm_partition add <GPU UUID> <chunks> | sm_partition rm <GPU UUID>/<ID> | sm_partition rm <GPU UUID> <ID>';
  assert.equal(error('sm_partition'), `sm_partition: missing add or rm${usage}`);
  assert.equal(error('sm_partition list'), `sm_partition: unknown action "list": expected add or rm${usage}`);
  assert.match(error('sm_partition add'), /missing GPU UUID/);
  assert.match(error(`sm_partition add ${uuid}`), /missing chunk count/);
  assert.match(error(`sm_partition add ${uuid} 0`), /invalid chunk count "0": out of range/);
  assert.match(error(`sm_partition add ${uuid} -1`), /invalid chunk count "-1"/);
  assert.match(error(`sm_partition add ${uuid} 2.5`), /invalid chunk count "2.5"/);
  assert.match(error(`sm_partition add ${uuid} 99999999`), /out of range/);
  assert.match(error(`sm_partition add ${uuid} 2 3`), /unexpected argument "3"/);
  assert.match(error('sm_partition add MIG-abc 2'), /invalid GPU UUID "MIG-abc"/);
  assert.match(error('sm_partition add nothex 2'), /invalid GPU UUID "nothex"/);
  assert.match(error('sm_partition rm'), /missing partition/);
  assert.match(error(`sm_partition rm ${uuid}`), /missing partition ID/);
  assert.match(error(`sm_partition rm ${uuid}/`), /missing partition ID/);
  assert.match(error(`sm_partition rm ${uuid}/Dx4A`), /invalid partition ID "Dx4A"/);
  assert.match(error(`sm_partition rm ${uuid} x`), /invalid partition ID "x"/);
  assert.match(error('sm_partition rm /3'), /missing GPU UUID|invalid GPU UUID ""/);
  assert.match(error(`sm_partition rm ${uuid}/3 4`), /unexpected argument "4"/);
  assert.match(error(`sm_partition rm ${uuid} 3 4`), /unexpected argument "4"/);
});

test('lspart', () => {
  assert.deepEqual(ok('lspart'), { name: 'lspart' });
  assert.equal(error('lspart -v'), 'lspart: unexpected argument "-v"\nUsage: lspart');
});

test('quit [-t <seconds>]', () => {
  assert.deepEqual(ok('quit'), { name: 'quit', timeoutSeconds: undefined });
  assert.deepEqual(ok('quit -t 5'), { name: 'quit', timeoutSeconds: 5 });
  assert.deepEqual(ok('quit -t 0.5'), { name: 'quit', timeoutSeconds: 0.5 });
  assert.equal(error('quit -t'), 'quit: missing timeout\nUsage: quit [-t <seconds>]');
  assert.match(error('quit -t soon'), /invalid timeout "soon"/);
  assert.match(error('quit now'), /unexpected argument "now"/);
  assert.match(error('quit -t 1 2'), /unexpected argument "2"/);
});

test('every command has a usage line that starts with its name', () => {
  for (const [name, usage] of Object.entries(USAGE)) assert.ok(usage.startsWith(name), name);
});

test('docs/commands.md documents every command: a heading and each form of its usage line', () => {
  const doc = readFileSync(new URL('../../../docs/commands.md', import.meta.url), 'utf8');
  const headings = doc.split('\n').filter((l) => l.startsWith('### '));
  for (const [name, usage] of Object.entries(USAGE)) {
    assert.ok(headings.some((h) => new RegExp(`\\b${name}\\b`).test(h)), `no heading for ${name}`);
    for (const form of usage.split(' | ')) assert.ok(doc.includes(form), `docs/commands.md lacks "${form}"`);
  }
});

test('label_allocation and unlabel_allocation: an allocation id and Kubernetes names', () => {
  assert.deepEqual(ok('label_allocation a-0123abcd team-a infer-0 main'), { name: 'label_allocation', allocation: 'a-0123abcd', namespace: 'team-a', pod: 'infer-0', container: 'main' });
  assert.deepEqual(ok('unlabel_allocation a-0123abcd'), { name: 'unlabel_allocation', allocation: 'a-0123abcd' });
  for (const line of [
    'label_allocation',
    'label_allocation a-1 ns pod',
    'label_allocation a-1 ns pod c extra',
    'label_allocation a/1 ns pod c',
    'label_allocation a-1 Team pod c',
    'label_allocation a-1 ns pod_1 c',
    'unlabel_allocation',
    'unlabel_allocation a-1 b',
  ]) {
    assert.ok(error(line).includes('\nUsage: '), line);
  }
});
