// A daemon started with `--http 127.0.0.1:0`, and the URL it chose, read from the line it logs.
import { startDaemon, waitUntil, type CleanupContext, type DaemonHandle, type StartDaemonOptions } from './daemon.js';

export interface HttpDaemon {
  readonly daemon: DaemonHandle;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
}

const SERVING = /HTTP: serving \/metrics, \/api\/state and the dashboard on (http:\/\/[^\s"]+)/;

export async function startHttpDaemon(t: CleanupContext, options: StartDaemonOptions = {}): Promise<HttpDaemon> {
  const daemon = await startDaemon(t, { ...options, args: [...(options.args ?? []), '--http', '127.0.0.1:0'] });
  // -d returns after `ready`, which comes after the line: it is in the log already.
  let url = '';
  await waitUntil(() => {
    for (const line of daemon.controlLog()) url = SERVING.exec(line)?.[1] ?? url;
    return url !== '';
  }, 'the HTTP line in control.log', 2000);
  return { daemon, url };
}

/** GET `url` and the body as text, with the status. */
export async function get(url: string, init: RequestInit = {}): Promise<{ status: number; type: string; text: string }> {
  const res = await fetch(url, init);
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}
