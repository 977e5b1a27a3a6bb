// The operator command language: one command a line, words split on whitespace, NVIDIA MPS's
// syntax (docs/commands.md). parseCommand is a pure function: it turns a line into a typed command
// or into the error text the operator sees; it never throws and never touches the daemon's state.

export type ControlCommand =
  | { readonly name: 'empty' }
  | { readonly name: 'get_server_list' }
  | { readonly name: 'get_server_status'; readonly pid: number }
  | { readonly name: 'start_server'; readonly uid: number }
  | { readonly name: 'shutdown_server'; readonly pid: number; readonly force: boolean }
  | { readonly name: 'get_client_list'; readonly pid: number }
  | { readonly name: 'get_device_client_list'; readonly pid: number | undefined }
  | { readonly name: 'ps'; readonly pid: number | undefined }
  | { readonly name: 'device_query'; readonly pid: number | undefined; readonly csv: boolean }
  | { readonly name: 'terminate_client'; readonly serverPid: number; readonly clientPid: number }
  | { readonly name: 'get_default_active_thread_percentage' }
  | { readonly name: 'set_default_active_thread_percentage'; readonly percentage: number }
  | { readonly name: 'quit'; readonly timeoutSeconds: number | undefined };

export type CommandName = Exclude<ControlCommand['name'], 'empty'>;

export type ParseResult = { readonly ok: true; readonly command: ControlCommand } | { readonly ok: false; readonly error: string };

/** The syntax of every command, as its usage line prints it. */
export const USAGE: Readonly<Record<CommandName, string>> = {
  get_server_list: 'get_server_list',
  get_server_status: 'get_server_status <PID>',
  start_server: 'start_server -uid <UID>',
  shutdown_server: 'shutdown_server <PID> [-f]',
  get_client_list: 'get_client_list <PID>',
  get_device_client_list: 'get_device_client_list [<PID>]',
  ps: 'ps [-p <PID>]',
  device_query: 'device_query [<PID>] [--csv]',
  terminate_client: 'terminate_client <server PID> <client PID>',
  get_default_active_thread_percentage: 'get_default_active_thread_percentage',
  set_default_active_thread_percentage: 'set_default_active_thread_percentage <percentage>',
  quit: 'quit [-t <seconds>]',
};

function isCommandName(word: string): word is CommandName {
  return Object.hasOwn(USAGE, word);
}

/** Largest pid Linux can hand out (pid_max is at most 2^22), kept generous at int32. */
const MAX_PID = 0x7fffffff;
/** (uid_t)-1 means "no change" to setuid, so the largest usable uid is 2^32 - 2. */
const MAX_UID = 0xfffffffe;

/** Bad arguments; caught in parseCommand and turned into the reply's text. */
class UsageError extends Error {
  readonly problem: string;
  constructor(problem: string) {
    super(problem);
    this.problem = problem;
  }
}

function parsePid(word: string | undefined, what = 'PID'): number {
  if (word === undefined) throw new UsageError(`missing ${what}`);
  if (!/^[0-9]+$/.test(word)) throw new UsageError(`invalid ${what} "${word}": expected a positive integer`);
  const n = Number(word);
  if (n < 1 || n > MAX_PID) throw new UsageError(`invalid ${what} "${word}": out of range`);
  return n;
}

function parseUid(word: string | undefined): number {
  if (word === undefined) throw new UsageError('missing UID');
  if (!/^[0-9]+$/.test(word)) throw new UsageError(`invalid UID "${word}": expected a non-negative integer`);
  const n = Number(word);
  if (n > MAX_UID) throw new UsageError(`invalid UID "${word}": out of range`);
  return n;
}

/** A decimal number, no exponent or sign tricks: what an operator types. */
function parseDecimal(word: string | undefined, what: string): number {
  if (word === undefined) throw new UsageError(`missing ${what}`);
  if (!/^[0-9]+(\.[0-9]+)?$|^\.[0-9]+$/.test(word)) throw new UsageError(`invalid ${what} "${word}": expected a number`);
  return Number(word);
}

function noArguments(args: readonly string[]): void {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
}

function parseArguments(name: CommandName, args: readonly string[]): ControlCommand {
  switch (name) {
    case 'get_server_list':
    case 'get_default_active_thread_percentage':
      noArguments(args);
      return { name };
    case 'get_server_status':
    case 'get_client_list': {
      const pid = parsePid(args[0]);
      noArguments(args.slice(1));
      return { name, pid };
    }
    case 'start_server': {
      if (args[0] !== '-uid') throw new UsageError(args[0] === undefined ? 'missing -uid <UID>' : `unexpected argument "${args[0]}"`);
      const uid = parseUid(args[1]);
      noArguments(args.slice(2));
      return { name, uid };
    }
    case 'shutdown_server': {
      // `-f` may come before or after the pid: operators type both.
      const force = args.includes('-f');
      const rest = args.filter((a) => a !== '-f');
      if (args.filter((a) => a === '-f').length > 1) throw new UsageError('-f given twice');
      const pid = parsePid(rest[0]);
      noArguments(rest.slice(1));
      return { name, pid, force };
    }
    case 'get_device_client_list': {
      const pid = args[0] === undefined ? undefined : parsePid(args[0]);
      noArguments(args.slice(1));
      return { name, pid };
    }
    case 'ps': {
      if (args.length === 0) return { name, pid: undefined };
      if (args[0] !== '-p') throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
      const pid = parsePid(args[1]);
      noArguments(args.slice(2));
      return { name, pid };
    }
    case 'device_query': {
      let csv = false;
      let pid: number | undefined;
      for (const arg of args) {
        if (arg === '--csv') {
          if (csv) throw new UsageError('--csv given twice');
          csv = true;
        } else if (pid === undefined) {
          pid = parsePid(arg);
        } else {
          throw new UsageError(`unexpected argument "${arg}"`);
        }
      }
      return { name, pid, csv };
    }
    case 'terminate_client': {
      const serverPid = parsePid(args[0], 'server PID');
      const clientPid = parsePid(args[1], 'client PID');
      noArguments(args.slice(2));
      return { name, serverPid, clientPid };
    }
    case 'set_default_active_thread_percentage': {
      const percentage = parseDecimal(args[0], 'percentage');
      if (percentage < 1 || percentage > 100) throw new UsageError(`invalid percentage "${args[0] ?? ''}": expected 1 to 100`);
      noArguments(args.slice(1));
      return { name, percentage };
    }
    case 'quit': {
      if (args.length === 0) return { name, timeoutSeconds: undefined };
      if (args[0] !== '-t') throw new UsageError(`unexpected argument "${args[0] ?? ''}"`);
      const timeoutSeconds = parseDecimal(args[1], 'timeout');
      noArguments(args.slice(2));
      return { name, timeoutSeconds };
    }
  }
}

/**
 * One line of the command language. Errors read as MPS's do: `Unknown command "x"` for a word
 * that is no command; for bad arguments, what is wrong and then `Usage: <syntax>` on its own line.
 */
export function parseCommand(line: string): ParseResult {
  const words = line.trim().split(/\s+/).filter((w) => w !== '');
  const [first, ...args] = words;
  if (first === undefined) return { ok: true, command: { name: 'empty' } };
  if (!isCommandName(first)) return { ok: false, error: `Unknown command "${first}"` };
  try {
    return { ok: true, command: parseArguments(first, args) };
  } catch (err) {
    if (err instanceof UsageError) return { ok: false, error: `${first}: ${err.problem}\nUsage: ${USAGE[first]}` };
    throw err;
  }
}
