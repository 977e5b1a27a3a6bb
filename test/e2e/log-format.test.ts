// --log-format json: control.log and server.log as one JSON object a line, with the event, the
// client's identity and state changes as fields (docs/telemetry.md). An in-process daemon with
// real servers on the software GPU.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ControlDaemon } from '../../src/control/daemon.js';
import { connect } from '../../src/index.js';
import { waitUntil } from '../support/daemon.js';

interface JsonLine {
  readonly time: string;
  readonly role: string;
  readonly pid: number;
  readonly message: string;
  readonly event?: string;
  readonly client?: { readonly pid: number; readonly clientId?: number; readonly command?: string };
  readonly to?: string;
  readonly from?: string;
  readonly reason?: string;
}

function lines(file: string): JsonLine[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as JsonLine);
}

test('--log-format json: every line of both logs is JSON with identity and state changes', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  const daemon = new ControlDaemon({ pipeDirectory: join(root, 'pipe'), logDirectory: join(root, 'log'), device: 'sim', logFormat: 'json' });
  t.after(async () => {
    await daemon.quit();
    await daemon.closed;
    rmSync(root, { recursive: true, force: true });
  });
  await daemon.start();
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  await ctx.close();
  const serverLog = join(root, 'log', 'server.log');
  await waitUntil(() => {
    try {
      return lines(serverLog).some((l) => l.event === 'client-disconnected');
    } catch {
      return false;
    }
  }, 'the disconnect in server.log');

  const control = lines(join(root, 'log', 'control.log'));
  for (const l of control) {
    assert.equal(l.role, 'Control');
    // The daemon's pid, but for the line that starts a server, which carries the server's (as MPS).
    assert.ok(Number.isInteger(l.pid) && l.pid > 0);
    assert.ok(!Number.isNaN(Date.parse(l.time)), l.time);
  }
  assert.ok(control.some((l) => l.event === 'client-connect' && l.client?.pid === process.pid));
  assert.ok(control.some((l) => l.event === 'server-state' && l.to === 'ACTIVE'));
  assert.ok(control.some((l) => l.event === 'client-connected' && l.client?.pid === process.pid && l.client.clientId === ctx.clientId));

  const server = lines(serverLog);
  for (const l of server) assert.equal(l.role, 'Server');
  const state = server.find((l) => l.event === 'server-state');
  assert.deepEqual([state?.from, state?.to, state?.reason], ['INITIALIZING', 'ACTIVE', 'ready']);
  const connected = server.find((l) => l.event === 'client-connected');
  assert.equal(connected?.client?.pid, process.pid);
  assert.equal(connected.client.clientId, ctx.clientId);
  assert.match(connected.client.command ?? '', /log-format\.test\.js/);
  assert.equal(server.find((l) => l.event === 'client-disconnected')?.reason, 'closed by the client');
});
