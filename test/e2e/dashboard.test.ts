// The dashboard in a real browser: Debian's chromium driven by playwright-core (no browser is ever
// downloaded), against a daemon on the software GPU with clients doing GPU work. The page must
// list the clients by pid, draw their SM lanes, and keep adding points to its charts.
//
// Without /usr/bin/chromium the test is skipped, except under CI (env CI), where .ci/run installs
// it and its absence is a failure. playwright-core is a development dependency, imported when the
// test runs: the GPU machine gets production dependencies only, and has no browser either. OPENMPS_SCREENSHOT=<path> saves a 1280x800 screenshot once
// the charts hold OPENMPS_SCREENSHOT_POINTS points (default 5): how docs/dashboard.png is made.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { startHttpDaemon } from '../support/http-daemon.js';
import { startWorker, type Worker } from '../support/worker.js';

const CHROMIUM = '/usr/bin/chromium';
// Offline and quiet: no first-run, no updates, no sync, nothing fetched but the page.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function skipReason(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  if (process.env.CI !== undefined && process.env.CI !== '') return undefined;
  return `${CHROMIUM} is missing (apt-get install -y chromium); CI installs it`;
}

const skip = skipReason();

test('the dashboard lists live clients by pid and its charts keep growing', { skip: skip ?? false }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: under CI the browser test must run (.ci/run installs chromium)`);
  const { chromium } = await import('playwright-core');
  // The browser starts while the daemon and its clients do: each takes a second or so.
  const launching = chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  t.after(async () => { await (await launching).close(); });
  const { daemon, url } = await startHttpDaemon(t);
  // Three clients with different shares and memory, so lanes, lines and rows differ.
  const workers: Worker[] = [
    startWorker(t, daemon.env, ['hold', String(48 << 20)]),
    startWorker(t, { ...daemon.env, OPENMPS_ACTIVE_THREAD_PERCENTAGE: '25' }, ['hold', String(16 << 20)]),
    startWorker(t, { ...daemon.env, OPENMPS_ACTIVE_THREAD_PERCENTAGE: '50', OPENMPS_PINNED_DEVICE_MEM_LIMIT: '0=256M' }, ['hold', String(96 << 20)]),
  ];
  const screenshot = process.env.OPENMPS_SCREENSHOT;
  if (screenshot !== undefined && screenshot !== '') {
    workers.push(startWorker(t, { ...daemon.env, OPENMPS_ACTIVE_THREAD_PERCENTAGE: '25' }, ['hold', String(32 << 20)]));
  }
  const browser = await launching;
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  // Nothing outside the daemon may be asked for: the page works offline.
  const foreign: string[] = [];
  await page.route('**/*', (route) => {
    const requested = route.request().url();
    if (requested.startsWith(url)) return route.continue();
    foreign.push(requested);
    return route.abort();
  });
  await Promise.all(workers.map((w) => w.waitFor('holding')));
  await page.goto(url);

  for (const w of workers) await page.locator(`#clients tr[data-client-pid="${w.pid}"]`).waitFor();
  for (const w of workers) await page.locator(`#sm-map [data-sm-client-pid="${w.pid}"]`).waitFor();
  assert.equal(await page.locator('#status').getAttribute('data-status'), 'ok');
  // The 25% client is confined to some SM groups; the unrestricted one has the whole lane.
  const restricted = workers[1];
  assert.ok(restricted);
  assert.ok((await page.locator(`#sm-map [data-sm-client-pid="${restricted.pid}"] rect[data-sm-group]`).count()) > 0);
  assert.match((await page.locator(`#clients tr[data-client-pid="${workers[2]?.pid ?? 0}"]`).textContent()) ?? '', /256 MiB/);

  // The charts append a point per sample: wait for each to have grown past what it had.
  const charts = ['gpu-share', 'memory', 'kernels', 'device-gpu'];
  const points = async (id: string): Promise<number> => Number((await page.locator(`#chart-${id}`).getAttribute('data-points')) ?? 0);
  const before = await Promise.all(charts.map(points));
  for (const [i, id] of charts.entries()) {
    await page.waitForFunction(`Number(document.querySelector('#chart-${id}')?.dataset.points ?? 0) > ${before[i] ?? 0}`, undefined, { timeout: 10_000 });
  }
  // Every live client has a series in the per-client charts.
  for (const w of workers) {
    const row = page.locator(`#clients tr[data-client-pid="${w.pid}"]`);
    const key = await row.getAttribute('data-client-key');
    assert.ok(key !== null);
    assert.equal(await page.locator(`#chart-gpu-share [data-series-key="${key}"]`).count(), 1);
  }
  // GPU work was seen: some client's GPU time per second rose above zero in the stacked chart.
  await page.waitForFunction(`[...document.querySelectorAll('#clients tr[data-client-pid]')].some((r) => !/^0 ms$/.test(r.children[10]?.textContent ?? ''))`, undefined, { timeout: 10_000 });

  if (screenshot !== undefined && screenshot !== '') {
    const wanted = Number(process.env.OPENMPS_SCREENSHOT_POINTS ?? 5);
    await page.waitForFunction(`Number(document.querySelector('#chart-gpu-share')?.dataset.points ?? 0) >= ${wanted}`, undefined, { timeout: (wanted + 30) * 1000 });
    await page.screenshot({ path: screenshot });
  }
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(foreign, []);
  // Stopped here rather than after the daemon's quit: a quit with busy clients takes longer.
  for (const w of workers) w.child.kill('SIGKILL');
  await Promise.all(workers.map((w) => w.exited));
});
