// Where clients may run: per device, its SM groups left to right (widths in SMs, so a last partial
// group is narrower), a row of static partitions when there are any, and one lane per client
// filled on the groups its work is confined to (the whole lane, lighter, when it may use every SM).
// A share limits, it does not reserve: lanes that overlap on a group share those SMs.
import { el, svg } from './dom.js';
import { formatPercent } from './format.js';
import { clientKey, type ClientView, type DeviceView, type PartitionView } from './snapshot.js';

const LABEL_W = 78;
const SHARE_W = 104;
const ROW_H = 16;
const GAP = 3;
const MAX_LANES = 12;

export function drawSmMap(container: HTMLElement, devices: readonly DeviceView[], clients: readonly ClientView[], partitions: readonly PartitionView[], colorOf: (key: string) => string): void {
  const width = Math.max(240, Math.round(container.getBoundingClientRect().width));
  const blocks = devices.map((device) => {
    const mine = clients.filter((c) => c.serverPid === device.serverPid && c.device === device.ordinal);
    const parts = partitions.filter((p) => p.deviceUuid === device.uuid);
    const lanes = mine.slice(0, MAX_LANES);
    const rows = 1 + (parts.length > 0 ? 1 : 0) + Math.max(1, lanes.length);
    const height = rows * (ROW_H + GAP) + 4;
    const plotW = width - LABEL_W - SHARE_W;
    const size = Math.max(1, device.smGroupSize);
    const groups = Math.max(1, device.smGroupCount || Math.ceil(device.smCount / size));
    const sms = Math.max(1, device.smCount);
    const gx = (g: number): number => LABEL_W + (Math.min(g * size, sms) / sms) * plotW;
    const picture = svg('svg', { class: 'sm-map', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `SM groups of GPU ${device.ordinal}` });
    let row = 0;
    const rowY = (): number => 2 + row * (ROW_H + GAP);

    // Header: the groups, numbered, with faint cells under every lane.
    const header = svg('g', { class: 'sm-header' });
    header.append(svg('text', { x: 0, y: rowY() + 12, class: 'label' }, `${groups} × ${size} SMs`));
    for (let g = 0; g < groups; g++) {
      const x0 = gx(g);
      const x1 = gx(g + 1);
      header.append(svg('rect', { x: x0 + 0.5, y: rowY(), width: Math.max(1, x1 - x0 - 1), height: ROW_H, class: 'cell' }));
      if (x1 - x0 >= 14 || g % 4 === 0) header.append(svg('text', { x: (x0 + x1) / 2, y: rowY() + 12, 'text-anchor': 'middle', class: 'index' }, g));
    }
    picture.append(header);
    row++;

    if (parts.length > 0) {
      const band = svg('g', { class: 'sm-partitions' });
      band.append(svg('text', { x: 0, y: rowY() + 12, class: 'label' }, 'partitions'));
      parts.forEach((p, i) => {
        const name = p.id.slice(p.id.lastIndexOf('/'));
        for (const chunk of p.chunks) {
          band.append(svg('rect', { x: gx(chunk) + 0.5, y: rowY(), width: Math.max(1, gx(chunk + 1) - gx(chunk) - 1), height: ROW_H, class: `partition p${i % 2}`, 'data-partition': p.id, 'data-sm-group': chunk }, svg('title', {}, p.id)));
        }
        const first = Math.min(...p.chunks);
        if (Number.isFinite(first)) band.append(svg('text', { x: gx(first) + 4, y: rowY() + 12, class: 'partition-name' }, name));
      });
      picture.append(band);
      row++;
    }

    if (lanes.length === 0) picture.append(svg('text', { x: LABEL_W, y: rowY() + 12, class: 'label muted' }, 'no clients'));
    for (const c of lanes) {
      const color = colorOf(clientKey(c));
      const lane = svg('g', { 'data-sm-client-pid': c.pid, class: 'lane' });
      lane.append(svg('text', { x: 0, y: rowY() + 12, class: 'label' }, `pid ${c.pid}`));
      if (c.smGroups.length === 0) {
        lane.append(svg('rect', { x: LABEL_W + 0.5, y: rowY() + 2, width: plotW - 1, height: ROW_H - 4, fill: color, class: 'whole' }, svg('title', {}, `pid ${c.pid}: any SM of the device`)));
      } else {
        for (const g of c.smGroups) {
          lane.append(svg('rect', { x: gx(g) + 0.5, y: rowY() + 2, width: Math.max(1, gx(g + 1) - gx(g) - 1), height: ROW_H - 4, fill: color, 'data-sm-group': g }, svg('title', {}, `pid ${c.pid}: SM group ${g}`)));
        }
      }
      const share = `${c.smCount} SMs · ${formatPercent(c.smShare)}`;
      lane.append(svg('text', { x: width - 2, y: rowY() + 12, 'text-anchor': 'end', class: 'label' }, share));
      picture.append(lane);
      row++;
    }
    const title = el('div', { class: 'sm-title' }, `GPU ${device.ordinal}`, el('span', { class: 'muted' }, ` · ${device.smCount} SMs · server ${device.serverPid}`));
    const more = mine.length > lanes.length ? el('div', { class: 'muted small' }, `+${mine.length - lanes.length} more clients`) : null;
    return el('div', { class: 'sm-device', 'data-sm-device': device.uuid }, title, picture, more);
  });
  container.replaceChildren(...(blocks.length > 0 ? blocks : [el('p', { class: 'muted' }, 'no devices yet: a server starts with its first client')]));
}
