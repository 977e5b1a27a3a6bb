// openmps-control --http end to end: a real daemon on the software GPU with real clients, read
// through /metrics and /api/state; the flag's failures as an operator meets them.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { StateSnapshot } from '../../src/telemetry/state.js';
import { runControl, waitUntil } from '../support/daemon.js';
import { get, startHttpDaemon } from '../support/http-daemon.js';
import { startWorker } from '../support/worker.js';

function tempDirectories(t: { after(fn: () => unknown): void }): Record<string, string> {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  t.after(() => { rmSync(root, { recursive: true, force: true }); });
  return { OPENMPS_DEVICE: 'sim', OPENMPS_PIPE_DIRECTORY: join(root, 'pipe'), OPENMPS_LOG_DIRECTORY: join(root, 'log') };
}

test('--http: /metrics and /api/state show the connected clients; 404 and 405 answer JSON', async (t) => {
  const { daemon, url } = await startHttpDaemon(t);
  assert.match(url, /^http:\/\/127\.0\.0\.1:[1-9][0-9]*$/);
  const workers = [startWorker(t, daemon.env, ['hold', String(1 << 20)]), startWorker(t, daemon.env, ['hold', String(2 << 20)])];
  await Promise.all(workers.map((w) => w.waitFor('holding')));

  let metrics = '';
  await waitUntil(async () => {
    metrics = (await get(`${url}/metrics`)).text;
    return workers.every((w) => metrics.includes(`pid="${w.pid}"`));
  }, 'both clients in /metrics');
  for (const w of workers) {
    assert.match(metrics, new RegExp(`^openmps_client_memory_in_use_bytes\\{[^}]*pid="${w.pid}"[^}]*\\} [1-9]`, 'm'));
    assert.match(metrics, new RegExp(`^openmps_client_state\\{[^}]*pid="${w.pid}"[^}]*state="ACTIVE"\\} 1$`, 'm'));
  }
  assert.match(metrics, /^openmps_server_state\{[^}]*state="ACTIVE"\} 1$/m);
  assert.match(metrics, new RegExp(`^openmps_daemon_info\\{[^}]*pid="${daemon.pid}"`, 'm'));
  assert.match(metrics, /^process_cpu_user_seconds_total /m);
  const response = await fetch(`${url}/metrics`);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  await response.text();

  const state = await get(`${url}/api/state`);
  assert.equal(state.status, 200);
  assert.match(state.type, /^application\/json/);
  const snapshot = JSON.parse(state.text) as StateSnapshot;
  assert.equal(snapshot.daemon.pid, daemon.pid);
  for (const w of workers) assert.ok(snapshot.clients.some((c) => c.pid === w.pid), `client ${w.pid} in ${state.text}`);
  assert.ok(Array.isArray(snapshot.history));
  const bare = JSON.parse((await get(`${url}/api/state?history=0`)).text) as StateSnapshot;
  assert.equal(bare.history, undefined);

  const page = await get(`${url}/`);
  assert.equal(page.status, 200);
  assert.match(page.type, /^text\/html/);
  assert.match((await get(`${url}/main.js`)).type, /^text\/javascript/);

  const missing = await get(`${url}/no/such/thing`);
  assert.equal(missing.status, 404);
  assert.equal(typeof (JSON.parse(missing.text) as { error: unknown }).error, 'string');
  const post = await get(`${url}/api/state`, { method: 'POST', body: '{}' });
  assert.equal(post.status, 405);
  assert.equal(typeof (JSON.parse(post.text) as { error: unknown }).error, 'string');
});

test('--http on a port in use: -d exits 1 saying so, and leaves no daemon behind', async (t) => {
  const holder = createServer();
  t.after(() => holder.close());
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const address = holder.address();
  assert.ok(typeof address === 'object' && address !== null);
  const env = tempDirectories(t);
  const result = await runControl(['-d', '--http', `127.0.0.1:${address.port}`], { env });
  assert.equal(result.code, 1, result.stderr);
  assert.match(result.stderr, /EADDRINUSE/);
  assert.ok(result.stderr.includes(`127.0.0.1:${address.port}`), result.stderr);
  // The daemon that had started stopped again: no pid file, no socket, the shell finds nobody.
  assert.ok(!existsSync(join(env.OPENMPS_PIPE_DIRECTORY ?? '', 'openmps-control.pid')));
  assert.equal((await runControl([], { env, input: 'get_server_list\n' })).code, 1);
});

test('--http and --log-format refuse bad values with status 2', async (t) => {
  const env = tempDirectories(t);
  // Refused while parsing, before any daemon starts, so they can run side by side.
  const cases: [string[], Record<string, string>][] = [
    [['-d', '--http', 'localhost'], env],
    [['-d', '--http', '::1:80'], env],
    [['-f', '--http', '70000'], env],
    [['-d', '--log-format', 'xml'], env],
    [['-d'], { ...env, OPENMPS_LOG_FORMAT: 'yaml' }],
  ];
  const results = await Promise.all(cases.map(([args, e]) => runControl(args, { env: e })));
  results.forEach((result, i) => {
    assert.equal(result.code, 2, `${cases[i]?.[0].join(' ') ?? ''}: ${result.stderr}`);
  });
  // The variable belongs to the daemon: the operator shell runs (and finds no daemon: 1).
  const shell = await runControl([], { env: { ...env, OPENMPS_LOG_FORMAT: 'yaml' }, input: 'get_server_list\n' });
  assert.equal(shell.code, 1, shell.stderr);
  assert.match(shell.stderr, /Cannot find openmps control daemon/);
});

test('--log-format json reaches the detached daemon: control.log is JSON lines', async (t) => {
  const { daemon } = await startHttpDaemon(t, { args: ['--log-format', 'json'] });
  assert.equal((await daemon.command('get_server_list')).code, 0);
  const lines = daemon.controlLog();
  assert.ok(lines.length > 0);
  for (const line of lines) assert.equal(typeof JSON.parse(line), 'object', line);
  assert.ok(lines.some((l) => l.includes('HTTP: serving')));
});
