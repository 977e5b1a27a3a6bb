import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { CudaError, resultName, resultNumber, toCudaError } from '../../src/cuda/cuda-error.js';
import { CUDA_RESULTS, CUDA_RESULT_DESCRIPTIONS, type CudaResultName } from '../../src/cuda/results.js';

test('the registry holds the CUresult codes MPS behaviour depends on, with their numbers', () => {
  const expected: Partial<Record<CudaResultName, number>> = {
    CUDA_SUCCESS: 0,
    CUDA_ERROR_INVALID_VALUE: 1,
    CUDA_ERROR_OUT_OF_MEMORY: 2,
    CUDA_ERROR_NOT_INITIALIZED: 3,
    CUDA_ERROR_INVALID_DEVICE: 101,
    CUDA_ERROR_INVALID_SOURCE: 300,
    CUDA_ERROR_INVALID_HANDLE: 400,
    CUDA_ERROR_NOT_FOUND: 500,
    CUDA_ERROR_ILLEGAL_ADDRESS: 700,
    CUDA_ERROR_NOT_SUPPORTED: 801,
    CUDA_ERROR_MPS_CONNECTION_FAILED: 805,
    CUDA_ERROR_MPS_RPC_FAILURE: 806,
    CUDA_ERROR_MPS_SERVER_NOT_READY: 807,
    CUDA_ERROR_MPS_MAX_CLIENTS_REACHED: 808,
    CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED: 809,
    CUDA_ERROR_MPS_CLIENT_TERMINATED: 810,
    CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION: 915,
    CUDA_ERROR_UNKNOWN: 999,
  };
  for (const [name, value] of Object.entries(expected)) {
    assert.equal(CUDA_RESULTS[name as CudaResultName], value, name);
    assert.equal(resultName(value), name);
    assert.equal(resultNumber(name as CudaResultName), value);
  }
});

test('numbers are unique and every code has a description', () => {
  const numbers = Object.values(CUDA_RESULTS);
  assert.equal(new Set(numbers).size, numbers.length);
  for (const name of Object.keys(CUDA_RESULTS) as CudaResultName[]) assert.ok(CUDA_RESULT_DESCRIPTIONS[name].length > 0, name);
});

test('CudaError carries code, number and call; unknown numbers become CUDA_ERROR_UNKNOWN', () => {
  const e = new CudaError('CUDA_ERROR_OUT_OF_MEMORY', 'cuMemAlloc_v2', 'no room');
  assert.equal(e.code, 'CUDA_ERROR_OUT_OF_MEMORY');
  assert.equal(e.result, 2);
  assert.equal(e.call, 'cuMemAlloc_v2');
  assert.ok(e instanceof Error);
  assert.equal(CudaError.fromResult(123456, 'x').code, 'CUDA_ERROR_UNKNOWN');
  assert.equal(toCudaError(new Error('boom'), 'y').code, 'CUDA_ERROR_UNKNOWN');
  assert.equal(toCudaError(e, 'y'), e);
});

test('docs/errors.md documents every code openmps raises itself, and only registry codes', () => {
  const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
  const documented = [...doc.matchAll(/`(CUDA_(?:ERROR_[A-Z0-9_]+|SUCCESS))`/g)].map((m) => m[1] ?? '');
  for (const name of documented) assert.ok(Object.hasOwn(CUDA_RESULTS, name), `${name} in docs/errors.md is not a CUresult`);
  // Every code raised in src/ appears in the document.
  for (const name of raisedCodes()) assert.ok(documented.includes(name), `${name} is raised in src/ but not documented in docs/errors.md`);
});

function raisedCodes(): Set<string> {
  const root = new URL('../../../src/', import.meta.url);
  const found = new Set<string>();
  const walk = (dir: URL): void => {
    for (const entry of readdirSync(dir)) {
      const child = new URL(entry, dir);
      if (statSync(child).isDirectory()) walk(new URL(`${entry}/`, dir));
      else if (entry.endsWith('.ts') && entry !== 'results.ts') {
        for (const m of readFileSync(child, 'utf8').matchAll(/new CudaError\(\s*'(CUDA_ERROR_[A-Z0-9_]+)'/g)) found.add(m[1] ?? '');
      }
    }
  };
  walk(root);
  return found;
}
