// The pieces of adoption that decode what another process sends or leaves behind: the supervision
// channel's line reader (src/transport/json-lines.ts) and its message parsers, fuzzed; the path
// ownership rules (src/transport/owned-path.ts); a partition table taken over from adopted servers.
// The end-to-end behaviour is in test/e2e/control-orphan.test.ts.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { parseAdoptionRecord } from '../../src/control/servers.js';
import { partitionStateOf } from '../../src/control/partitions.js';
import { parseDaemonMessage, parseServerMessage } from '../../src/server/ipc.js';
import { JsonLines } from '../../src/transport/json-lines.js';
import { fileIdOf, listenOwned, PathInUseError, socketIsLive, unlinkIfOwned } from '../../src/transport/owned-path.js';
import { rng } from '../support/rng.js';

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-sup-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** A connected pair: the raw writer end and a JsonLines reader on the other end. */
async function pair(t: TestContext, maxLineBytes: number): Promise<{ writer: Socket; reader: JsonLines; messages: unknown[]; closed: Promise<string> }> {
  const path = join(tempDir(t), 's');
  const accepted = new Promise<Socket>((resolve) => {
    const server = createServer(resolve);
    server.listen(path);
    t.after(() => server.close());
  });
  const writer = connect(path);
  writer.on('error', () => undefined);
  t.after(() => writer.destroy());
  const socket = await accepted;
  const reader = new JsonLines(socket, maxLineBytes);
  const messages: unknown[] = [];
  reader.onMessage((m) => messages.push(m));
  const closed = new Promise<string>((resolve) => {
    reader.onClose(resolve);
  });
  return { writer, reader, messages, closed };
}

function randomValue(next: () => number, depth = 0): unknown {
  const k = Math.floor(next() * (depth > 2 ? 4 : 6));
  switch (k) {
    case 0:
      return Math.floor(next() * 2 ** 40) - 2 ** 39;
    case 1:
      return ['request', 'response', 'adopt', 'stats', 'ready', 'exiting', 'log', '', 'x'.repeat(Math.floor(next() * 50))][Math.floor(next() * 9)];
    case 2:
      return next() < 0.5;
    case 3:
      return null;
    case 4:
      return Array.from({ length: Math.floor(next() * 4) }, () => randomValue(next, depth + 1));
    default: {
      const keys = ['type', 'id', 'op', 'ok', 'code', 'pid', 'uid', 'socketPath', 'startedAt', 'devices', 'deviceKind', 'state', 'partitions', 'force', 'result', 'line'];
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(next() * 8); i > 0; i--) o[keys[Math.floor(next() * keys.length)] ?? 'type'] = randomValue(next, depth + 1);
      return o;
    }
  }
}

test('lines split anywhere arrive whole and in order', async (t) => {
  const next = rng(12);
  const { writer, reader, messages } = await pair(t, 64 * 1024);
  const sent = Array.from({ length: 300 }, () => randomValue(next));
  const bytes = Buffer.from(sent.map((v) => `${JSON.stringify(v)}\n`).join(''), 'utf8');
  // Written in pieces of 1 to 40 bytes, each its own write, so the reader sees many boundaries.
  for (let at = 0; at < bytes.length; ) {
    const n = 1 + Math.floor(next() * 40);
    writer.write(bytes.subarray(at, at + n));
    at += n;
  }
  await new Promise<void>((resolve) => {
    reader.onMessage((m) => {
      messages.push(m);
      if (messages.length === sent.length) resolve();
    });
  });
  assert.deepEqual(messages, sent);
});

test('a line past the bound is cut off without being held, even with no newline ever', async (t) => {
  const { writer, closed, messages } = await pair(t, 1024);
  writer.write(`${JSON.stringify({ a: 1 })}\n`);
  for (let i = 0; i < 8; i++) writer.write('y'.repeat(200));
  assert.equal(await closed, 'a line longer than 1024 bytes');
  assert.deepEqual(messages, [{ a: 1 }]);
});

test('bytes that are not JSON close the connection; nothing throws', async (t) => {
  for (let seed = 1; seed <= 40; seed++) {
    const next = rng(seed);
    const { writer, closed } = await pair(t, 4096);
    const junk = Buffer.from(Array.from({ length: 64 + Math.floor(next() * 512) }, () => Math.floor(next() * 256)));
    // At least one newline, so a line is complete and must be judged.
    junk[Math.floor(next() * junk.length)] = 0x0a;
    writer.write(junk);
    writer.end();
    const reason = await closed;
    assert.ok(typeof reason === 'string');
  }
});

