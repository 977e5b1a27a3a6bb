// The Kubernetes device plugin end to end: a real control daemon on the software GPU (two devices),
// the plugin (src/k8s/plugin.ts), and the kubelet stand-in (test/support/kubelet.ts), which speaks
// the device plugin and PodResources APIs as real gRPC over Unix sockets from the vendored protos.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { connect, openmpsKernelsPtx } from '../../src/index.js';
import { packagedLibraryDirectory } from '../../src/cli/client-library.js';
import { parseConfig } from '../../src/k8s/config.js';
import { DevicePlugin } from '../../src/k8s/plugin.js';
import { allocationId } from '../../src/k8s/units.js';
import { startDaemon, startFakeDaemon, waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { KubeletStandIn, type CallError, type ContainerAllocation } from '../support/kubelet.js';
import { controlCommand } from '../../src/client/control-client.js';

const UNITS = 4;
const GIB = 1024n ** 3n;
const POD_CLIENT = fileURLToPath(new URL('../fixtures/pod-client.js', import.meta.url));
const OPENMPS = fileURLToPath(new URL('../../src/cli/openmps.js', import.meta.url));
const SERVER_MAIN = fileURLToPath(new URL('../../src/cli/openmps-server.js', import.meta.url));

interface Cluster {
  readonly kubelet: KubeletStandIn;
  readonly root: string;
  readonly devicePluginDirectory: string;
  readonly podResourcesSocket: string;
}

async function startKubelet(t: CleanupContext): Promise<Cluster> {
  const root = mkdtempSync(join(tmpdir(), 'openmps-k8s-'));
  const devicePluginDirectory = join(root, 'device-plugins');
  mkdirSync(devicePluginDirectory);
  const podResourcesSocket = join(root, 'pod-resources.sock');
  const kubelet = await KubeletStandIn.start(devicePluginDirectory, podResourcesSocket);
  t.after(async () => {
    await kubelet.stop();
    rmSync(root, { recursive: true, force: true });
  });
  return { kubelet, root, devicePluginDirectory, podResourcesSocket };
}

function pluginConfig(cluster: Cluster, pipeDirectory: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    unitsPerGpu: UNITS,
    pipeDirectory,
    libraryDirectory: packagedLibraryDirectory(new URL('../../src/cli/client-library.js', import.meta.url).href),
    containerLibraryDirectory: '/usr/local/openmps/lib',
    devicePluginDirectory: cluster.devicePluginDirectory,
    podResourcesSocket: cluster.podResourcesSocket,
    pollIntervalMs: 50,
    ...extra,
  };
}

async function startPlugin(t: CleanupContext, cluster: Cluster, pipeDirectory: string, extra: Record<string, unknown> = {}): Promise<DevicePlugin> {
  const plugin = new DevicePlugin({ config: parseConfig(pluginConfig(cluster, pipeDirectory, extra)) });
  t.after(() => plugin.stop());
  await plugin.start();
  return plugin;
}

async function twoGpuDaemon(t: CleanupContext): Promise<DaemonHandle> {
  return startDaemon(t, { env: { OPENMPS_SIM_DEVICES: '2', OPENMPS_SIM_MEMORY: '8G' } });
}

function gpuOf(id: string): string {
  return id.slice(0, id.lastIndexOf('::'));
}

function healthOf(devices: readonly { ID: string; health: string }[], uuid: string): string[] {
  return [...new Set(devices.filter((d) => gpuOf(d.ID) === uuid).map((d) => d.health))];
}

interface PodClient {
  readonly report: Record<string, unknown>;
  readonly pid: number;
  end(): Promise<void>;
}

/**
 * Runs a pod's program with the environment Allocate returned, the pipe directory being the
 * daemon's (no mount namespace here: the host path is the container path).
 */
async function runPodClient(t: CleanupContext, allocation: ContainerAllocation, pipeDirectory: string): Promise<PodClient> {
  const env: Record<string, string> = { ...allocation.envs, OPENMPS_PIPE_DIRECTORY: pipeDirectory };
  delete env.LD_LIBRARY_PATH;
  const child = spawn(process.execPath, [POD_CLIENT], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const report = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (line) => { resolve(JSON.parse(line) as Record<string, unknown>); });
    child.once('close', (code) => { reject(new Error(`pod client exited ${code}: ${stderr}`)); });
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => { resolve(); }));
  return {
    report,
    pid: child.pid ?? 0,
    async end() {
      child.stdin.end();
      await exited;
    },
  };
}

async function state(pipeDirectory: string): Promise<{ clients: { pid: number; allocation: string; pod?: { namespace: string; pod: string; container: string }; deviceUuid: string }[]; devices: { uuid: string; totalMemory: string }[] }> {
  const reply = await controlCommand(pipeDirectory, 'state');
  return JSON.parse(reply.output) as Awaited<ReturnType<typeof state>>;
}

