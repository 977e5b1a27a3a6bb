// `openmps status [--json]`: the daemon, servers, devices and clients in one view, from the
// daemon's `state` command (src/cli/status-view.ts draws it).
import { daemonError, EXIT_OK, parseOptions, pipeDirectory, terminalWidth, type Command } from '../common.js';
import { fetchState } from '../snapshot.js';
import { renderStatus } from '../status-view.js';

async function status(argv: readonly string[]): Promise<number> {
  const { values } = parseOptions({ args: [...argv], options: { json: { type: 'boolean', default: false } }, strict: true, allowPositionals: false });
  const directory = pipeDirectory();
  const reply = await fetchState(directory).catch((err: unknown) => {
    throw daemonError(err, directory);
  });
  // --json prints the daemon's snapshot whole (once checked), indented for people; jq reads it too.
  process.stdout.write(values.json ? `${JSON.stringify(reply.json, null, 2)}\n` : `${renderStatus(reply.view, terminalWidth()).join('\n')}\n`);
  return EXIT_OK;
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'the daemon, its servers, devices and clients in one view',
  help: `Usage: openmps status [--json]

Asks the control daemon in $OPENMPS_PIPE_DIRECTORY (default /tmp/openmps) for its state and
prints one view of it:
  DAEMON   pid, version, uptime, device kind, pipe and log directories, modes
  SERVERS  PID UID STATE DEVICE DRIVER UP REASON
  DEVICES  SERVER DEV NAME KIND SMS MEMORY(used/total) GPU TIME/S KERN/S CLIENTS ERR FAULT
  CLIENTS  PID ID SERVER DEV STATE SM SHARE MEM LIMIT GPU TIME KERNELS ERR COMMAND
Rates (/S) are over the daemon's last sampling interval.

  --json   print the state snapshot as JSON instead (src/telemetry/state.ts)

Exit status: 0; 1 when no daemon answers ("Cannot find openmps control daemon process in <dir>")
or its reply is not a state snapshot; 2 for bad arguments.`,
  run: status,
};
