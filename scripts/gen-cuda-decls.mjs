#!/usr/bin/env node
// Generates, from the CUDA toolkit's cuda.h, cudaTypedefs.h and cudaProfilerTypedefs.h, what
// openmps's own libcuda.so.1 (native/libcuda/) needs so that building it needs no toolkit:
//   native/libcuda/cuda-decls.h    cuda.h's types, enums and constants (comments dropped, the
//                                  API-version renaming macros and the prototypes left out),
//                                  then one prototype per exported symbol, by its real name
//   native/libcuda/entry-points.c  the entry-point table (name, cudaVersion from which it
//                                  applies, per-thread-default-stream variant, symbol) and one
//                                  function per symbol that dispatches on the library's mode
//   native/libcuda/libcuda.map     the version script: only these CUDA names are exported
//   native/libcuda/results.c       CUresult names and descriptions for cuGetErrorName/String
// Which version maps to which symbol: cudaTypedefs.h has one PFN_<name>_v<version>[_ptsz|_ptds]
// typedef per ABI of each entry point; the newest maps to what cuda.h's renaming macro says
// (`#define cuMemAlloc cuMemAlloc_v2`), older ones to <name>, <name>_v2, ... in order. Each
// derived symbol is checked against the prototypes cuda.h declares (its body, renamed, and its
// __CUDA_API_VERSION_INTERNAL tail of older ABIs), parameter count included, so a header whose
// versioning changes shape fails here rather than producing a wrong table.
// Usage: node scripts/gen-cuda-decls.mjs [--check] [path/to/cuda/include]
// With --check it exits 1 when a committed file differs from what the headers give.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const args = process.argv.slice(2);
const check = args.includes('--check');
const incDir = args.find((a) => !a.startsWith('--')) ?? process.env.CUDA_INCLUDE ?? '/usr/local/cuda/include';
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'native', 'libcuda');