test('device plugin: registers with the kubelet and lists unitsPerGpu healthy IDs per GPU', async (t) => {
  const daemon = await twoGpuDaemon(t);
  const cluster = await startKubelet(t);
  const plugin = await startPlugin(t, cluster, daemon.pipeDirectory);
  const registration = await cluster.kubelet.waitForRegistration(1);
  assert.equal(registration.version, 'v1beta1');
  assert.equal(registration.resource_name, 'openmps.io/gpu-share');
  assert.equal(registration.endpoint, 'openmps.sock');
  assert.equal(registration.options.get_preferred_allocation_available, true);
  assert.deepEqual(cluster.kubelet.pluginOptions, { pre_start_required: false, get_preferred_allocation_available: true });
  const devices = await cluster.kubelet.waitForDevices((d) => d.length > 0);
  assert.equal(plugin.gpus.length, 2);
  assert.equal(devices.length, 2 * UNITS);
  for (const uuid of plugin.gpus) assert.deepEqual(healthOf(devices, uuid), ['Healthy']);
  assert.deepEqual(devices.map((d) => d.ID).sort(), plugin.gpus.flatMap((u) => [0, 1, 2, 3].map((i) => `${u}::${i}`)).sort());
});

test('device plugin: pods of 3, 1 and 4 units get their shares, packed on one GPU each, and run there as clients labelled with their pod', async (t) => {
  const daemon = await twoGpuDaemon(t);
  const cluster = await startKubelet(t);
  const plugin = await startPlugin(t, cluster, daemon.pipeDirectory);
  await cluster.kubelet.waitForRegistration(1);
  const [gpuA, gpuB] = plugin.gpus;
  assert.ok(gpuA !== undefined && gpuB !== undefined);

  const [three] = await cluster.kubelet.admit({ namespace: 'team-a', name: 'infer-0', containers: [{ name: 'main', units: 3 }] });
  const [one] = await cluster.kubelet.admit({ namespace: 'team-b', name: 'batch-7', containers: [{ name: 'worker', units: 1 }] });
  const [four] = await cluster.kubelet.admit({ namespace: 'team-a', name: 'train-1', containers: [{ name: 'trainer', units: 4 }] });
  assert.ok(three && one && four);
  // 8G a GPU, 4 units: 2G a unit.
  assert.equal(three.envs.OPENMPS_ACTIVE_THREAD_PERCENTAGE, '75');
  assert.equal(three.envs.OPENMPS_PINNED_DEVICE_MEM_LIMIT, `${gpuA}=6G`);
  assert.equal(three.envs.CUDA_VISIBLE_DEVICES, gpuA);
  // Best fit: the single unit fills the first GPU, so the 4-unit pod finds the second whole.
  assert.equal(one.envs.OPENMPS_ACTIVE_THREAD_PERCENTAGE, '25');
  assert.equal(one.envs.OPENMPS_PINNED_DEVICE_MEM_LIMIT, `${gpuA}=2G`);
  assert.equal(four.envs.OPENMPS_ACTIVE_THREAD_PERCENTAGE, '100');
  assert.equal(four.envs.OPENMPS_PINNED_DEVICE_MEM_LIMIT, `${gpuB}=8G`);
  assert.equal(four.envs.CUDA_VISIBLE_DEVICES, gpuB);
  for (const a of [three, one, four]) {
    assert.equal(a.envs.OPENMPS_PIPE_DIRECTORY, daemon.pipeDirectory);
    assert.equal(a.envs.LD_LIBRARY_PATH, '/usr/local/openmps/lib');
    assert.match(a.envs.OPENMPS_ALLOCATION_ID ?? '', /^a-[0-9a-f]{24}$/);
    assert.deepEqual(
      a.mounts.map((m) => [m.container_path, m.host_path, m.read_only]),
      [
        [daemon.pipeDirectory, daemon.pipeDirectory, true],
        ['/usr/local/openmps/lib', plugin.config.libraryDirectory, true],
      ],
    );
  }

  // The pods' programs: their limits are the shares, on the GPU of their units.
  const clients = await Promise.all([three, one, four].map((a) => runPodClient(t, a, daemon.pipeDirectory)));
  const [c3, c1, c4] = clients;
  assert.ok(c3 && c1 && c4);
  assert.equal(c3.report.uuid, gpuA);
  assert.equal(c3.report.activeThreadPercentage, 75);
  assert.equal(c3.report.memoryLimit, String(6n * GIB));
  assert.equal(c1.report.uuid, gpuA);
  assert.equal(c1.report.memoryLimit, String(2n * GIB));
  assert.equal(c4.report.uuid, gpuB);
  assert.equal(c4.report.memoryLimit, String(8n * GIB));

  // Per-pod labels: the plugin reads PodResources and tells the daemon.
  const wanted = new Map([
    [c3.pid, { namespace: 'team-a', pod: 'infer-0', container: 'main' }],
    [c1.pid, { namespace: 'team-b', pod: 'batch-7', container: 'worker' }],
    [c4.pid, { namespace: 'team-a', pod: 'train-1', container: 'trainer' }],
  ]);
  await waitUntil(async () => {
    const s = await state(daemon.pipeDirectory);
    return [...wanted].every(([pid, pod]) => JSON.stringify(s.clients.find((c) => c.pid === pid)?.pod) === JSON.stringify(pod));
  }, 'every client to carry its pod labels');
  const s = await state(daemon.pipeDirectory);
  assert.equal(s.clients.find((c) => c.pid === c3.pid)?.allocation, three.envs.OPENMPS_ALLOCATION_ID);
  const ps = (await daemon.command('ps')).stdout.split('\n');
  assert.ok(ps[0]?.trimEnd().endsWith('POD'), ps[0]);
  assert.ok(ps.some((l) => l.startsWith(`${c3.pid} `) && l.trimEnd().endsWith('team-a/infer-0/main') && l.includes(gpuA)));
  assert.ok(ps.some((l) => l.startsWith(`${c4.pid} `) && l.trimEnd().endsWith('team-a/train-1/trainer') && l.includes(gpuB)));

  // A pod that ends loses its label.
  cluster.kubelet.remove('team-b', 'batch-7');
  await waitUntil(async () => (await state(daemon.pipeDirectory)).clients.find((c) => c.pid === c1.pid)?.pod === undefined, 'the ended pod to lose its label');
  for (const c of clients) await c.end();
});

