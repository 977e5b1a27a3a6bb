// openmps's libcuda.so.1 (native/libcuda), through its C test program native/libcuda/test/
// libcuda-check.c, built with ASan + UBSan against the sanitizer build of the library. The library
// decides its mode once per process, so each mode is one run: no daemon and no driver (NONE),
// a control socket that answers (MPS), a fake real driver found past ours on LD_LIBRARY_PATH
// (bypass). The hash run checks the integrity check's MD2/HMAC against fixed vectors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nativeTestProgram, REPO_ROOT, runNative, type NativeRun } from '../support/native.js';

const CHECK = nativeTestProgram('libcuda-check');
const SAN_LIB_DIR = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda');
const SAN_LIB = join(SAN_LIB_DIR, 'libcuda.so.1');

function assertPassed(run: NativeRun, label: string): string {
  const out = run.stdout.toString('utf8');
  assert.equal(run.signal, null, `${label}: killed by ${String(run.signal)}\n${out}\n${run.stderr}`);
  assert.ok(!/^FAIL /m.test(out), `${label}: ${out.split('\n').filter((l) => l.startsWith('FAIL')).join('\n')}\n${run.stderr}`);
  assert.equal(run.code, 0, `${label}: exit ${run.code}\n${out}\n${run.stderr}`);
  return out;
}

test('integrity hash: MD2 (RFC 1319) and the HMAC steps cudart computes', async () => {
  const out = assertPassed(await runNative(CHECK, { args: [SAN_LIB, 'hash'] }), 'hash');
  assert.match(out, /^ok final digest/m);
});

test('no daemon, no real driver: local answers, everything else CUDA_ERROR_MPS_CONNECTION_FAILED', async () => {
  const out = assertPassed(await runNative(CHECK, { args: [SAN_LIB, 'none'] }), 'none');
  assert.match(out, /^ok cuGetProcAddress\(cuGetProcAddress, 11030, 0\) is cuGetProcAddress$/m);
  assert.match(out, /^ok cuMemAlloc_v2: MPS_CONNECTION_FAILED$/m);
  assert.match(out, /^ok an unknown UUID: INVALID_VALUE at once$/m);
});

test('MPS mode: a not-implemented entry point answers NOT_SUPPORTED and is logged once', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-libcuda-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const log = join(dir, 'libcuda.log');
  const out = assertPassed(await runNative(CHECK, { args: [SAN_LIB, 'mps', log] }), 'mps');
  assert.match(out, /^ok cuMemAllocManaged is logged once$/m);
  const lines = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes('not implemented'));
  assert.deepEqual(lines.map((l) => /: (\w+): not implemented/.exec(l)?.[1]), ['cuMemAllocManaged', 'cuMemHostRegister_v2']);
  // The pipe directory the check made for its control socket.
  const pipe = /^# pipe directory (.+)$/m.exec(out)?.[1];
  if (pipe !== undefined) await rm(pipe, { recursive: true, force: true });
});

test('OPENMPS_LIBCUDA_TRACE=1: every call the library serves is logged with its result; unset, none is', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-libcuda-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const traced = join(dir, 'traced.log');
  const plain = join(dir, 'plain.log');
  const run = async (log: string, env: Record<string, string>): Promise<string[]> => {
    const out = assertPassed(await runNative(CHECK, { args: [SAN_LIB, 'mps', log], env }), 'mps');
    const pipe = /^# pipe directory (.+)$/m.exec(out)?.[1];
    if (pipe !== undefined) await rm(pipe, { recursive: true, force: true });
    return (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes(': trace: '));
  };
  const lines = await run(traced, { OPENMPS_LIBCUDA_TRACE: '1' });
  // The check calls cuMemAllocManaged (not implemented) and cuInit(1) (an invalid flag).
  assert.ok(lines.some((l) => l.endsWith('trace: cuMemAllocManaged -> 801 CUDA_ERROR_NOT_SUPPORTED')), lines.join('\n'));
  assert.ok(lines.some((l) => l.endsWith('trace: cuInit -> 1 CUDA_ERROR_INVALID_VALUE')), lines.join('\n'));
  assert.ok(lines.some((l) => l.endsWith('trace: cuGetProcAddress cuGetProcAddress (cudaVersion 11030, flags 0) -> cuGetProcAddress')));
  assert.ok(lines.some((l) => l.endsWith('trace: cuGetExportTable 6bd5fb6c5bf4e74a8987d93912fd9df9')), 'the tables handed out');
  assert.deepEqual(await run(plain, {}), []);
});

const FAKE_DRIVER = `
#include <stdint.h>
#include <string.h>
typedef int CUresult;
CUresult cuInit(unsigned flags) { (void)flags; return 0; }
CUresult cuDriverGetVersion(int *v) { *v = MARKER; return 0; }
CUresult cuGetProcAddress_v2(const char *s, void **p, int ver, unsigned long long flags, int *status) {
  (void)ver; (void)flags;
  if (strcmp(s, "cuDriverGetVersion") != 0) return 500;
  *p = (void *)cuDriverGetVersion;
  if (status) *status = 0;
  return 0;
}
static const void *table[2] = { (const void *)(uintptr_t)MARKER, 0 };
CUresult cuGetExportTable(const void **pp, const void *id) { (void)id; *pp = table; return 0; }
`;

