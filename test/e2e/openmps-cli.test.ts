// The `openmps` command end to end, against real daemons on the software GPU: run starts its own
// daemon and stops it, prefixes its copies' output, gives them their shares and exits with the
// worst status; status and top show live clients; no daemon, a refused or garbled `state` reply
// and bad arguments exit 1 or 2; bench wraps the suite with its progress bar.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FramedSocket } from '../../src/transport/framed-socket.js';
import { alive, startDaemon, waitUntil } from '../support/daemon.js';
import { cli, freshRoot, startCli } from '../support/openmps-cli.js';

// Test timeouts of 120 s (30 s before): a test here starts several node processes, 1-5 s apiece on
// a loaded 2-core machine, and took up to 13 s there; the timeout is to end a hang, not a speed bar.

const RUN_CLIENT = fileURLToPath(new URL('../fixtures/run-client.js', import.meta.url));

/** Fields of the fixture's report line (`[i] client index=1 ... percentage=33.3 ...`). */
function report(line: string): Record<string, string> {
  return Object.fromEntries([...line.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1] ?? '', m[2] ?? '']));
}

test('run -n 3 with no daemon starts one, prefixes output, gives shares and limits, returns the worst status, stops the daemon', { timeout: 120_000 }, async (t) => {
  const root = freshRoot(t);
  const env = { OPENMPS_PIPE_DIRECTORY: join(root, 'pipe'), OPENMPS_LOG_DIRECTORY: join(root, 'log') };
  const r = await cli(t, ['run', '-n', '3', '--device', 'sim', '--mem-limit', '64M', '--', process.execPath, RUN_CLIENT, '--fail', '1=3'], env);
  assert.equal(r.code, 3, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, new RegExp(`^openmps run: started openmps-control \\(pid \\d+, --device sim\\) in ${env.OPENMPS_PIPE_DIRECTORY}; it stops when the run ends$`, 'm'));
  assert.match(r.stderr, /^openmps run: 3 copies, share 33\.3%, memory limit 0=64M$/m);
  assert.match(r.stderr, /^openmps run: copy 1 exited with status 3$/m);
  const out = r.stdout.split('\n').filter((l) => l !== '');
  assert.ok(out.every((l) => /^\[[0-2]\] /.test(l)), `every stdout line is prefixed:\n${r.stdout}`);
  for (const i of [0, 1, 2]) {
    const line = out.find((l) => l.startsWith(`[${i}] client `));
    assert.ok(line, `copy ${i} reported:\n${r.stdout}`);
    const fields = report(line);
    assert.equal(fields.index, String(i), 'the prefix is the copy\'s OPENMPS_RUN_INDEX');
    assert.equal(fields.count, '3');
    assert.equal(fields.mode, 'mps', 'the copy reached the daemon run started');
    assert.equal(fields.percentage, '33.3', 'auto share: 100/3 rounded down to one decimal');
    assert.ok(Number(fields.smCount) > 0 && Number(fields.smCount) < 132, `a third of the SMs, not ${fields.smCount}`);
    assert.equal(fields.memoryLimit, String(64 * 1024 * 1024));
    // The partial last line (no newline) is flushed with its prefix at exit.
    assert.ok(out.includes(`[${i}] bye`), `[${i}] bye in:\n${r.stdout}`);
    assert.match(r.stderr, new RegExp(`^\\[${i}\\] stderr of ${i}$`, 'm'));
  }
  // Stopped at the end: the control socket is gone and nothing answers.
  assert.equal(existsSync(join(env.OPENMPS_PIPE_DIRECTORY, 'control')), false, 'the daemon run started was stopped');
  const after = await cli(t, ['status'], env);
  assert.equal(after.code, 1);
});

test('run with a daemon already running uses it and leaves it; a given share goes to every copy', { timeout: 120_000 }, async (t) => {
  const daemon = await startDaemon(t);
  const r = await cli(t, ['run', '-n', '2', '--share', '25', process.execPath, RUN_CLIENT], daemon.env);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /started openmps-control/);
  const reports = r.stdout.split('\n').filter((l) => l.includes(' client ')).map(report);
  assert.deepEqual(reports.map((f) => f.percentage), ['25', '25']);
  assert.ok(alive(daemon.pid), 'the daemon run did not start is still running');
});

