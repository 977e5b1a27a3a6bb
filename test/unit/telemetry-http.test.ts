import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatHttpAddress, parseHttpAddress, startHttpServer, type StateSource } from '../../src/telemetry/http.js';
import type { StateSnapshot } from '../../src/telemetry/state.js';
import { syntheticSnapshot } from '../support/synthetic-state.js';
import { get as httpGet } from 'node:http';

test('parseHttpAddress: host:port, :port, port, [ipv6]:port', () => {
  assert.deepEqual(parseHttpAddress('127.0.0.1:9400'), { host: '127.0.0.1', port: 9400 });
  assert.deepEqual(parseHttpAddress('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
  assert.deepEqual(parseHttpAddress('localhost:9400'), { host: 'localhost', port: 9400 });
  assert.deepEqual(parseHttpAddress(':9400'), { host: '127.0.0.1', port: 9400 });
  assert.deepEqual(parseHttpAddress('9400'), { host: '127.0.0.1', port: 9400 });
  assert.deepEqual(parseHttpAddress('0'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseHttpAddress('[::1]:9400'), { host: '::1', port: 9400 });
  assert.deepEqual(parseHttpAddress('[::]:65535'), { host: '::', port: 65535 });
});

test('parseHttpAddress: bad input throws INVALID_HTTP_ADDRESS', () => {
  for (const bad of ['', ' ', 'abc', '127.0.0.1', '127.0.0.1:', ':', '65536', '-1', '1.5', '::1:9400', '[::1]', '[::1]9400', '[nothost]:80',
    'http://localhost:80', 'my host:80', '[::1]:99999', 'host:80:80', '1e3', '0x10']) {
    assert.throws(() => parseHttpAddress(bad), { code: 'INVALID_HTTP_ADDRESS' }, JSON.stringify(bad));
  }
});

test('formatHttpAddress round-trips', () => {
  for (const text of ['127.0.0.1:9400', '[::1]:80', 'localhost:0']) assert.equal(formatHttpAddress(parseHttpAddress(text)), text);
});

/** A StateSource that answers with the synthetic snapshot, or fails while `failing` is set. */
function fakeSource(): StateSource & { failing: boolean; calls: { history: boolean }[] } {
  const source = {
    failing: false,
    calls: [] as { history: boolean }[],
    state(options: { history: boolean }): Promise<StateSnapshot> {
      source.calls.push(options);
      if (source.failing) return Promise.reject(new Error('daemon is shutting down'));
      return Promise.resolve(syntheticSnapshot({ history: options.history }));
    },
  };
  return source;
}

test('HTTP routes against a stand-in source: metrics, state, dashboard, 404, 405, 503', async (t) => {
  const dashboard = mkdtempSync(join(tmpdir(), 'openmps-dash-'));
  t.after(() => { rmSync(dashboard, { recursive: true, force: true }); });
  writeFileSync(join(dashboard, 'index.html'), '<!doctype html><title>t</title>');
  writeFileSync(join(dashboard, 'main.js'), 'export {};');
  const source = fakeSource();
  const lines: string[] = [];
  const http = await startHttpServer(source, { host: '127.0.0.1', port: 0 }, (l) => lines.push(l), { dashboardDirectory: dashboard });
  t.after(() => http.close());
  assert.ok(http.port > 0);
  assert.equal(http.url, `http://127.0.0.1:${http.port}`);

  const metrics = await fetch(`${http.url}/metrics`);
  assert.equal(metrics.status, 200);
  assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await metrics.text();
  assert.match(text, /^openmps_client_kernels_total\{.*pid="5001".*\} 120$/m);
  assert.match(text, /^process_resident_memory_bytes /m);
  assert.deepEqual(source.calls.at(-1), { history: false });

  const state = await fetch(`${http.url}/api/state`);
  assert.equal(state.status, 200);
  assert.match(state.headers.get('content-type') ?? '', /^application\/json/);
  const body = (await state.json()) as StateSnapshot;
  assert.deepEqual(body.clients.map((c) => c.pid), [5001, 5002]);
  assert.equal(body.history?.length, 3);
  const bare = (await (await fetch(`${http.url}/api/state?history=0`)).json()) as StateSnapshot;
  assert.equal(bare.history, undefined);
  assert.deepEqual(source.calls.at(-1), { history: false });

  const index = await fetch(`${http.url}/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(await index.text(), /<title>t<\/title>/);
  const script = await fetch(`${http.url}/main.js`);
  assert.match(script.headers.get('content-type') ?? '', /^text\/javascript/);
  await script.text();

  for (const path of ['/nope', '/missing.js', '/../package.json', '/%2e%2e/package.json', '/api/state/x', '/.hidden.js']) {
    const res = await fetch(`${http.url}${path}`);
    assert.equal(res.status, 404, path);
    assert.equal(typeof ((await res.json()) as { error?: unknown }).error, 'string');
  }
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const res = await fetch(`${http.url}/api/state`, { method });
    assert.equal(res.status, 405, method);
    assert.equal(res.headers.get('allow'), 'GET, HEAD');
    await res.text();
  }
  const head = await fetch(`${http.url}/api/state`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');

  source.failing = true;
  for (const path of ['/metrics', '/api/state']) {
    const res = await fetch(`${http.url}${path}`);
    assert.equal(res.status, 503, path);
    assert.match(((await res.json()) as { error: string }).error, /shutting down/);
  }
  assert.ok(lines.some((l) => l.includes('state unavailable')));
  // Still serving after the failures.
  source.failing = false;
  assert.equal((await fetch(`${http.url}/api/state?history=0`)).status, 200);
});

/** GET `path` with a Host header of our choosing (fetch will not send one). */
function getWithHost(port: number, path: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
  });
}

test('HTTP on loopback answers loopback names only (DNS rebinding)', async (t) => {
  const http = await startHttpServer(fakeSource(), { host: '127.0.0.1', port: 0 });
  t.after(() => http.close());
  for (const host of [`127.0.0.1:${http.port}`, `localhost:${http.port}`, 'LOCALHOST', `[::1]:${http.port}`, `dash.localhost:${http.port}`]) {
    assert.equal(await getWithHost(http.port, '/api/state?history=0', host), 200, host);
  }
  for (const host of [`evil.example:${http.port}`, 'evil.example', `10.0.0.1:${http.port}`, `127.0.0.1.evil.example:${http.port}`]) {
    assert.equal(await getWithHost(http.port, '/api/state?history=0', host), 421, host);
  }
});

test('HTTP: no dashboard built gives a 404 that says so', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'openmps-dash-'));
  t.after(() => { rmSync(empty, { recursive: true, force: true }); });
  const http = await startHttpServer(fakeSource(), { host: '127.0.0.1', port: 0 }, undefined, { dashboardDirectory: empty });
  t.after(() => http.close());
  const res = await fetch(`${http.url}/`);
  assert.equal(res.status, 404);
  assert.match(((await res.json()) as { error: string }).error, /not built/);
});

test('HTTP: a port in use rejects with EADDRINUSE; close() ends open keep-alive connections', async (t) => {
  const first = await startHttpServer(fakeSource(), { host: '127.0.0.1', port: 0 });
  t.after(() => first.close());
  await assert.rejects(startHttpServer(fakeSource(), { host: '127.0.0.1', port: first.port }), { code: 'EADDRINUSE' });
  // A fetch leaves its keep-alive connection open; close() must still finish.
  await (await fetch(`${first.url}/api/state?history=0`)).text();
  await first.close();
  await assert.rejects(fetch(`${first.url}/api/state`));
});