test('bypass mode: every call goes to the real driver found past ours, never to ourselves', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-libcuda-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const marker = 424242;
  await mkdir(join(dir, 'fake'));
  await writeFile(join(dir, 'fake.c'), FAKE_DRIVER);
  await promisify(execFile)('gcc', ['-std=c11', '-shared', '-fPIC', `-DMARKER=${marker}`, '-Wl,-soname,libcuda.so.1',
    '-o', join(dir, 'fake', 'libcuda.so.1'), join(dir, 'fake.c')]);
  // Before the fake: our own directory, and a link to our own file under another directory;
  // both must be passed over (same directory, same inode).
  await mkdir(join(dir, 'self'));
  await symlink(SAN_LIB, join(dir, 'self', 'libcuda.so.1'));
  const log = join(dir, 'libcuda.log');
  const run = await runNative(CHECK, {
    args: [SAN_LIB, 'bypass', String(marker)],
    env: {
      LD_LIBRARY_PATH: [SAN_LIB_DIR, join(dir, 'self'), join(dir, 'fake')].join(':'),
      OPENMPS_PIPE_DIRECTORY: join(dir, 'no-daemon'),
      OPENMPS_LIBCUDA_LOG: log,
    },
  });
  const out = assertPassed(run, 'bypass');
  assert.match(out, /^ok cuDriverGetVersion answers the real driver's marker$/m);
  assert.match(out, /^ok cuGetProcAddress is forwarded to the real driver$/m);
  const notice = (await readFile(log, 'utf8')).split('\n').find((l) => l.includes('bypass mode'));
  assert.ok(notice?.includes(join(dir, 'fake', 'libcuda.so.1')), `notice: ${String(notice)}`);
});

// The names PyTorch 2.11 (91) and CuPy 14.2 (5 more) bind with dlsym or through the PLT, measured on
// the H200 (docs/transparency.md): each must be an exported symbol, or the program fails to load.
const DIRECT_BOUND = [
  'cuCtxDisablePeerAccess', 'cuCtxEnablePeerAccess', 'cuCtxGetCurrent', 'cuCtxSetCurrent', 'cuCtxGetDevice',
  'cuCtxGetLimit', 'cuCtxPopCurrent', 'cuCtxPushCurrent', 'cuCtxPopCurrent_v2', 'cuCtxPushCurrent_v2',
  'cuCtxSynchronize', 'cuDeviceCanAccessPeer', 'cuDeviceGet', 'cuDeviceGetAttribute', 'cuDeviceGetName',
  'cuDevicePrimaryCtxGetState', 'cuDevicePrimaryCtxRelease', 'cuDevicePrimaryCtxReset',
  'cuDevicePrimaryCtxRetain', 'cuDeviceTotalMem_v2', 'cuDriverGetVersion', 'cuEventCreate',
  'cuEventDestroy_v2', 'cuEventElapsedTime', 'cuEventQuery', 'cuEventRecord', 'cuEventSynchronize',
  'cuFuncGetAttribute', 'cuFuncSetAttribute', 'cuFuncSetCacheConfig', 'cuGetErrorName', 'cuGetErrorString',
  'cuGetExportTable', 'cuGetProcAddress_v2', 'cuGraphDestroy', 'cuGraphExecDestroy',
  'cuGraphExecKernelNodeSetParams', 'cuGraphGetNodes', 'cuGraphInstantiate', 'cuGraphKernelNodeGetParams',
  'cuGraphLaunch', 'cuGraphNodeGetType', 'cuInit', 'cuKernelGetAttribute', 'cuKernelGetFunction',
  'cuKernelGetLibrary', 'cuKernelSetAttribute', 'cuLaunchKernel', 'cuLaunchKernelEx', 'cuLibraryGetKernel',
  'cuLibraryLoadData', 'cuLibraryUnload', 'cuLinkAddData_v2', 'cuLinkAddFile_v2', 'cuLinkComplete',
  'cuLinkCreate_v2', 'cuLinkDestroy', 'cuMemAlloc_v2', 'cuMemcpy', 'cuMemcpy2DAsync_v2', 'cuMemcpyAsync',
  'cuMemcpyDtoDAsync_v2', 'cuMemcpyDtoH_v2', 'cuMemcpyHtoD_v2', 'cuMemFree_v2', 'cuMemGetInfo_v2',
  'cuMemPrefetchAsync', 'cuMemsetD8_v2', 'cuModuleGetFunction', 'cuModuleGetGlobal_v2', 'cuModuleLoadData',
  'cuModuleLoadDataEx', 'cuModuleLoadFatBinary', 'cuModuleUnload',
  'cuOccupancyMaxActiveBlocksPerMultiprocessor', 'cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags',
  'cuPointerGetAttribute', 'cuPointerGetAttributes', 'cuStreamBatchMemOp', 'cuStreamBeginCapture_v2',
  'cuStreamEndCapture', 'cuStreamGetCaptureInfo_v2', 'cuStreamIsCapturing', 'cuStreamCreate',
  'cuStreamDestroy_v2', 'cuStreamGetCtx', 'cuStreamSynchronize', 'cuStreamWaitEvent', 'cuStreamWaitValue32',
  'cuTensorMapEncodeTiled', 'cuThreadExchangeStreamCaptureMode', 'cuCtxCreate_v2', 'cuCtxDestroy_v2',
  'cuLaunchCooperativeKernel', 'cuModuleLoad', 'cuOccupancyMaxPotentialBlockSize',
];

test('exports: every name PyTorch and CuPy bind directly, and nothing but CUDA names', async () => {
  const { stdout } = await promisify(execFile)('nm', ['-D', '--defined-only', join(REPO_ROOT, 'dist', 'native', 'libcuda', 'libcuda.so.1')]);
  const exported = new Set(stdout.split('\n').map((l) => l.trim().split(/\s+/)[2]).filter((n): n is string => n !== undefined && n !== ''));
  assert.deepEqual(DIRECT_BOUND.filter((n) => !exported.has(n)), []);
  assert.deepEqual([...exported].filter((n) => !/^cu[A-Z]/.test(n)), []);
  assert.ok(exported.size >= 600, `only ${exported.size} symbols exported`);
});
