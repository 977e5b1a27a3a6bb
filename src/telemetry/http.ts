// The daemon's HTTP face (`openmps-control --http <host:port>`): Prometheus metrics, the state
// snapshot as JSON, and the dashboard. Read-only by design: every route is GET or HEAD, nothing
// here can change the daemon, so it needs no authentication beyond the address it listens on
// (127.0.0.1 unless the operator says otherwise). docs/telemetry.md describes the routes.
//
//   GET /metrics            Prometheus text (src/telemetry/metrics.ts)
//   GET /api/state          the StateSnapshot with history; ?history=0 without
//   GET / and /<asset>      the dashboard (dist/dashboard/: index.html, style.css, *.js)
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MetricsExporter } from './metrics.js';
import type { StateSnapshot } from './state.js';

/** What the server reads from: the ControlDaemon in the daemon, a stand-in in tests. */
export interface StateSource {
  state(options: { history: boolean }): Promise<StateSnapshot>;
}

export interface HttpAddress {
  readonly host: string;
  readonly port: number;
}

export interface HttpHandle {
  /** `http://127.0.0.1:9400`, with the port actually bound (port 0 picks one). */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export const DEFAULT_HTTP_HOST = '127.0.0.1';

/** A bad `--http` value; `code` is permanent, the message says what was expected. */
export class HttpAddressError extends Error {
  override readonly name = 'HttpAddressError';
  readonly code = 'INVALID_HTTP_ADDRESS';
}

/** A port that cannot be bound (in use, not permitted, no such address). */
export class HttpListenError extends Error {
  override readonly name = 'HttpListenError';
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

function parsePort(text: string, whole: string): number {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) {
    throw new HttpAddressError(`invalid HTTP address "${whole}": the port must be a number from 0 to 65535`);
  }
  return Number(text);
}

/**
 * Parses a `--http` value: `host:port`, `:port` or `port` (host 127.0.0.1), `[ipv6]:port`. A bare
 * IPv6 address without brackets is refused: its last group could be read as the port.
 */
export function parseHttpAddress(text: string): HttpAddress {
  const expected = 'expected host:port, :port, port or [ipv6]:port';
  const value = text.trim();
  if (value === '') throw new HttpAddressError(`invalid HTTP address "${text}": ${expected}`);
  if (value.startsWith('[')) {
    const m = /^\[([^\]]+)\]:([^:]*)$/.exec(value);
    if (!m) throw new HttpAddressError(`invalid HTTP address "${text}": ${expected}`);
    const host = m[1] ?? '';
    if (!isIPv6(host)) throw new HttpAddressError(`invalid HTTP address "${text}": "${host}" is not an IPv6 address`);
    return { host, port: parsePort(m[2] ?? '', text) };
  }
  const colon = value.lastIndexOf(':');
  if (colon === -1) return { host: DEFAULT_HTTP_HOST, port: parsePort(value, text) };
  const host = value.slice(0, colon);
  if (host.includes(':')) throw new HttpAddressError(`invalid HTTP address "${text}": write an IPv6 address in brackets, [${host}]:port`);
  // Host names and IPv4 addresses; anything else (spaces, slashes, a scheme) is a typo.
  if (host !== '' && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
    throw new HttpAddressError(`invalid HTTP address "${text}": "${host}" is not a host name or address`);
  }
  return { host: host === '' ? DEFAULT_HTTP_HOST : host, port: parsePort(value.slice(colon + 1), text) };
}

/** The inverse of parseHttpAddress, for passing an address on a command line or printing it. */
export function formatHttpAddress(address: HttpAddress): string {
  return isIPv6(address.host) ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * The dashboard's files: dist/dashboard/ next to dist/src/, in the repository and in an installed
 * package alike (the build copies index.html and style.css beside the compiled scripts).
 */
export const DASHBOARD_DIRECTORY = fileURLToPath(new URL('../../dashboard/', import.meta.url));

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
};

// Only plain file names in the dashboard directory are served: no slashes, no dot-dot, no hidden
// files, so no request can reach anything else on the machine.
const ASSET_NAME = /^[a-z0-9][a-z0-9._-]*\.(html|css|js|map|svg)$/;

/** Whether `host` (an address or name, IPv6 without brackets) is this machine's loopback. */
function isLoopbackName(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(h);
}

