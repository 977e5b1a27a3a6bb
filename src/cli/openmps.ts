#!/usr/bin/env node
// `openmps`: the user's command, one subcommand per file under src/cli/commands/: status and top
// render the daemon's `state` (src/cli/status-view.ts, src/cli/top-view.ts), run starts N copies
// of a program as clients, exec one unmodified CUDA program through openmps's libcuda, bench wraps the benchmark suite, demo is the quick start,
// device-plugin is the Kubernetes device plugin (src/k8s/). This file
// only dispatches, prints help, and turns errors into exit statuses (docs/openmps.md):
//   0 ok; 1 failure (no daemon, a refused or malformed reply); 2 bad usage; run: its copies' worst;
//   exec: its command's.
import { benchCommand } from './commands/bench.js';
import { demoCommand } from './commands/demo.js';
import { devicePluginCommand } from './commands/device-plugin.js';
import { execCommand } from './commands/exec.js';
import { runCommand } from './commands/run.js';
import { statusCommand } from './commands/status.js';
import { topCommand } from './commands/top.js';
import { CommandError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, packageVersion, UsageError, type Command } from './common.js';
import { splitCommand } from './run-options.js';

const COMMANDS: readonly Command[] = [statusCommand, topCommand, runCommand, execCommand, benchCommand, demoCommand, devicePluginCommand];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length), 'version'.length);
  return [
    'Usage: openmps <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    `  ${'help'.padEnd(width)}  this text, or a command's: openmps help <command> (or openmps <command> --help)`,
    `  ${'version'.padEnd(width)}  print the version`,
    '',
    'The daemon is looked for in $OPENMPS_PIPE_DIRECTORY (default /tmp/openmps). docs/openmps.md has the details.',
  ].join('\n');
}

function find(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** `--help` or `-h` among a command's own options (run's and exec's command may take a --help of its own). */
function asksForHelp(command: Command, argv: readonly string[]): boolean {
  const own = command.name === 'run' || command.name === 'exec' ? splitCommand(argv).options : argv.slice(0, argv.includes('--') ? argv.indexOf('--') : argv.length);
  return own.includes('--help') || own.includes('-h');
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  switch (name) {
    case undefined:
    case 'help':
    case '--help':
    case '-h': {
      const topic = rest[0];
      if (topic === undefined) {
        process.stdout.write(`${usage()}\n`);
        return EXIT_OK;
      }
      const command = find(topic);
      if (command === undefined) {
        process.stderr.write(`openmps help: unknown command "${topic}"\n${usage()}\n`);
        return EXIT_USAGE;
      }
      process.stdout.write(`${command.help}\n`);
      return EXIT_OK;
    }
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`openmps ${packageVersion()}\n`);
      return EXIT_OK;
    default: {
      const command = find(name);
      if (command === undefined) {
        process.stderr.write(`openmps: unknown command "${name}"\n${usage()}\n`);
        return EXIT_USAGE;
      }
      if (asksForHelp(command, rest)) {
        process.stdout.write(`${command.help}\n`);
        return EXIT_OK;
      }
      try {
        return await command.run(rest);
      } catch (err) {
        if (err instanceof UsageError) {
          process.stderr.write(`openmps ${command.name}: ${err.message}\nTry 'openmps help ${command.name}'.\n`);
          return EXIT_USAGE;
        }
        if (err instanceof CommandError) {
          process.stderr.write(`openmps ${command.name}: ${err.message}\n`);
          return EXIT_FAILURE;
        }
        throw err;
      }
    }
  }
}

/**
 * Exits once stdout and stderr have flushed: a pipe may still hold queued output, which a bare
 * process.exit() would cut off, and exiting explicitly does not wait on anything a command left
 * referenced (a child's stream, a socket being closed).
 */
function exit(code: number): void {
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

main(process.argv.slice(2)).then(exit, (err: unknown) => {
  process.stderr.write(`openmps: ${err instanceof Error ? err.message : String(err)}\n`);
  exit(EXIT_FAILURE);
});