// What the library implements itself rather than through the generic "not supported" answer.
// local: answered without the server (MPS mode and no-daemon mode alike); mps: needs the
// openmps session (MPS mode only). In bypass mode every symbol goes to the real driver.
// Each name here must have a function omlc_<class>_<symbol> in native/libcuda/*.c (the link
// fails otherwise, since the library is linked with -z defs).
const IMPLEMENTED = {
  cuDriverGetVersion: 'local',
  cuGetErrorName: 'local',
  cuGetErrorString: 'local',
  cuGetProcAddress: 'local',
  cuGetProcAddress_v2: 'local',
  cuGetExportTable: 'local',
  cuInit: 'mps',
  cuDeviceGetCount: 'mps',
  cuDeviceGet: 'mps',
  cuDeviceGetName: 'mps',
  cuDeviceTotalMem_v2: 'mps',
  cuDeviceGetUuid: 'mps',
  cuDeviceGetUuid_v2: 'mps',
  cuDeviceComputeCapability: 'mps',
  cuDeviceGetAttribute: 'mps',
  cuModuleGetLoadingMode: 'mps',
  cuDevicePrimaryCtxRetain: 'mps',
  cuDevicePrimaryCtxRelease: 'mps',
  cuDevicePrimaryCtxRelease_v2: 'mps',
  cuDevicePrimaryCtxGetState: 'mps',
  cuDevicePrimaryCtxSetFlags: 'mps',
  cuDevicePrimaryCtxSetFlags_v2: 'mps',
  cuCtxGetCurrent: 'mps',
  cuCtxSetCurrent: 'mps',
  cuCtxPushCurrent: 'mps',
  cuCtxPushCurrent_v2: 'mps',
  cuCtxPopCurrent: 'mps',
  cuCtxPopCurrent_v2: 'mps',
  cuCtxGetDevice: 'mps',
  cuCtxGetDevice_v2: 'mps',
  cuCtxGetFlags: 'mps',
  cuCtxGetApiVersion: 'mps',
  cuMemAlloc_v2: 'mps',
  cuMemFree_v2: 'mps',
  cuMemGetInfo_v2: 'mps',
  cuMemcpyHtoD_v2: 'mps',
  cuMemcpyHtoD_v2_ptds: 'mps',
  cuMemcpyDtoH_v2: 'mps',
  cuMemcpyDtoH_v2_ptds: 'mps',
  cuMemsetD8_v2: 'mps',
  cuMemsetD8_v2_ptds: 'mps',
  cuCtxSynchronize: 'mps',
  cuCtxSynchronize_v2: 'mps',
  cuMemcpyHtoDAsync_v2: 'mps',
  cuMemcpyHtoDAsync_v2_ptsz: 'mps',
  cuMemcpyDtoHAsync_v2: 'mps',
  cuMemcpyDtoHAsync_v2_ptsz: 'mps',
  cuMemcpyDtoD_v2: 'mps',
  cuMemcpyDtoD_v2_ptds: 'mps',
  cuMemcpyDtoDAsync_v2: 'mps',
  cuMemcpyDtoDAsync_v2_ptsz: 'mps',
  cuStreamCreate: 'mps',
  cuStreamCreateWithPriority: 'mps',
  cuStreamDestroy: 'mps',
  cuStreamDestroy_v2: 'mps',
  cuStreamSynchronize: 'mps',
  cuStreamSynchronize_ptsz: 'mps',
  cuStreamQuery: 'mps',
  cuStreamQuery_ptsz: 'mps',
  cuEventCreate: 'mps',
  cuEventDestroy: 'mps',
  cuEventDestroy_v2: 'mps',
  cuEventRecord: 'mps',
  cuEventRecord_ptsz: 'mps',
  cuEventRecordWithFlags: 'mps',
  cuEventRecordWithFlags_ptsz: 'mps',
  cuStreamWaitEvent: 'mps',
  cuStreamWaitEvent_ptsz: 'mps',
  cuEventSynchronize: 'mps',
  cuEventQuery: 'mps',
  cuEventElapsedTime: 'mps',
  cuEventElapsedTime_v2: 'mps',
  cuModuleLoadData: 'mps',
  cuModuleLoad: 'mps',
  cuModuleLoadDataEx: 'mps',
  cuModuleLoadFatBinary: 'mps',
  cuModuleUnload: 'mps',
  cuModuleGetFunction: 'mps',
  cuLibraryLoadData: 'mps',
  cuLibraryUnload: 'mps',
  cuLibraryGetKernel: 'mps',
  cuKernelGetFunction: 'mps',
  cuLibraryGetModule: 'mps',
  cuModuleGetGlobal_v2: 'mps',
  cuLibraryGetGlobal: 'mps',
  cuFuncGetAttribute: 'mps',
  cuFuncSetAttribute: 'mps',
  cuKernelGetAttribute: 'mps',
  cuKernelSetAttribute: 'mps',
  cuFuncSetCacheConfig: 'mps',
  cuKernelSetCacheConfig: 'mps',
  cuCtxSetCacheConfig: 'mps',
  cuCtxGetCacheConfig: 'mps',
  cuFuncGetName: 'mps',
  cuKernelGetName: 'mps',
  cuFuncGetParamInfo: 'mps',
  cuKernelGetParamInfo: 'mps',
  cuFuncGetModule: 'mps',
  cuKernelGetLibrary: 'mps',
  cuOccupancyAvailableDynamicSMemPerBlock: 'mps',
  cuOccupancyMaxActiveClusters: 'mps',
  cuOccupancyMaxPotentialClusterSize: 'mps',
  cuTensorMapEncodeTiled: 'mps',
  cuOccupancyMaxActiveBlocksPerMultiprocessor: 'mps',
  cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags: 'mps',
  cuOccupancyMaxPotentialBlockSize: 'mps',
  cuOccupancyMaxPotentialBlockSizeWithFlags: 'mps',
  cuLaunchKernel: 'mps',
  cuLaunchKernel_ptsz: 'mps',
  cuLaunchKernelEx: 'mps',
  cuLaunchKernelEx_ptsz: 'mps',
  cuMemcpy: 'mps',
  cuMemcpy2D_v2: 'mps',
  cuMemcpy2D_v2_ptds: 'mps',
  cuMemcpy2DUnaligned_v2: 'mps',
  cuMemcpy2DUnaligned_v2_ptds: 'mps',
  cuMemcpy2DAsync_v2: 'mps',
  cuMemcpy2DAsync_v2_ptsz: 'mps',
  cuMemcpy_ptds: 'mps',
  cuMemcpyAsync: 'mps',
  cuMemcpyAsync_ptsz: 'mps',
  cuMemsetD16_v2: 'mps',
  cuMemsetD16_v2_ptds: 'mps',
  cuMemsetD32_v2: 'mps',
  cuMemsetD32_v2_ptds: 'mps',
  cuMemsetD8Async: 'mps',
  cuMemsetD8Async_ptsz: 'mps',
  cuMemsetD16Async: 'mps',
  cuMemsetD16Async_ptsz: 'mps',
  cuMemsetD32Async: 'mps',
  cuMemsetD32Async_ptsz: 'mps',
  cuPointerGetAttribute: 'mps',
  cuPointerGetAttributes: 'mps',
  cuCtxGetStreamPriorityRange: 'mps',
  cuStreamGetPriority: 'mps',
  cuStreamGetPriority_ptsz: 'mps',
  cuMemHostAlloc: 'mps',
  cuMemAllocHost_v2: 'mps',
  cuMemFreeHost: 'mps',
  cuMemHostGetFlags: 'mps',
  // Stream capture queries (capture.c) and what a stream or context is (streams.c, context.c).
  cuStreamIsCapturing: 'mps',
  cuStreamIsCapturing_ptsz: 'mps',
  cuStreamGetCaptureInfo: 'mps',
  cuStreamGetCaptureInfo_ptsz: 'mps',
  cuStreamGetCaptureInfo_v2: 'mps',
  cuStreamGetCaptureInfo_v2_ptsz: 'mps',
  cuStreamGetCaptureInfo_v3: 'mps',
  cuStreamGetCaptureInfo_v3_ptsz: 'mps',
  cuThreadExchangeStreamCaptureMode: 'mps',
  cuStreamGetCtx: 'mps',
  cuStreamGetCtx_ptsz: 'mps',
  cuStreamGetCtx_v2: 'mps',
  cuStreamGetCtx_v2_ptsz: 'mps',
  cuStreamGetDevice: 'mps',
  cuStreamGetDevice_ptsz: 'mps',
  cuStreamGetFlags: 'mps',
  cuStreamGetFlags_ptsz: 'mps',
  cuStreamGetId: 'mps',
  cuStreamGetId_ptsz: 'mps',
  cuCtxGetId: 'mps',
  cuCtxGetLimit: 'mps',
  cuCtxGetExecAffinity: 'mps',
  cuDeviceGetExecAffinitySupport: 'mps',
  cuCtxSetLimit: 'mps',
  cuDeviceCanAccessPeer: 'mps',
};

