// The openmps dashboard: polls api/state once a second and redraws. The first request asks for the
// history (the daemon keeps five minutes of samples) to fill the charts at once; later ones ask
// without it and append one point per new sample, so a poll costs a few kilobytes however long
// the page stays open. After a gap (a sleeping tab, a lost daemon) the history is asked again.
import { binaryStep, drawChart, type ChartSeries } from './chart.js';
import { byId, el } from './dom.js';
import { formatBytes, formatClock, formatCount, formatDuration, formatPercent, parseBytes } from './format.js';
import { drawSmMap } from './sm-map.js';
import { asStateView, clientKey, deviceKey, type ClientPoint, type DevicePoint, type HistoryPointView, type StateView } from './snapshot.js';

const POLL_MS = 1000;
/** As many points as the daemon keeps (sampler WINDOW). */
const MAX_POINTS = 300;
const MIN_WINDOW_MS = 60_000;
const MAX_WINDOW_MS = 300_000;
/** More time than this since the last point: ask for the history again instead of leaving a hole. */
const GAP_MS = 5 * POLL_MS;
const MAX_LEGEND = 8;

// Distinguishable on white, none too light to read as a line.
const PALETTE = ['#2f6db5', '#e07b1a', '#2a9d5c', '#c8423b', '#8a5cc2', '#1c9fb0', '#b5830f', '#d0569a', '#5f6f86', '#7a9a1f'] as const;
const DEVICE_PALETTE = ['#1d2330', '#2f6db5', '#c8423b', '#2a9d5c'] as const;