test('device plugin: Allocate refuses units of two GPUs, more units than a GPU has, and IDs it never advertised', async (t) => {
  const daemon = await twoGpuDaemon(t);
  const cluster = await startKubelet(t);
  const plugin = await startPlugin(t, cluster, daemon.pipeDirectory);
  await cluster.kubelet.waitForRegistration(1);
  const [gpuA, gpuB] = plugin.gpus;
  assert.ok(gpuA !== undefined && gpuB !== undefined);
  const refused = async (ids: string[], code: number): Promise<void> => {
    await assert.rejects(cluster.kubelet.allocate(ids), (err: CallError) => {
      assert.equal(err.code, code);
      return true;
    });
  };
  await refused([`${gpuA}::0`, `${gpuA}::1`, `${gpuB}::0`], grpc.status.INVALID_ARGUMENT);
  await refused([...[0, 1, 2, 3].map((i) => `${gpuA}::${i}`), `${gpuB}::0`], grpc.status.RESOURCE_EXHAUSTED);
  await refused([`${gpuA}::4`], grpc.status.INVALID_ARGUMENT);
  await refused(['GPU-00000000-0000-4000-8000-000000000000::0'], grpc.status.INVALID_ARGUMENT);
  await refused([`${gpuA}::1`, `${gpuA}::1`], grpc.status.INVALID_ARGUMENT);
  // A kubelet out of units never reaches the plugin: 8 units admitted, a ninth cannot be.
  await cluster.kubelet.admit({ namespace: 'd', name: 'a', containers: [{ name: 'c', units: 4 }] });
  await cluster.kubelet.admit({ namespace: 'd', name: 'b', containers: [{ name: 'c', units: 4 }] });
  assert.equal(cluster.kubelet.available().length, 0);
  // And the plugin still answers a valid request after refusals.
  const ok = await cluster.kubelet.allocate([`${gpuB}::2`]);
  assert.equal(ok.envs.OPENMPS_ACTIVE_THREAD_PERCENTAGE, '25');
});