/** Mostly well-formed requests and answers with fields of any type: near misses of the shapes. */
function nearMiss(next: () => number): unknown {
  const base: Record<string, unknown> =
    next() < 0.5
      ? { type: 'request', id: Math.floor(next() * 100), op: ['clients', 'stats', 'adopt', 'shutdown', 'partitions', 'terminate-client', 'nope'][Math.floor(next() * 7)] }
      : { pid: 7, uid: 0, socketPath: '/p', startedAt: 1, devices: [], deviceKind: 'sim', state: 'ACTIVE', partitions: [] };
  const keys = Object.keys(base);
  // Replace a field or two by something random.
  for (let i = Math.floor(next() * 3); i > 0; i--) base[keys[Math.floor(next() * keys.length)] ?? 'type'] = randomValue(next, 2);
  return base;
}

test('the parsers take any JSON value without throwing and accept only their shapes', () => {
  const next = rng(99);
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const v = i % 2 === 0 ? randomValue(next) : nearMiss(next);
    const d = parseDaemonMessage(v);
    if (d) {
      assert.equal(d.type, 'request');
      assert.equal(typeof d.id, 'number');
      accepted++;
    }
    const s = parseServerMessage(v);
    if (s?.type === 'exiting') assert.ok(Number.isInteger(s.code));
    const a = parseAdoptionRecord(v);
    if (a) {
      assert.equal(typeof a.pid, 'number');
      assert.ok(Array.isArray(a.devices) && Array.isArray(a.partitions));
      accepted++;
    }
  }
  // The generator does reach valid requests, so the checks above ran.
  assert.ok(accepted > 0);
  assert.deepEqual(parseDaemonMessage({ type: 'request', id: 3, op: 'adopt' }), { type: 'request', id: 3, op: 'adopt' });
  assert.equal(parseAdoptionRecord({ pid: 1, uid: 0, socketPath: '/p', startedAt: 1, devices: [], deviceKind: 'sim', state: 'BOGUS', partitions: [] }), undefined);
});

async function listening(t: TestContext, path: string): Promise<Server> {
  const server = createServer((s) => s.end());
  await listenOwned(server, path);
  t.after(() => server.close());
  return server;
}

test('owned paths: a socket moved aside and replaced is not removed by its first owner', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'server');
  const first = createServer((s) => s.end());
  const id = await listenOwned(first, path);
  renameSync(path, join(dir, 'moved'));
  await listening(t, path);
  // Closing the first listener removes only the name it was bound at (gone since the rename),
  // and unlinkIfOwned sees another inode at the path.
  await new Promise<void>((resolve) => first.close(() => { resolve(); }));
  assert.equal(unlinkIfOwned(path, id), false);
  assert.equal(await socketIsLive(path), true);
  // The process's own file goes when it still names the same inode.
  const pidFile = join(dir, 'pid');
  writeFileSync(pidFile, '1\n');
  assert.equal(unlinkIfOwned(pidFile, fileIdOf(pidFile)), true);
  assert.equal(existsSync(pidFile), false);
});

test('owned paths: a live socket is refused, a stale one replaced', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'server');
  await listening(t, path);
  await assert.rejects(listenOwned(createServer(), path), (err: unknown) => err instanceof PathInUseError && err.path === path);
  assert.equal(await socketIsLive(path), true);
  // A stale socket: a file nothing listens on.
  const stale = join(dir, 'stale');
  writeFileSync(stale, '');
  const before = fileIdOf(stale);
  await listening(t, stale);
  assert.notDeepEqual(fileIdOf(stale), before);
  assert.equal(await socketIsLive(stale), true);
});

test('a partition table taken over from adopted servers stays disjoint and numbers on', () => {
  const u = 'GPU-aaaa';
  const state = partitionStateOf([
    { id: `${u}/2`, deviceUuid: u, chunks: [0, 1] },
    { id: `${u}/2`, deviceUuid: u, chunks: [0, 1] },
    { id: `${u}/5`, deviceUuid: u, chunks: [1, 2] },
    { id: `${u}/3`, deviceUuid: u, chunks: [4] },
  ]);
  assert.deepEqual(state.partitions.map((p) => p.id), [`${u}/2`, `${u}/3`]);
  // /5 was dropped (it overlaps /2) but its number is not handed out again.
  assert.equal(state.nextNumber.get(u), 6);
});
