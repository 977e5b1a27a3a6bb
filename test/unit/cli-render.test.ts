// The CLI's pure text rendering: number formats, meters, tables cut to the terminal width.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bar, ELLIPSIS, formatBytes, formatDuration, formatGpuTime, formatPercent, formatRate, printable, table, truncate, type Column } from '../../src/cli/render.js';

test('truncate keeps short text and ends cut text in an ellipsis, never past the width', () => {
  assert.equal(truncate('hello', 10), 'hello');
  assert.equal(truncate('hello', 5), 'hello');
  assert.equal(truncate('hello world', 5), `hell${ELLIPSIS}`);
  assert.equal(truncate('hello', 1), ELLIPSIS);
  assert.equal(truncate('hello', 0), '');
  for (let w = 0; w < 14; w++) assert.ok(truncate('a long command line', w).length <= w);
});

test('printable replaces control characters (newlines, escapes) with ?', () => {
  assert.equal(printable('node "a.js"\nsecond'), 'node "a.js"?second');
  assert.equal(printable('\x1b]0;pwned\x07x'), '?]0;pwned?x');
  assert.equal(printable('tab\there\x7f\x9b'), 'tab?here??');
  assert.equal(printable('ünïcödé ok'), 'ünïcödé ok');
});

test('bytes print in binary units with one decimal below 10', () => {
  assert.equal(formatBytes(0n), '0B');
  assert.equal(formatBytes('1023'), '1023B');
  assert.equal(formatBytes(1024), '1.0K');
  assert.equal(formatBytes(String(Math.round(9.6 * 1024 * 1024))), '9.6M');
  assert.equal(formatBytes(String(523 * 1024 * 1024)), '523M');
  assert.equal(formatBytes(String(16 * 1024 ** 3)), '16G');
  assert.equal(formatBytes(String(1024 ** 3)), '1.0G');
  // 1023.97 K rounds to 1024 K: one unit up instead.
  assert.equal(formatBytes(1024 * 1024 - 30), '1.0M');
  // Past 2^53 from the snapshot's decimal strings.
  assert.equal(formatBytes('18446744073709551615'), '16384P');
  assert.equal(formatBytes(''), '0B');
});

test('GPU time prints as htop TIME+, uptimes as compact durations', () => {
  assert.equal(formatGpuTime(0), '0:00.00');
  assert.equal(formatGpuTime(1500), '0:01.50');
  assert.equal(formatGpuTime(83_456), '1:23.45');
  assert.equal(formatGpuTime(3_723_000), '1:02:03');
  assert.equal(formatDuration(42_900), '42s');
  assert.equal(formatDuration(312_000), '5m12s');
  assert.equal(formatDuration(3 * 3600_000 + 4 * 60_000), '3h04m');
  assert.equal(formatDuration(53 * 3600_000), '2d05h');
  assert.equal(formatDuration(-5), '0s');
});

test('percentages and rates', () => {
  assert.equal(formatPercent(0.045), '4.5');
  assert.equal(formatPercent(32 / 132), '24');
  assert.equal(formatPercent(1), '100');
  assert.equal(formatRate(0), '0');
  assert.equal(formatRate(8.54), '8.5');
  assert.equal(formatRate(950.4), '950');
  assert.equal(formatRate(1234), '1.23k');
  assert.equal(formatRate(12_345), '12.3k');
  assert.equal(formatRate(2_500_000), '2.5M');
});

test('a bar is exactly its width, filled in proportion, clamped, with its label at the right', () => {
  assert.equal(bar(0.5, 12), '[|||||     ]');
  assert.equal(bar(0, 6), '[    ]');
  assert.equal(bar(2, 6), '[||||]');
  assert.equal(bar(-1, 6), '[    ]');
  assert.equal(bar(Number.NaN, 6), '[    ]');
  assert.equal(bar(1, 12, '1.0G'), '[||||||1.0G]');
  assert.equal(bar(0.2, 12, '1.0G'), '[||    1.0G]');
  // A label that does not fit is left out rather than breaking the width.
  assert.equal(bar(0.5, 6, 'too long'), '[||  ]');
  for (const w of [2, 5, 17, 40]) assert.equal(bar(0.3, w, 'x').length, w);
});

interface Row {
  readonly pid: number;
  readonly command: string;
}
const COLUMNS: readonly Column<Row>[] = [
  { header: 'PID', align: 'right', cell: (r) => String(r.pid) },
  { header: 'STATE', align: 'left', cell: () => 'ACTIVE' },
  { header: 'COMMAND', align: 'left', cell: (r) => r.command, flex: true },
];

test('a table aligns columns, gives the rest of the width to the flex column and cuts it', () => {
  const rows = [
    { pid: 7, command: 'node a.js' },
    { pid: 12345, command: 'python train.py --epochs 100 --batch-size 256' },
  ];
  assert.deepEqual(table(COLUMNS, rows, 80), [
    '  PID  STATE   COMMAND',
    '    7  ACTIVE  node a.js',
    '12345  ACTIVE  python train.py --epochs 100 --batch-size 256',
  ]);
  const narrow = table(COLUMNS, rows, 30);
  assert.deepEqual(narrow, ['  PID  STATE   COMMAND', '    7  ACTIVE  node a.js', `12345  ACTIVE  python train.p${ELLIPSIS}`]);
  for (const w of [1, 10, 16, 22, 30, 200]) for (const line of table(COLUMNS, rows, w)) assert.ok(line.length <= w, `${w}: ${line}`);
});

test('table cells come out printable', () => {
  const [, row] = table(COLUMNS, [{ pid: 1, command: 'evil\x1b[2Jcommand\nline' }], 80);
  assert.equal(row, '  1  ACTIVE  evil?[2Jcommand?line');
});