test('device plugin: a faulted GPU is Unhealthy in ListAndWatch, the other stays Healthy, and both are Healthy after recovery', async (t) => {
  const daemon = await twoGpuDaemon(t);
  const cluster = await startKubelet(t);
  const plugin = await startPlugin(t, cluster, daemon.pipeDirectory);
  await cluster.kubelet.waitForRegistration(1);
  const [gpuA, gpuB] = plugin.gpus;
  assert.ok(gpuA !== undefined && gpuB !== undefined);
  // This process is the culprit, on device 0.
  const culprit = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => culprit.close());
  assert.equal(culprit.device.uuid, gpuA);
  const fault = await (await culprit.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fault');
  culprit.launch(fault, { grid: 1, block: 1 }, [0x10n]);
  await assert.rejects(culprit.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  const sick = await cluster.kubelet.waitForDevices((d) => healthOf(d, gpuA).join() === 'Unhealthy');
  assert.deepEqual(healthOf(sick, gpuB), ['Healthy']);
  await culprit.close();
  // The faulted client has gone: the device recovers and the plugin says so.
  const well = await cluster.kubelet.waitForDevices((d) => healthOf(d, gpuA).join() === 'Healthy');
  assert.deepEqual(healthOf(well, gpuB), ['Healthy']);
});

test('device plugin: while dead servers make the daemon delay restarts the GPUs are Unhealthy, then Healthy again', async (t) => {
  // An in-process daemon with the real server and a restart delay after the first quick death.
  const daemon = await startFakeDaemon(t, {
    env: { OPENMPS_DEVICE: 'sim' },
    daemon: { serverMain: SERVER_MAIN, restartBackoff: { quickDeathsBeforeDelay: 1, initialDelayMs: 1500, quickDeathMs: 60_000 } },
  });
  const cluster = await startKubelet(t);
  const plugin = await startPlugin(t, cluster, daemon.pipeDirectory);
  await cluster.kubelet.waitForRegistration(1);
  const [gpu] = plugin.gpus;
  assert.ok(gpu !== undefined);
  assert.deepEqual(healthOf(cluster.kubelet.devices, gpu), ['Healthy']);
  const server = daemon.servers.list()[0];
  assert.ok(server, 'device_query started a server');
  process.kill(server.pid, 'SIGKILL');
  await cluster.kubelet.waitForDevices((d) => healthOf(d, gpu).join() === 'Unhealthy');
  await cluster.kubelet.waitForDevices((d) => healthOf(d, gpu).join() === 'Healthy');
});

test('device plugin: a kubelet restart (its sockets removed, a new kubelet.sock) is followed by a new registration, and Allocate works again', async (t) => {
  const daemon = await twoGpuDaemon(t);
  const cluster = await startKubelet(t);
  const plugin = await startPlugin(t, cluster, daemon.pipeDirectory);
  await cluster.kubelet.waitForRegistration(1);
  await cluster.kubelet.restart();
  const again = await cluster.kubelet.waitForRegistration(2);
  assert.equal(again.resource_name, 'openmps.io/gpu-share');
  const devices = await cluster.kubelet.waitForDevices((d) => d.length === 2 * UNITS);
  assert.ok(devices.every((d) => d.health === 'Healthy'));
  const [a] = await cluster.kubelet.admit({ namespace: 'n', name: 'p', containers: [{ name: 'c', units: 2 }] });
  assert.equal(a?.envs.OPENMPS_ACTIVE_THREAD_PERCENTAGE, '50');
  // Twice: the second restart too.
  await cluster.kubelet.restart();
  await cluster.kubelet.waitForRegistration(3);
  assert.ok(plugin.registered);
});

test('openmps device-plugin: the CLI registers from a config file, stops on SIGTERM; --check prints the resolved config; a malformed config exits 1', async (t) => {
  const daemon = await twoGpuDaemon(t);
  const cluster = await startKubelet(t);
  const good = join(cluster.root, 'good.json');
  writeFileSync(good, JSON.stringify(pluginConfig(cluster, daemon.pipeDirectory, { resourceName: 'example.com/gpu', unitsPerGpu: 2 })));
  const child = spawn(process.execPath, [OPENMPS, 'device-plugin', '--config', good], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => { resolve(code); }));
  // A plugin that exits instead of registering fails the test rather than leaving it waiting.
  const registration = await Promise.race([
    cluster.kubelet.waitForRegistration(1),
    exited.then((code) => {
      throw new Error(`openmps device-plugin exited (${code}) before registering: ${stderr}`);
    }),
  ]);
  assert.equal(registration.resource_name, 'example.com/gpu');
  assert.equal((await cluster.kubelet.waitForDevices((d) => d.length > 0)).length, 4);
  child.kill('SIGTERM');
  assert.equal(await exited, 0);

  const checked = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const c = spawn(process.execPath, [OPENMPS, 'device-plugin', '--check', '--config', good], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.once('close', (code) => { resolve({ code, stdout }); });
  });
  assert.equal(checked.code, 0);
  const resolved = JSON.parse(checked.stdout) as Record<string, unknown>;
  assert.equal(resolved.unitsPerGpu, 2);
  assert.equal(resolved.endpoint, 'openmps.sock');

  const bad = join(cluster.root, 'bad.json');
  writeFileSync(bad, JSON.stringify({ unitsPerGpu: 0 }));
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const c = spawn(process.execPath, [OPENMPS, 'device-plugin', '--config', bad], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.once('close', (code) => { resolve({ code, stderr }); });
  });
  assert.equal(result.code, 1, result.stderr);
  // The allocation id the daemon matches is the plugin's digest of the IDs, order aside.
  assert.equal(allocationId(['b', 'a']), allocationId(['a', 'b']));
});
