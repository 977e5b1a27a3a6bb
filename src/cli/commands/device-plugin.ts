// `openmps device-plugin [--config <file>] [--check]`: the Kubernetes device plugin
// (src/k8s/plugin.ts, docs/kubernetes.md). It runs in the foreground until SIGTERM or SIGINT,
// logging to stderr; SIGHUP makes it read the daemon and PodResources at once. --check reads and
// checks the config, prints it resolved, and exits.
import { existsSync } from 'node:fs';
import { ConfigError, DEFAULT_CONFIG, loadConfig, type PluginConfig } from '../../k8s/config.js';
import { DevicePlugin } from '../../k8s/plugin.js';
import { CommandError, EXIT_OK, parseOptions, type Command } from '../common.js';

/** Where the DaemonSet's ConfigMap is mounted; read when it exists and no --config is given. */
export const DEFAULT_CONFIG_PATH = '/etc/openmps/device-plugin.json';

function log(line: string): void {
  process.stderr.write(`[${new Date().toISOString()} device-plugin ${process.pid}] ${line}\n`);
}

function resolvedConfig(path: string | undefined): PluginConfig {
  const file = path ?? (existsSync(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : undefined);
  if (file === undefined) return DEFAULT_CONFIG;
  try {
    return loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) throw new CommandError(`invalid configuration: ${err.message}`);
    throw err;
  }
}

async function devicePlugin(argv: readonly string[]): Promise<number> {
  const { values } = parseOptions({
    args: [...argv],
    options: { config: { type: 'string' }, check: { type: 'boolean', default: false } },
    strict: true,
    allowPositionals: false,
  });
  const config = resolvedConfig(values.config);
  if (values.check) {
    process.stdout.write(`${JSON.stringify(config, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v), 2)}\n`);
    return EXIT_OK;
  }
  const plugin = new DevicePlugin({ config, log });
  let stopping: ((signal: NodeJS.Signals) => void) | undefined;
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    stopping = resolve;
  });
  const onStop = (signal: NodeJS.Signals): void => stopping?.(signal);
  const onHangup = (): void => {
    void plugin.refresh();
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHangup);
  try {
    const started = plugin.start().then(() => undefined);
    const first = await Promise.race([started, stopped]);
    if (first === undefined) log(`serving ${plugin.socketPath}`);
    const signal = first ?? (await stopped);
    log(`${signal}: stopping`);
    await plugin.stop();
    return EXIT_OK;
  } catch (err) {
    await plugin.stop();
    throw new CommandError(err instanceof Error ? err.message : String(err));
  } finally {
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
    process.off('SIGHUP', onHangup);
  }
}

export const devicePluginCommand: Command = {
  name: 'device-plugin',
  summary: 'the Kubernetes device plugin: pods ask for openmps.io/gpu-share units and become clients',
  help: `Usage: openmps device-plugin [--config <file>] [--check]

Serves the kubelet's device plugin API (v1beta1) on <devicePluginDirectory>/<endpoint> and
registers the resource (default openmps.io/gpu-share) with the kubelet. Each GPU the control
daemon in <pipeDirectory> sees is offered as unitsPerGpu units; a container given N units of one
GPU gets N x 100/unitsPerGpu % of its SMs and N x its memory / unitsPerGpu, the pipe directory and
openmps's libcuda.so.1 mounted, and LD_LIBRARY_PATH set, so its unmodified programs become
clients with that share. A GPU in FAULT, or whose servers keep dying, is reported Unhealthy until
it recovers. With podResourcesSocket set, the daemon's ps, state and /metrics name each client's
pod, namespace and container. A kubelet restart is noticed and the plugin registers again.

  --config <file>   the JSON config (docs/kubernetes.md; deploy/device-plugin.schema.json);
                    default ${DEFAULT_CONFIG_PATH} when it exists, else the defaults
  --check           check the config, print it with the defaults filled in, and exit

Runs until SIGTERM or SIGINT; SIGHUP re-reads the daemon's state and PodResources at once.

Exit status: 0 when stopped by a signal or after --check; 1 for an invalid config or what the
plugin cannot get past (libcuda.so.1 missing, a configured GPU the daemon does not have, the
socket in use by another plugin); 2 for bad arguments.`,
  run: devicePlugin,
};