const cudaH = join(incDir, 'cuda.h');
const typedefsH = join(incDir, 'cudaTypedefs.h');
const profilerH = join(incDir, 'cudaProfiler.h');
const profilerTypedefsH = join(incDir, 'cudaProfilerTypedefs.h');
if (![cudaH, typedefsH, profilerH, profilerTypedefsH].every((p) => existsSync(p))) {
  console.log(`gen-cuda-decls: cuda.h and its typedef headers not found in ${incDir}; keeping the committed files`);
  process.exit(0);
}

const stripComments = (s) => s.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/[^\n]*/g, '');
const squash = (s) => s.replace(/\s+/g, ' ').trim();

// The extern "C" braces (under #ifdef __cplusplus) are dropped so that braces count structure;
// the generated header has its own around the prototypes.
const cuda = stripComments(readFileSync(cudaH, 'utf8'))
  .replace(/#ifdef __cplusplus\s*\nextern "C" \{\s*\n#endif/g, '')
  .replace(/#ifdef __cplusplus\s*\n\}\s*\n#endif/g, '');
const cudaVersion = Number(/#define CUDA_VERSION (\d+)/.exec(cuda)?.[1] ?? NaN);
if (!Number.isInteger(cudaVersion)) throw new Error('no CUDA_VERSION in cuda.h');

// --- cuda.h's renaming macros: cuX -> cuX_v2, and which of them have a per-thread variant.
const renames = new Map(); // name -> { target, ptds: '' | '_ptds' | '_ptsz' }
for (const m of cuda.matchAll(/^[ \t]*#define[ \t]+(cu[A-Z]\w*)[ \t]+(\S.*)$/gm)) {
  const value = m[2].trim();
  const pt = /^__CUDA_API_(PTDS|PTSZ)\((\w+)\)$/.exec(value);
  if (pt) renames.set(m[1], { target: pt[2], ptds: `_${pt[1].toLowerCase()}` });
  else if (/^cu\w+$/.test(value)) renames.set(m[1], { target: value, ptds: '' });
}

// --- cuda.h split into top-level statements (a statement ends at ';' outside braces, or is a
// preprocessor line), so prototypes can be told apart from types.
function statements(text) {
  const out = [];
  let cur = '';
  let depth = 0;
  for (const line of text.split('\n')) {
    if (depth === 0 && cur.trim() === '' && /^\s*#/.test(line)) {
      out.push({ pp: true, text: line.trim() });
      continue;
    }
    if (/^\s*#/.test(line)) { cur += `${line}\n`; continue; }
    for (const ch of line) {
      cur += ch;
      if (ch === '{') depth++;
      else if (ch === '}') depth--;
      else if (ch === ';' && depth === 0) { out.push({ pp: false, text: cur }); cur = ''; }
    }
    cur += '\n';
  }
  if (cur.trim() !== '') out.push({ pp: false, text: cur });
  return out;
}

// The __CUDA_API_VERSION_INTERNAL tail declares the older ABIs (and the types they use, such as
// CUdeviceptr_v1); its types are kept unconditionally, its prototypes name the old symbols.
const tailStart = cuda.search(/#if defined\(__CUDA_API_VERSION_INTERNAL\)\s*\n\s*#undef cu/);
const tailElif = cuda.indexOf('#elif defined(__CUDA_API_PER_THREAD_DEFAULT_STREAM)', tailStart);
const tailEnd = cuda.indexOf('#endif', tailElif);
if (tailStart < 0 || tailElif < 0 || tailEnd < 0) throw new Error('cuda.h: no __CUDA_API_VERSION_INTERNAL versioning tail');
const body = cuda.slice(0, tailStart);
const tail = cuda.slice(cuda.indexOf('\n', tailStart) + 1, tailElif);
const after = cuda.slice(tailEnd + '#endif'.length);

const protoRe = /\bCUDAAPI\s+(cu\w+)\s*\(([\s\S]*)\)\s*;\s*$/;
const declared = new Map(); // real symbol -> parameter count
const paramCount = (p) => (squash(p) === 'void' || squash(p) === '' ? 0 : splitParams(p).length);
function splitParams(p) {
  const parts = [];
  let depth = 0;
  let cur = '';
  for (const ch of p) {
    if (ch === '(' || ch === '[') depth++;
    if (ch === ')' || ch === ']') depth--;
    if (ch === ',' && depth === 0) { parts.push(cur); cur = ''; } else cur += ch;
  }
  parts.push(cur);
  return parts.map(squash).filter((x) => x !== '');
}

const kept = [];
function keep(stmts, inTail) {
  for (const s of stmts) {
    if (s.pp) {
      if (/^#\s*define\s+cu[A-Z]\w*\s/.test(s.text) || /^#\s*undef\s+cu/.test(s.text)) continue;
      if (/^#\s*(ifndef|define|endif)\s*(__cuda_cuda_h__)?\s*(\/\*.*)?$/.test(s.text) && s.text.includes('__cuda_cuda_h__')) continue;
      kept.push(s.text);
      continue;
    }
    const proto = protoRe.exec(s.text);
    if (proto) {
      const name = proto[1];
      const real = inTail ? name : (renames.get(name)?.target ?? name);
      declared.set(real, paramCount(proto[2]));
      const r = renames.get(name);
      if (!inTail && r && r.ptds) declared.set(real + r.ptds, paramCount(proto[2]));
      continue;
    }
    if (/\bstatic\s+inline\b/.test(s.text)) continue;
    kept.push(squashStatement(s.text));
  }
}
function squashStatement(t) {
  return t.split('\n').map((l) => l.replace(/\s+$/, '')).filter((l) => l.trim() !== '').join('\n');
}
keep(statements(body), false);
keep(statements(tail), true);
keep(statements(after), false);
// The closing of cuda.h's file guard was dropped with its opening; drop the unmatched #endif.
const lastEndif = kept.lastIndexOf('#endif');
if (lastEndif >= 0) kept.splice(lastEndif, 1);

// Profiler entry points (cuProfilerStart/Stop/Initialize) use CUoutput_mode from cudaProfiler.h.
const profiler = stripComments(readFileSync(profilerH, 'utf8'));
const outputMode = /typedef enum CUoutput_mode_enum\s*\{[\s\S]*?\}\s*CUoutput_mode\s*;/.exec(profiler);
if (!outputMode) throw new Error('cudaProfiler.h: no CUoutput_mode');
for (const m of profiler.matchAll(/CUDAAPI\s+(cu\w+)\s*\(([^)]*)\)\s*;/g)) declared.set(m[1], paramCount(m[2]));

// --- The PFN typedefs: one per (name, version, stream variant).
const pfnText = stripComments(readFileSync(typedefsH, 'utf8')) + stripComments(readFileSync(profilerTypedefsH, 'utf8'));
const pfns = [];
for (const m of pfnText.matchAll(/typedef\s+CUresult\s*\(\s*CUDAAPI\s*\*\s*PFN_(cu\w+?)_v(\d+)(_ptds|_ptsz)?\s*\)\s*\(([^;]*)\)\s*;/g)) {
  pfns.push({ name: m[1], version: Number(m[2]), ptds: m[3] ?? '', params: squash(m[4]) });
}
if (pfns.length < 500) throw new Error(`only ${pfns.length} PFN typedefs parsed`);

const byName = new Map();
for (const p of pfns) {
  if (!byName.has(p.name)) byName.set(p.name, []);
  byName.get(p.name).push(p);
}
const entries = []; // { name, version, ptds, symbol, params }
const problems = [];
for (const [name, list] of byName) {
  const versions = [...new Set(list.map((p) => p.version))].sort((a, b) => a - b);
  const legacyVersions = [...new Set(list.filter((p) => p.ptds === '').map((p) => p.version))].sort((a, b) => a - b);
  const rename = renames.get(name);
  // Only a rename to a versioned form of the same name says which symbol is newest: cuda.h's
  // `#define cuGraphInstantiate cuGraphInstantiateWithFlags` swaps the function at compile time
  // and is no ABI version of cuGraphInstantiate.
  const versioned = rename && rename.target.startsWith(`${name}_v`) ? rename.target : undefined;
  // Symbol for each version: the newest is what cuda.h renames the name to; older ones count
  // up from the plain name. A per-thread typedef maps to the symbol of the same version.
  const ordinal = new Map();
  const ordered = legacyVersions.length > 0 ? legacyVersions : versions;
  ordered.forEach((v, i) => ordinal.set(v, i === ordered.length - 1 && versioned ? versioned : i === 0 ? name : `${name}_v${i + 1}`));
  const newest = ordinal.get(ordered[ordered.length - 1]) ?? name;
  for (const p of list) {
    let base = ordinal.get(p.version);
    if (base === undefined) {
      // A per-thread typedef whose version has no legacy typedef (cuMemcpyHtoD_v7000_ptds):
      // it is the per-thread variant of the newest legacy symbol older than it.
      const older = ordered.filter((v) => v <= p.version);
      base = older.length > 0 ? ordinal.get(older[older.length - 1]) : newest;
    }
    const symbol = base + p.ptds;
    const n = declared.get(symbol) ?? declared.get(base);
    if (n === undefined) problems.push(`${name} v${p.version}${p.ptds}: derived symbol ${symbol} is not declared in cuda.h`);
    else if (n !== paramCount(p.params)) problems.push(`${name} v${p.version}${p.ptds}: ${symbol} has ${n} parameters in cuda.h, ${paramCount(p.params)} in cudaTypedefs.h`);
    if (p.ptds !== '' && rename && rename.ptds !== '' && rename.ptds !== p.ptds && declared.get(symbol) === undefined) {
      problems.push(`${name}: per-thread suffix ${p.ptds} disagrees with cuda.h's ${rename.ptds}`);
    }
    entries.push({ name, version: p.version, ptds: p.ptds !== '', symbol, params: p.params });
  }
}
if (problems.length > 0) throw new Error(`gen-cuda-decls: the version mapping does not hold for this cuda.h:\n  ${problems.join('\n  ')}`);

// One function per symbol; a symbol reached from several (name, version) pairs is one function,
// and its parameters must be the same C types each time.
const symbols = new Map();
for (const e of entries) {
  const prev = symbols.get(e.symbol);
  if (prev && squash(prev.params) !== squash(e.params)) {
    throw new Error(`gen-cuda-decls: ${e.symbol} has two signatures: (${prev.params}) and (${e.params})`);
  }
  if (!prev) symbols.set(e.symbol, { symbol: e.symbol, params: e.params });
}
for (const name of Object.keys(IMPLEMENTED)) {
  if (!symbols.has(name)) throw new Error(`gen-cuda-decls: IMPLEMENTED names ${name}, which is no entry point`);
}
const symbolList = [...symbols.values()].sort((a, b) => (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0));
const symIndex = new Map(symbolList.map((s, i) => [s.symbol, i]));
entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.ptds - b.ptds || a.version - b.version));

// Parameter names for forwarding: the last identifier of each parameter (checked: every PFN
// parameter is named, and none is a function-pointer declarator).
function paramNames(params) {
  if (paramCount(params) === 0) return [];
  return splitParams(params).map((p) => {
    const m = /([A-Za-z_]\w*)\s*(\[\s*\])?$/.exec(p);
    if (!m || p.includes('(')) throw new Error(`gen-cuda-decls: cannot name parameter "${p}"`);
    return m[1];
  });
}

const header = `// Generated by scripts/gen-cuda-decls.mjs from cuda.h (CUDA_VERSION ${cudaVersion}). Do not edit.`;

// --- cuda-decls.h
const decls = [
  header,
  '// cuda.h\'s types, enums and constants, so that libcuda.so.1 builds without the CUDA toolkit;',
  '// then one prototype per exported symbol under its real (versioned) name: the functions in',
  '// entry-points.c are checked against these by the compiler.',
  '#ifndef OPENMPS_CUDA_DECLS_H',
  '#define OPENMPS_CUDA_DECLS_H',
  '',
  ...kept,
  '',
  squashStatement(outputMode[0]),
  '',
  '#ifdef __cplusplus',
  'extern "C" {',
  '#endif',
  '// Exported (the library builds with -fvisibility=hidden; libcuda.map lists these same names).',
  '#pragma GCC visibility push(default)',
  ...symbolList.map((s) => `CUresult CUDAAPI ${s.symbol}(${s.params});`),
  '#pragma GCC visibility pop',
  '#ifdef __cplusplus',
  '}',
  '#endif',
  '',
  `#define OMLC_CUDA_HEADER_VERSION ${cudaVersion}`,
  '',
  '#endif',
  '',
].join('\n');

// --- symbols.h: each exported symbol's index in omlc_symbols, for the library's own code.
const symbolsH = [
  header,
  '#ifndef OPENMPS_LIBCUDA_SYMBOLS_H',
  '#define OPENMPS_LIBCUDA_SYMBOLS_H',
  `#define OMLC_SYMBOL_COUNT ${symbolList.length}`,
  `#define OMLC_ENTRY_COUNT ${entries.length}`,
  ...symbolList.map((s, i) => `#define OMLC_SYM_${s.symbol} ${i}`),
  '#endif',
  '',
].join('\n');

// --- entry-points.c
const cls = (s) => IMPLEMENTED[s] ?? 'none';
const ep = [
  header,
  '// The entry-point table and one function per exported symbol. Each function asks the library',
  '// its mode (libcuda.h): in bypass mode it forwards to the real driver\'s function of the same',
  '// name; in MPS mode it runs openmps\'s implementation, or answers CUDA_ERROR_NOT_SUPPORTED and',
  '// logs its name once; with neither daemon nor driver it fails with',
  '// CUDA_ERROR_MPS_CONNECTION_FAILED. Functions marked local answer in that mode too.',
  '#include "libcuda.h"',
  '',
  ...Object.entries(IMPLEMENTED).map(([s, c]) => `CUresult omlc_${c}_${s}(${symbols.get(s).params});`),
  '',
];
for (const s of symbolList) {
  const names = paramNames(s.params);
  const call = `(${names.join(', ')})`;
  const c = cls(s.symbol);
  ep.push(`CUresult CUDAAPI ${s.symbol}(${s.params}) {`);
  ep.push('  switch (omlc_mode()) {');
  ep.push('  case OMLC_MODE_BYPASS: {');
  ep.push(`    omlc_fn real = omlc_real(OMLC_SYM_${s.symbol});`);
  ep.push(`    return real ? ((CUresult (CUDAAPI *)(${s.params}))real)${call} : omlc_bypass_missing(OMLC_SYM_${s.symbol});`);
  ep.push('  }');
  if (c === 'local') {
    ep.push(`  case OMLC_MODE_MPS: case OMLC_MODE_NONE: return omlc_traced(OMLC_SYM_${s.symbol}, omlc_local_${s.symbol}${call});`);
  } else {
    if (c === 'mps') ep.push(`  case OMLC_MODE_MPS: return omlc_traced(OMLC_SYM_${s.symbol}, omlc_mps_${s.symbol}${call});`);
    else {
      ep.push('  case OMLC_MODE_MPS:');
      if (names.length > 0) ep.push(`    ${names.map((n) => `(void)${n};`).join(' ')}`);
      ep.push(`    return omlc_traced(OMLC_SYM_${s.symbol}, omlc_not_supported(OMLC_SYM_${s.symbol}));`);
    }
    ep.push('  case OMLC_MODE_NONE: break;');
  }
  ep.push('  }');
  if (c !== 'local') ep.push('  return omlc_no_service();');
  else ep.push('  return CUDA_ERROR_UNKNOWN;');
  ep.push('}');
  ep.push('');
}
ep.push('// Every exported symbol: its name, our function, and how it is implemented in MPS mode.');
ep.push('const omlc_symbol omlc_symbols[OMLC_SYMBOL_COUNT] = {');
for (const s of symbolList) {
  const c = cls(s.symbol);
  ep.push(`  { "${s.symbol}", (omlc_fn)${s.symbol}, OMLC_IMPL_${c.toUpperCase()} },`);
}
ep.push('};');
ep.push('');
ep.push('// What cuGetProcAddress answers: sorted by name, then legacy before per-thread, then version.');
ep.push('// { name, cudaVersion from which it applies, per-thread-default-stream variant, symbol }');
ep.push('const omlc_entry omlc_entries[OMLC_ENTRY_COUNT] = {');
for (const e of entries) ep.push(`  { "${e.name}", ${e.version}, ${e.ptds ? 1 : 0}, ${symIndex.get(e.symbol)} }, /* ${e.symbol} */`);
ep.push('};');
ep.push('');

// --- libcuda.map
const map = [
  `/* ${header.slice(3)} */`,
  '/* Only CUDA driver names are exported; everything else in the library stays local. */',
  '{',
  '  global:',
  ...symbolList.map((s) => `    ${s.symbol};`),
  '  local: *;',
  '};',
  '',
].join('\n');

// --- results.c (CUresult names and the first sentence of each one's documentation)
const resStart = cuda.indexOf('typedef enum cudaError_enum {');
const resEnd = cuda.indexOf('} CUresult;', resStart);
const rawCuda = readFileSync(cudaH, 'utf8');
const rawStart = rawCuda.indexOf('typedef enum cudaError_enum {');
const rawBody = rawCuda.slice(rawStart, rawCuda.indexOf('} CUresult;', rawStart));
if (resStart < 0 || resEnd < 0 || rawStart < 0) throw new Error('no CUresult enum in cuda.h');
const results = [];
for (const m of rawBody.matchAll(/\/\*\*([\s\S]*?)\*\/\s*(CUDA_[A-Z0-9_]+)\s*=\s*(\d+)/g)) {
  const doc = m[1].split('\n').map((l) => l.replace(/^\s*\*\s?/, '').trim())
    .filter((l) => l.length > 0 && !l.startsWith('\\deprecated')).join(' ').replace(/::/g, '').replace(/\s+/g, ' ');
  const first = (/^(.*?\.)(\s|$)/.exec(doc)?.[1] ?? doc).replace(/\\/g, '\\\\').replace(/"/g, '\\"');
  results.push({ name: m[2], value: Number(m[3]), doc: first });
}
if (results.length < 50) throw new Error(`only ${results.length} CUresult entries parsed`);
results.sort((a, b) => a.value - b.value);
const res = [
  header,
  '// cuGetErrorName / cuGetErrorString answer from this table, sorted by code.',
  '#include "libcuda.h"',
  '',
  `const omlc_result omlc_results[${results.length}] = {`,
  ...results.map((r) => `  { ${r.value}, "${r.name}", "${r.doc}" },`),
  '};',
  `const unsigned omlc_result_count = ${results.length};`,
  '',
].join('\n');

const files = [
  ['cuda-decls.h', decls],
  ['symbols.h', symbolsH],
  ['entry-points.c', ep.join('\n')],
  ['libcuda.map', map],
  ['results.c', res],
];
let stale = 0;
for (const [name, text] of files) {
  const path = join(outDir, name);
  if (check) {
    const current = existsSync(path) ? readFileSync(path, 'utf8') : '';
    if (current !== text) {
      console.error(`gen-cuda-decls: native/libcuda/${name} is out of date; run node scripts/gen-cuda-decls.mjs`);
      stale++;
    }
  } else writeFileSync(path, text);
}
if (stale > 0) process.exit(1);
console.log(`gen-cuda-decls: ${symbolList.length} symbols, ${entries.length} entries, ${results.length} results ${check ? 'match' : 'written from'} ${incDir}`);