/** The host name of a Host header (`127.0.0.1:9400`, `[::1]:9400`, `localhost`). */
function hostOfHeader(header: string): string {
  if (header.startsWith('[')) return header.slice(1, Math.max(1, header.indexOf(']')));
  const colon = header.lastIndexOf(':');
  return colon === -1 ? header : header.slice(0, colon);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

class TelemetryServer {
  readonly #source: StateSource;
  readonly #log: ((line: string) => void) | undefined;
  readonly #metrics = new MetricsExporter();
  readonly #dashboardDirectory: string;
  /** Listening on loopback: requests must name a loopback host too (see handle). */
  readonly #loopback: boolean;

  constructor(source: StateSource, log: ((line: string) => void) | undefined, dashboardDirectory: string, loopback: boolean) {
    this.#source = source;
    this.#log = log;
    this.#dashboardDirectory = dashboardDirectory;
    this.#loopback = loopback;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      this.#json(res, 405, { error: `method ${method} not allowed: this server is read-only (GET, HEAD)` });
      return;
    }
    // DNS rebinding: a web page the operator opens can point its own name at 127.0.0.1 and read
    // /api/state (every client's command line) through the browser. Its requests carry its own
    // name in Host; a daemon listening on loopback answers only loopback names.
    const hostHeader = req.headers.host;
    if (this.#loopback && hostHeader !== undefined && !isLoopbackName(hostOfHeader(hostHeader))) {
      this.#json(res, 421, { error: `host "${hostHeader}" is not this loopback address: use localhost, 127.0.0.1 or [::1]` });
      return;
    }
    // Only path and query matter from here on.
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    if (path === '/metrics') {
      await this.#withState(res, false, async (snapshot) => {
        const text = await this.#metrics.render(snapshot);
        this.#send(res, 200, this.#metrics.contentType, text);
      });
      return;
    }
    if (path === '/api/state') {
      const history = url.searchParams.get('history') !== '0';
      await this.#withState(res, history, (snapshot) => {
        this.#json(res, 200, snapshot);
        return Promise.resolve();
      });
      return;
    }
    const name = path === '/' ? 'index.html' : path.slice(1);
    if (ASSET_NAME.test(name)) {
      const body = await readFile(`${this.#dashboardDirectory}${name}`).catch(() => undefined);
      if (body !== undefined) {
        this.#send(res, 200, CONTENT_TYPES[extname(name)] ?? 'application/octet-stream', body);
        return;
      }
      if (name === 'index.html') {
        this.#json(res, 404, { error: `the dashboard is not built: no ${this.#dashboardDirectory}index.html (npm run build)` });
        return;
      }
    }
    this.#json(res, 404, { error: `no such route: ${path} (try /, /metrics, /api/state)` });
  }

  /** Runs `then` with a fresh snapshot; a source that fails gives 503, not a dead daemon. */
  async #withState(res: ServerResponse, history: boolean, then: (s: StateSnapshot) => Promise<void>): Promise<void> {
    let snapshot: StateSnapshot;
    try {
      snapshot = await this.#source.state({ history });
    } catch (err) {
      this.#log?.(`HTTP: state unavailable: ${errorMessage(err)}`);
      this.#json(res, 503, { error: `state unavailable: ${errorMessage(err)}` });
      return;
    }
    await then(snapshot);
  }

  #json(res: ServerResponse, status: number, value: unknown): void {
    this.#send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
  }

  #send(res: ServerResponse, status: number, contentType: string, body: string | Buffer): void {
    res.statusCode = status;
    res.setHeader('Content-Type', contentType);
    // Every answer describes this moment (the dashboard's assets change with each build too).
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    // HEAD: the same headers, no body (node:http drops a body on HEAD anyway; this says so).
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }
}

export interface HttpServerOptions {
  /** Where the dashboard's files are (tests point elsewhere); DASHBOARD_DIRECTORY by default. */
  readonly dashboardDirectory?: string;
}

/**
 * Listens on `address` and serves /metrics, /api/state and the dashboard from `source`. Resolves
 * once the port is bound; rejects with an HttpListenError (EADDRINUSE, EACCES...) when it cannot be.
 */
export async function startHttpServer(source: StateSource, address: HttpAddress, log?: (line: string) => void, options: HttpServerOptions = {}): Promise<HttpHandle> {
  const directory = options.dashboardDirectory ?? DASHBOARD_DIRECTORY;
  const host = address.host === '' ? DEFAULT_HTTP_HOST : address.host;
  const app = new TelemetryServer(source, log, directory.endsWith('/') ? directory : `${directory}/`, isLoopbackName(host));
  const server = createServer((req, res) => {
    app.handle(req, res).catch((err: unknown) => {
      // A bug in a handler must cost one request, never the daemon.
      log?.(`HTTP: ${req.method ?? '?'} ${req.url ?? '?'} failed: ${errorMessage(err)}`);
      if (!res.headersSent) {
        res.statusCode = 500;
        res.setHeader('Content-Type', 'application/json; charset=utf-8');
        res.end(JSON.stringify({ error: errorMessage(err) }));
      } else {
        res.destroy();
      }
    });
  });
  // Requests are small and answered at once; a client that stalls is not worth a socket.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const code = err.code ?? 'UNKNOWN';
      const why = code === 'EADDRINUSE' ? 'address already in use' : code === 'EACCES' ? 'permission denied' : code === 'EADDRNOTAVAIL' ? 'no such local address' : err.message;
      reject(new HttpListenError(code, `cannot serve HTTP on ${formatHttpAddress({ host, port: address.port })}: ${why} (${code})`));
    };
    server.once('error', onError);
    server.listen({ host, port: address.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => {
    log?.(`HTTP: server error: ${err.message}`);
  });
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port;
  const url = `http://${formatHttpAddress({ host, port })}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        // Keep-alive connections (a browser polling) would hold close() open forever.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
