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

test('module variables as nvcc 13.0 emits them: sizes, alignment, initializers; .extern ones left out', () => {
  // From `nvcc -ptx -arch=sm_80` of __device__ int x; __device__ float a[16]; __device__ int init = 42;
  // __device__ float inita[4] = {1.5f, 2, 3, 4}; __constant__ float c[4] = {1, 2, 3, 4};
  // __constant__ int cz; __device__ double d = 2.5; __device__ unsigned long long big = 0x123456789;
  // __device__ char s[5] = "abc";
  const ptx = parsePtx(`.version 9.0
.target sm_80
.address_size 64
.global .align 4 .u32 x;
.global .align 4 .b8 a[64];
.global .align 4 .u32 init = 42;
.global .align 4 .b8 inita[16] = {0, 0, 192, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64};
.const .align 4 .b8 c[16] = {0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64};
.const .align 4 .u32 cz;
.global .align 8 .f64 d = 0d4004000000000000;
.global .align 8 .u64 big = 4886718345;
.global .align 1 .b8 s[5] = {97, 98, 99};
.extern .global .align 4 .u32 elsewhere;
.global .align 4 .f32 neg[2] = {0fBF800000, -2.5};
.global .align 4 .s32 minus = -1;
.visible .entry k(
\t.param .u64 k_param_0
)
{
\t.reg .b32 %r<2>;
\tret;
}
`);
  const v = ptx.variables;
  assert.deepEqual([...v.keys()], ['x', 'a', 'init', 'inita', 'c', 'cz', 'd', 'big', 's', 'neg', 'minus']);
  assert.deepEqual([v.get('x')?.bytes, v.get('x')?.init], [4, undefined]);
  assert.equal(v.get('a')?.bytes, 64);
  assert.equal(v.get('c')?.space, 'const');
  assert.equal(v.get('d')?.align, 8);
  const f32 = (name: string): number[] => [...new Float32Array(v.get(name)?.init?.slice().buffer ?? new ArrayBuffer(0))];
  assert.deepEqual(f32('inita'), [1.5, 2, 3, 4]);
  assert.deepEqual(f32('c'), [1, 2, 3, 4]);
  assert.deepEqual(f32('neg'), [-1, -2.5]);
  const view = (name: string): DataView => new DataView(v.get(name)?.init?.slice().buffer ?? new ArrayBuffer(8));
  assert.equal(view('init').getUint32(0, true), 42);
  assert.equal(view('d').getFloat64(0, true), 2.5);
  assert.equal(view('big').getBigUint64(0, true), 0x123456789n);
  assert.equal(view('minus').getInt32(0, true), -1);
  assert.deepEqual([...(v.get('s')?.init ?? [])], [97, 98, 99, 0, 0]);
  assert.equal(ptx.entries.get('k')?.registers, 2, 'the entry after them still parses');
  assert.throws(() => parsePtx('.version 9.0\n.target sm_80\n.global .u64 p = generic(x);\n.visible .entry k()\n{\n ret;\n}\n'),
    (err: unknown) => (err as { code?: string }).code === 'CUDA_ERROR_NOT_SUPPORTED');
});

test('mutated PTX with module variables parses or fails with INVALID_PTX / NOT_SUPPORTED, and every variable it gives is whole', () => {
  // What the server does with a client's PTX: the only outcomes allowed are a module whose
  // variables have sizes and initializers that agree, or a CudaError with one of the two codes.
  const variables = `.global .align 4 .u32 x;
.global .align 4 .b8 inita[16] = {0, 0, 192, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64};
.const .align 4 .b8 c[16] = {0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64};
.global .align 8 .f64 d = 0d4004000000000000;
.global .align 8 .u64 big = 4886718345;
.global .align 4 .f32 neg[2] = {0fBF800000, -2.5};
.global .align 4 .s32 grid[2][3] = {{1, 2, 3}, {4, 5, 6}};
`;
  const seed = PTX.replace('.address_size 64\n', `.address_size 64\n${variables}`);
  assert.equal(parsePtx(seed).variables.size, 7);
  let state = 97;
  const rand = (): number => {
    // xorshift32: seeded, so a failure reproduces.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const alphabet = '{}[];=,.-0123456789xfd \n';
  const outcomes = new Map<string, number>();
  for (let round = 0; round < 3000; round++) {
    // The PTX is ASCII: one array slot a character.
    const chars = Array.from({ length: seed.length }, (_, i) => seed.charAt(i));
    // Aim the edits at the variables, where the new parser is.
    const start = seed.indexOf(variables);
    for (let e = 0, n = 1 + Math.floor(rand() * 4); e < n; e++) {
      const at = rand() < 0.8 ? start + Math.floor(rand() * variables.length) : Math.floor(rand() * chars.length);
      const r = rand();
      if (r < 0.5) chars[at] = alphabet[Math.floor(rand() * alphabet.length)] ?? ' ';
      else if (r < 0.75) chars.splice(at, 1 + Math.floor(rand() * 8));
      else chars.splice(at, 0, alphabet[Math.floor(rand() * alphabet.length)] ?? ' ');
    }
    let outcome = 'parsed';
    try {
      for (const v of parsePtx(chars.join('')).variables.values()) {
        assert.ok(Number.isSafeInteger(v.bytes) && v.bytes >= 1 && v.bytes <= 2 ** 31, `${v.name}: ${v.bytes} bytes`);
        assert.ok(v.init === undefined || v.init.length === v.bytes, `${v.name}: initializer of ${v.init?.length} for ${v.bytes} bytes`);
      }
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      assert.ok(code === 'CUDA_ERROR_INVALID_PTX' || code === 'CUDA_ERROR_NOT_SUPPORTED', `unexpected ${String(err)}`);
      outcome = code;
    }
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  assert.ok((outcomes.get('parsed') ?? 0) > 0 && outcomes.size >= 2, JSON.stringify([...outcomes]));
});
