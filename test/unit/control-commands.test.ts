// The command language parser: every command, every malformed form.
import assert from 'node:assert/strict';
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

test('ps [-p <PID>]', () => {
  assert.deepEqual(ok('ps'), { name: 'ps', pid: undefined });
  assert.deepEqual(ok('ps -p 31'), { name: 'ps', pid: 31 });
  assert.equal(error('ps -p'), 'ps: missing PID\nUsage: ps [-p <PID>]');
  assert.match(error('ps 31'), /unexpected argument "31"/);
  assert.match(error('ps -p x'), /invalid PID "x"/);
  assert.match(error('ps -p 1 2'), /unexpected argument "2"/);
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
  assert.match(error('set_default_active_thread_percentage'), /missing percentage/);
  assert.match(error('set_default_active_thread_percentage 0'), /expected 1 to 100/);
  assert.match(error('set_default_active_thread_percentage 101'), /expected 1 to 100/);
  assert.match(error('set_default_active_thread_percentage half'), /invalid percentage "half"/);
  assert.match(error('set_default_active_thread_percentage -5'), /invalid percentage "-5"/);
  assert.match(error('get_default_active_thread_percentage 5'), /unexpected argument "5"/);
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
