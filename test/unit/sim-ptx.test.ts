// PTX parsing: the committed kernels/openmps.ptx yields every kernel with the parameter layout the
// driver uses (cuFuncGetParamInfo), and malformed PTX is CUDA_ERROR_INVALID_PTX.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parsePtx, SIM_KERNEL_NAMES } from '../../src/devices/sim/index.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url), 'utf8');

/** [offset, size] of each parameter, as cuFuncGetParamInfo reports them. */
const EXPECTED: Readonly<Record<string, readonly (readonly [number, number])[]>> = {
  noop: [],
  spin: [[0, 8]],
  spin_timed: [[0, 8], [8, 8]],
  work_timed: [[0, 8], [8, 8]],
  fill: [[0, 8], [8, 4], [12, 4]],
  saxpy: [[0, 8], [8, 8], [16, 4], [20, 4]],
  vector_add: [[0, 8], [8, 8], [16, 8], [24, 4]],
  reduce_sum: [[0, 8], [8, 8], [16, 4]],
  matmul: [[0, 8], [8, 8], [16, 8], [24, 4], [28, 4], [32, 4]],
  bias_relu: [[0, 8], [8, 8], [16, 4], [20, 4]],
  fault: [[0, 8]],
};

test('the committed PTX has every kernel with its parameter offsets and sizes', () => {
  const ptx = parsePtx(PTX);
  assert.equal(ptx.version, '9.0');
  assert.equal(ptx.target, 'sm_80');
  assert.deepEqual([...ptx.entries.keys()].sort(), Object.keys(EXPECTED).sort());
  for (const [name, layout] of Object.entries(EXPECTED)) {
    const entry = ptx.entries.get(name);
    assert.ok(entry, name);
    assert.deepEqual(entry.params.map((p) => [p.offset, p.size]), layout, name);
    const last = layout.at(-1);
    assert.equal(entry.paramBytes, last ? last[0] + last[1] : 0, name);
  }
});

test('the software GPU implements exactly the kernels the PTX declares', () => {
  assert.deepEqual([...SIM_KERNEL_NAMES].sort(), [...parsePtx(PTX).entries.keys()].sort());
});

test('parameters are aligned to their own alignment; .align and arrays set size and alignment', () => {
  const ptx = parsePtx(`
    .version 8.0
    .target sm_90
    .address_size 64
    // .entry commented_out(.param .u32 x)
    .visible .entry mixed(
      .param .u8 a,            /* 1 byte at 0 */
      .param .u32 b,
      .param .u16 c,
      .param .align 16 .b8 d[24],
      .param .u64 .ptr .global .align 4 e,
      .param .f64 f
    )
    { ret; }
    .entry bare
    { ret; }
  `);
  const mixed = ptx.entries.get('mixed');
  assert.ok(mixed);
  assert.deepEqual(
    mixed.params.map((p) => [p.name, p.offset, p.size, p.align]),
    [['a', 0, 1, 1], ['b', 4, 4, 4], ['c', 8, 2, 2], ['d', 16, 24, 16], ['e', 40, 8, 8], ['f', 48, 8, 8]],
  );
  assert.equal(mixed.paramBytes, 56);
  assert.equal(ptx.entries.get('bare')?.paramBytes, 0);
  assert.equal(ptx.entries.has('commented_out'), false);
});

test('malformed PTX is CUDA_ERROR_INVALID_PTX', () => {
  const bad = [
    '',
    '.target sm_80\n.visible .entry k()\n{ ret; }', // no .version
    '.version 9.0\n.target sm_80\n', // no entries
    '.version 9.0\n.visible .entry k(\n.param .u32 a\n', // unterminated list
    '.version 9.0\n.visible .entry k(.param .q32 a)\n{}', // unknown type
    '.version 9.0\n.visible .entry k(.reg .u32 a)\n{}', // not a .param
    '.version 9.0\n.visible .entry k()\n{}\n.visible .entry k()\n{}', // duplicate
    '.version 9.0\n/* unterminated\n.visible .entry k()\n{}',
  ];
  for (const text of bad) {
    assert.throws(() => parsePtx(text), { code: 'CUDA_ERROR_INVALID_PTX' }, JSON.stringify(text));
  }
});

test('an entry\'s registers (32-bit words of its .reg declarations) and launch bounds (.maxntid / .reqntid)', () => {
  const ptx = parsePtx(`.version 8.0
.target sm_90
.address_size 64
.visible .entry bounded(
\t.param .u64 a
)
.maxntid 128, 2, 1
{
\t.reg .pred \t%p<3>;
\t.reg .b32 \t%r<5>;
\t.reg .f32 \t%f1, %f2;
\t.reg .b64 \t%rd<4>;
\t{ .reg .b16 %h<2>; }
\tret;
}
.visible .entry exact()
.reqntid 64
{
\tret;
}
.visible .entry plain()
{
\t.reg .f64 %fd<300>;
\tret;
}
`);
  const bounded = ptx.entries.get('bounded');
  // 5 + 2 + 4 * 2 + 2 (a nested scope's registers count too); predicates are no registers.
  assert.equal(bounded?.registers, 17);
  assert.equal(bounded.maxThreads, 256);
  assert.equal(ptx.entries.get('exact')?.maxThreads, 64);
  assert.equal(ptx.entries.get('exact')?.registers, 0);
  assert.equal(ptx.entries.get('plain')?.maxThreads, undefined);
  assert.equal(ptx.entries.get('plain')?.registers, 255, 'at most 255 a thread');
  assert.throws(() => parsePtx('.version 8.0\n.target sm_90\n.visible .entry cut()\n{\n ret;\n'), (err: unknown) =>
    (err as { code?: string }).code === 'CUDA_ERROR_INVALID_PTX');
});