test('run: a command that cannot be started is 127, a signal is 128+n; bad arguments exit 2', { timeout: 120_000 }, async (t) => {
  const daemon = await startDaemon(t);
  const missing = await cli(t, ['run', '-n', '2', '--', join(freshRoot(t), 'no-such-program')], daemon.env);
  assert.equal(missing.code, 127);
  assert.match(missing.stderr, /^\[0\] openmps run: cannot start .*no-such-program: spawn .* ENOENT$/m);
  const killed = await cli(t, ['run', '-n', '2', '--', 'sh', '-c', 'if [ "$OPENMPS_RUN_INDEX" = 1 ]; then kill -9 $$; fi; echo "share $OPENMPS_ACTIVE_THREAD_PERCENTAGE"'], daemon.env);
  assert.equal(killed.code, 137);
  assert.match(killed.stdout, /^\[0\] share 50$/m);
  for (const args of [['run', '-n', '0', '--', 'true'], ['run', '--share', '0', 'true'], ['run', '-n', '2'], ['run', '--mem-limit', 'lots', 'true'], ['run', '--device', 'tpu', 'true']]) {
    const bad = await cli(t, args, daemon.env);
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
    assert.match(bad.stderr, /^openmps run: .*\nTry 'openmps help run'\.$/m);
  }
});

test('status and top --once show live clients; SIGTERM to run reaches the copies', { timeout: 120_000 }, async (t) => {
  const daemon = await startDaemon(t);
  const run = startCli(t, ['run', '-n', '2', '--', process.execPath, RUN_CLIENT, '--hold', '--launches', '40'], daemon.env);
  const holding = await run.lines(/^\[[01]\] holding pid=\d+$/, 2);
  const pids = holding.map((l) => Number(report(l).pid));

  const status = await cli(t, ['status'], daemon.env);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, new RegExp(`^DAEMON +pid ${daemon.pid}, openmps `, 'm'));
  assert.match(status.stdout, /^SERVERS \(1\)$/m);
  assert.match(status.stdout, /^ *\d+ +\d+ +ACTIVE +sim /m);
  assert.match(status.stdout, /^DEVICES \(1\)$/m);
  assert.match(status.stdout, /^CLIENTS \(2\)$/m);
  for (const pid of pids) assert.match(status.stdout, new RegExp(`^ *${pid} +\\d+ +\\d+ +0 +ACTIVE +\\d+% \\(\\d+\\) .*node`, 'm'));

  const json = await cli(t, ['status', '--json'], daemon.env);
  assert.equal(json.code, 0, json.stderr);
  const state = JSON.parse(json.stdout) as { clients: { pid: number; activeThreadPercentage: number }[] };
  assert.deepEqual(state.clients.map((c) => c.pid).sort(), [...pids].sort());
  assert.deepEqual(state.clients.map((c) => c.activeThreadPercentage), [50, 50], 'auto share of 2 copies, as the server granted it');

  const top = await cli(t, ['top', '--once'], daemon.env);
  assert.equal(top.code, 0, top.stderr);
  const lines = top.stdout.split('\n');
  assert.match(lines[0] ?? '', new RegExp(`^openmps top - \\d\\d:\\d\\d:\\d\\d {2}daemon ${daemon.pid} up \\S+ {2}1 server {2}2 clients`));
  assert.ok(lines.some((l) => /^GPU 0 {2}.*\(sim\) {2}132 SMs/.test(l)), top.stdout);
  assert.ok(lines.some((l) => /^ *PID +USER +DEV +SM% +GPU% +GPU TIME +KERN\/S +MEM +PEAK +ERR +STATE +COMMAND$/.test(l)), top.stdout);
  for (const pid of pids) assert.ok(lines.some((l) => new RegExp(`^ *${pid} +\\S+ +0 +\\d+ `).test(l)), `${pid} in:\n${top.stdout}`);
  assert.ok(lines.every((l) => l.length <= 120), 'not a terminal: 120 columns');

  // SIGTERM to run goes to both copies, which leave cleanly (status 0) and flush their last line.
  run.child.kill('SIGTERM');
  const r = await run.done;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\[0\] bye$/m);
  assert.match(r.stdout, /^\[1\] bye$/m);
  await waitUntil(() => pids.every((p) => !alive(p)), 'the copies to exit');
});