function pointOf(state: StateView): HistoryPointView {
  const devices: Record<string, DevicePoint> = {};
  const clients: Record<string, ClientPoint> = {};
  for (const d of state.devices) devices[deviceKey(d)] = { gpuTimePerSecond: d.gpuTimePerSecond, kernelsPerSecond: d.kernelsPerSecond, memoryUsed: parseBytes(d.memoryUsed) ?? 0 };
  for (const c of state.clients) clients[clientKey(c)] = { gpuShare: c.gpuShare, kernelsPerSecond: c.kernelsPerSecond, memoryInUse: parseBytes(c.memoryInUse) ?? 0 };
  return { time: state.time, devices, clients };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

class Dashboard {
  #history: HistoryPointView[] = [];
  #needHistory = true;
  #latest: StateView | undefined;
  #updates = 0;
  readonly #colors = new Map<string, string>();
  /** Every client seen, so series of clients that have left keep their pid label. */
  readonly #clients = new Map<string, { pid: number; command: string }>();

  start(): void {
    void this.#poll();
    // Charts and the SM map are sized to their boxes.
    window.addEventListener('resize', () => {
      this.#render();
    });
  }

  async #poll(): Promise<void> {
    const started = performance.now();
    try {
      const response = await fetch(this.#needHistory ? 'api/state' : 'api/state?history=0', { cache: 'no-store' });
      const body: unknown = await response.json();
      if (!response.ok) {
        const message = typeof body === 'object' && body !== null && 'error' in body ? String(body.error) : response.statusText;
        throw new Error(`${response.status}: ${message}`);
      }
      this.#ingest(asStateView(body));
      this.#updates++;
      this.#render();
      this.#status(true, `live · ${formatClock(this.#latest?.time ?? Date.now())}`);
    } catch (err) {
      this.#status(false, `no answer from the daemon: ${errorText(err)}`);
    }
    setTimeout(() => void this.#poll(), Math.max(0, POLL_MS - (performance.now() - started)));
  }

  #ingest(state: StateView): void {
    if (state.history) {
      this.#history = state.history.slice(-MAX_POINTS);
      this.#needHistory = false;
      // Clients that left before the page opened are named by the pid their points carry.
      for (const point of this.#history) {
        for (const [key, c] of Object.entries(point.clients)) {
          if (c.pid !== undefined && !this.#clients.has(key)) this.#clients.set(key, { pid: c.pid, command: '' });
        }
      }
    } else {
      const last = this.#history.at(-1);
      if (last && state.time - last.time > GAP_MS) this.#needHistory = true;
      if (!last || state.time > last.time) this.#history.push(pointOf(state));
      if (this.#history.length > MAX_POINTS) this.#history.splice(0, this.#history.length - MAX_POINTS);
    }
    for (const c of state.clients) {
      const key = clientKey(c);
      this.#clients.set(key, { pid: c.pid, command: c.command });
      this.#colorOf(key);
    }
    this.#latest = state;
  }

  #colorOf(key: string): string {
    let color = this.#colors.get(key);
    if (color === undefined) {
      color = PALETTE[this.#colors.size % PALETTE.length] ?? '#000';
      this.#colors.set(key, color);
    }
    return color;
  }

  #clientLabel(key: string): string {
    const known = this.#clients.get(key);
    return known ? `pid ${known.pid}` : `client ${key.slice(key.indexOf('/') + 1)}`;
  }

  #status(ok: boolean, text: string): void {
    const status = byId('status', HTMLElement);
    status.dataset.status = ok ? 'ok' : 'error';
    status.textContent = text;
  }

  #render(): void {
    const state = this.#latest;
    if (!state) return;
    this.#renderHeader(state);
    this.#renderDevices(state);
    drawSmMap(byId('sm-map', HTMLElement), state.devices, state.clients, state.partitions, (key) => this.#colorOf(key));
    this.#renderServers(state);
    this.#renderCharts(state);
    this.#renderClients(state);
    document.body.dataset.updates = String(this.#updates);
  }

  #renderHeader(state: StateView): void {
    const d = state.daemon;
    const parts = [
      `daemon ${d.pid}`,
      `v${d.version}`,
      `device ${d.device}`,
      `up ${formatDuration(state.time - d.startedAt)}`,
      ...(d.multiUser ? ['multi-user'] : []),
      ...(d.staticPartitioning ? ['static partitions'] : []),
      `default share ${d.defaultActiveThreadPercentage}%`,
      `${state.clients.length} client${state.clients.length === 1 ? '' : 's'}`,
    ];
    byId('daemon-info', HTMLElement).textContent = parts.join(' · ');
  }

  #renderDevices(state: StateView): void {
    const cards = state.devices.map((d) => {
      const used = parseBytes(d.memoryUsed) ?? 0;
      const total = parseBytes(d.totalMemory) ?? 0;
      const fraction = total > 0 ? Math.min(1, used / total) : 0;
      const fault = d.fault === ''
        ? el('span', { class: 'badge ok' }, 'no fault')
        : el('span', { class: 'badge bad', 'data-fault': d.fault }, `FAULT ${d.fault}`);
      return el('div', { class: 'device', 'data-device-uuid': d.uuid, 'data-device-key': deviceKey(d) },
        el('div', { class: 'device-title' }, el('strong', {}, `GPU ${d.ordinal}`), ` ${d.name} `, el('span', { class: `badge kind` }, d.kind), ' ', fault),
        el('div', { class: 'muted small', title: d.uuid }, `${d.uuid} · server ${d.serverPid}`),
        el('div', { class: 'kv' },
          el('span', {}, `${d.smCount} SMs`), el('span', { class: 'muted' }, ` (${d.smGroupCount} groups of ${d.smGroupSize})`)),
        el('div', { class: 'meter', title: `${used} of ${total} bytes` }, el('div', { class: 'fill', style: `width:${(fraction * 100).toFixed(1)}%` })),
        el('div', { class: 'kv' }, `memory ${formatBytes(used)} / ${formatBytes(total)}`),
        el('div', { class: 'kv' },
          `${d.clients} client${d.clients === 1 ? '' : 's'} · GPU time ${formatPercent(d.gpuTimePerSecond)}/s · ${formatCount(d.kernelsPerSecond)} kernels/s`));
    });
    byId('devices', HTMLElement).replaceChildren(...(cards.length > 0 ? cards : [el('p', { class: 'muted' }, 'no servers running: a server starts with the first client')]));
  }

  #renderServers(state: StateView): void {
    const rows = state.servers.map((s) =>
      el('tr', { 'data-server-pid': s.pid, 'data-state': s.state },
        el('td', { class: 'num' }, s.pid),
        el('td', { class: 'num' }, s.uid),
        el('td', {}, el('span', { class: `badge state-${s.state.toLowerCase()}` }, s.state)),
        el('td', { class: 'reason', title: s.reason }, s.reason),
        el('td', { title: s.driver }, s.deviceKind === '' ? '–' : s.deviceKind),
        el('td', { class: 'num' }, formatDuration(state.time - s.startedAt))));
    const body = byId('servers-body', HTMLTableSectionElement);
    body.replaceChildren(...(rows.length > 0 ? rows : [el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'none'))]));
  }

  #renderCharts(state: StateView): void {
    const history = this.#history;
    const times = history.map((p) => p.time);
    const span = (times.at(-1) ?? 0) - (times[0] ?? 0);
    const windowMs = Math.min(MAX_WINDOW_MS, Math.max(MIN_WINDOW_MS, span));
    const clientKeys: string[] = [];
    const deviceKeys: string[] = [];
    for (const p of history) {
      for (const k of Object.keys(p.clients)) if (!clientKeys.includes(k)) clientKeys.push(k);
      for (const k of Object.keys(p.devices)) if (!deviceKeys.includes(k)) deviceKeys.push(k);
    }
    const clientSeries = (pick: (p: ClientPoint) => number): ChartSeries[] =>
      clientKeys.map((key) => ({ key, label: this.#clientLabel(key), color: this.#colorOf(key), values: history.map((p) => { const v = p.clients[key]; return v ? pick(v) : undefined; }) }));
    const servers = new Set(state.devices.map((d) => d.serverPid));
    const deviceSeries = deviceKeys.map((key, i): ChartSeries => {
      const [server = '', ordinal = ''] = key.split('/');
      return {
        key,
        label: servers.size > 1 ? `GPU ${ordinal} · server ${server}` : `GPU ${ordinal}`,
        color: DEVICE_PALETTE[i % DEVICE_PALETTE.length] ?? '#000',
        values: history.map((p) => p.devices[key]?.gpuTimePerSecond),
      };
    });
    const charts = [
      { id: 'gpu-share', series: clientSeries((v) => v.gpuShare), stacked: true, format: formatPercent, minMax: 1 },
      { id: 'memory', series: clientSeries((v) => v.memoryInUse), stacked: false, format: formatBytes, minMax: 1024 * 1024, step: binaryStep },
      { id: 'kernels', series: clientSeries((v) => v.kernelsPerSecond), stacked: false, format: (v: number) => `${formatCount(v)}/s`, minMax: 10 },
      { id: 'device-gpu', series: deviceSeries, stacked: false, format: formatPercent, minMax: 1 },
    ] as const;
    const live = new Set(state.clients.map((c) => clientKey(c)));
    for (const chart of charts) {
      drawChart(byId(`chart-${chart.id}`, SVGSVGElement), { times, series: chart.series }, { stacked: chart.stacked, format: chart.format, minMax: chart.minMax, windowMs, ...('step' in chart ? { step: chart.step } : {}) });
      // The legend names the live series first; clients that have left fill what room is left.
      const ordered = [...chart.series].sort((a, b) => Number(live.has(b.key)) - Number(live.has(a.key)));
      const shown = ordered.slice(0, MAX_LEGEND).map((s) =>
        el('span', { class: `legend-item${chart.id !== 'device-gpu' && !live.has(s.key) ? ' gone' : ''}`, 'data-series-key': s.key },
          el('span', { class: 'swatch', style: `background:${s.color}` }), s.label));
      const more = ordered.length > MAX_LEGEND ? [el('span', { class: 'muted' }, `+${ordered.length - MAX_LEGEND}`)] : [];
      byId(`legend-${chart.id}`, HTMLElement).replaceChildren(...shown, ...more);
    }
  }

  #renderClients(state: StateView): void {
    const devices = new Map(state.devices.map((d) => [`${d.serverPid}/${d.ordinal}`, d]));
    const rows = state.clients.map((c) => {
      const key = clientKey(c);
      const device = devices.get(`${c.serverPid}/${c.device}`);
      const limit = parseBytes(c.memoryLimit);
      return el('tr', { 'data-client-pid': c.pid, 'data-client-key': key, 'data-state': c.state },
        el('td', {}, el('span', { class: 'swatch', style: `background:${this.#colorOf(key)}` })),
        el('td', { class: 'num' }, c.pid),
        el('td', { class: 'command', title: c.command }, c.command),
        el('td', { title: c.deviceUuid }, device ? `GPU ${c.device}` : `GPU ${c.device}`, c.priority === 1 ? el('span', { class: 'muted' }, ' · low prio') : null),
        el('td', {}, el('span', { class: `badge state-${c.state.toLowerCase()}` }, c.state)),
        el('td', { class: 'num', title: `active thread percentage ${c.activeThreadPercentage}%` }, `${c.smCount} SMs · ${formatPercent(c.smShare)}`),
        el('td', {}, c.smPartition === '' ? el('span', { class: 'muted' }, '–') : c.smPartition.slice(c.smPartition.lastIndexOf('/'))),
        el('td', { class: 'num' }, formatBytes(parseBytes(c.memoryInUse) ?? 0)),
        el('td', { class: 'num' }, formatBytes(parseBytes(c.memoryPeak) ?? 0)),
        el('td', { class: 'num' }, limit === undefined ? el('span', { class: 'muted' }, 'device') : formatBytes(limit)),
        el('td', { class: 'num' }, formatDuration(c.gpuTimeMs)),
        el('td', { class: 'num' }, formatCount(c.kernels)),
        el('td', { class: 'num' }, `${formatCount(c.kernelsPerSecond)}/s`),
        el('td', { class: `num${c.errors > 0 ? ' bad-text' : ''}` }, c.errors));
    });
    byId('clients-body', HTMLTableSectionElement).replaceChildren(...(rows.length > 0 ? rows : [el('tr', {}, el('td', { colspan: 14, class: 'muted' }, 'no clients connected'))]));
    byId('clients-count', HTMLElement).textContent = String(state.clients.length);
  }
}

new Dashboard().start();