test('status and top without a daemon say so and exit 1', async (t) => {
  const pipe = join(freshRoot(t), 'pipe');
  for (const args of [['status'], ['status', '--json'], ['top', '--once']]) {
    const r = await cli(t, args, { OPENMPS_PIPE_DIRECTORY: pipe });
    assert.equal(r.code, 1, args.join(' '));
    assert.equal(r.stderr, `openmps ${args[0] ?? ''}: Cannot find openmps control daemon process in ${pipe}\n`);
    assert.equal(r.stdout, '');
  }
});

test('a daemon that refuses state or answers garbage is a clear error, exit 1', async (t) => {
  const pipe = freshRoot(t);
  let reply = { output: 'Unknown command "state"', ok: false };
  const server = createServer((socket) => {
    new FramedSocket(socket).onRequest(() => reply);
  });
  t.after(() => {
    server.close();
  });
  await new Promise<void>((resolve) => server.listen(join(pipe, 'control'), resolve));
  const refused = await cli(t, ['status'], { OPENMPS_PIPE_DIRECTORY: pipe });
  assert.equal(refused.code, 1);
  assert.equal(refused.stderr, `openmps status: state reply: refused by the control daemon in ${pipe}: Unknown command "state"\n`);
  reply = { output: '{"version":1,"time":"soon"}', ok: true };
  const garbled = await cli(t, ['top', '--once'], { OPENMPS_PIPE_DIRECTORY: pipe });
  assert.equal(garbled.code, 1);
  assert.equal(garbled.stderr, 'openmps top: state reply: time is not a number\n');
});

test('help, version, and unknown commands or options', async (t) => {
  const help = await cli(t, ['help']);
  assert.equal(help.code, 0);
  for (const c of ['status', 'top', 'run', 'bench', 'demo', 'help', 'version']) assert.match(help.stdout, new RegExp(`^ {2}${c} +\\S`, 'm'));
  await Promise.all(
    ['status', 'top', 'run', 'bench', 'demo'].map(async (c) => {
      const [a, b] = await Promise.all([cli(t, ['help', c]), cli(t, [c, '--help'])]);
      assert.equal(a.code, 0);
      assert.equal(b.code, 0);
      assert.match(a.stdout, new RegExp(`^Usage: openmps ${c}`));
      assert.match(a.stdout, /Exit status:/);
      assert.equal(a.stdout, b.stdout);
    }),
  );
  const version = await cli(t, ['version']);
  assert.match(version.stdout, /^openmps \d+\.\d+\.\d+\n$/);
  const unknown = await cli(t, ['frobnicate']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^openmps: unknown command "frobnicate"\nUsage: openmps <command>/);
  const badOption = await cli(t, ['status', '--frob']);
  assert.equal(badOption.code, 2);
  assert.match(badOption.stderr, /^openmps status: Unknown option '--frob'.*\nTry 'openmps help status'\.\n$/s);
  const badInterval = await cli(t, ['top', '--interval', '0']);
  assert.equal(badInterval.code, 2);
  // A --help after the command belongs to the command.
  const passThrough = await cli(t, ['run', '--', 'sh', '-c', 'echo "$1"', 'sh', '--help'], { OPENMPS_PIPE_DIRECTORY: join(freshRoot(t), 'pipe'), OPENMPS_DEVICE: 'sim' });
  assert.equal(passThrough.code, 0, passThrough.stderr);
  assert.equal(passThrough.stdout, '[0] --help\n');
});

test('bench wraps the suite: results on stdout, a progress line per step, its exit status', { timeout: 60_000 }, async (t) => {
  const out = join(freshRoot(t), 'results');
  const r = await cli(t, ['bench', '--device', 'sim', '--quick', '--bench', 'latency', '--modes', 'openmps', '--out', out], { OPENMPS_DEVICE: 'sim' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^BENCH \{"bench":"latency","mode":"openmps"/m);
  assert.match(r.stderr, /^bench \[ +\] 0\/1 {2}\S+ {2}openmps: latency/m, 'the bar at the first step');
  assert.match(r.stderr, /^bench \[\|+\] 1\/1 {2}\S+ {2}done$/m, 'the bar full at the end');
  assert.match(r.stderr, /^\[bench [0-9:.]+\] done in /m, 'the suite\'s own summary passes through');
  assert.ok(existsSync(join(out, 'results.json')));
  const bad = await cli(t, ['bench', '--device', 'tpu']);
  assert.equal(bad.code, 2, 'the suite\'s own usage status');
});
