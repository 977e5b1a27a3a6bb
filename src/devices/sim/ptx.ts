// Reads what the software GPU needs out of PTX text: the `.entry` names and each entry's `.param`
// list, laid out as the CUDA driver lays out a kernel's packed parameter buffer (the layout
// cuFuncGetParamInfo reports: each parameter at the next offset aligned to its own alignment).
// It is not a PTX compiler: instruction bodies are skipped, and the kernels themselves come from the
// TypeScript catalog (kernels.ts). Malformed input is answered with CUDA_ERROR_INVALID_PTX, the code
// cuModuleLoadData returns when the JIT rejects PTX.
import { CudaError } from '../../cuda/cuda-error.js';

/** One `.param` of an entry, with its place in the packed parameter buffer. */
export interface PtxParam {
  readonly name: string;
  /** Element type without the dot: `u64`, `f32`, `b8`. */
  readonly type: string;
  readonly offset: number;
  readonly size: number;
  readonly align: number;
}

export interface PtxEntry {
  readonly name: string;
  readonly params: readonly PtxParam[];
  /** Last offset + last size (0 without parameters). */
  readonly paramBytes: number;
  /**
   * The entry's `.reg` declarations in 32-bit registers (a 64-bit register is two, predicates
   * none), at most 255: the software GPU's register count for cuFuncGetAttribute(NUM_REGS) and its
   * occupancy. PTX registers are virtual, so this is what the PTX asks for, not what ptxas would
   * allocate.
   */
  readonly registers: number;
  /**
   * Threads a block may have at most, from the performance directives between the parameter list
   * and the body (`.maxntid x, y, z` or `.reqntid`, which nvcc emits for `__launch_bounds__`);
   * undefined when the entry has neither.
   */
  readonly maxThreads: number | undefined;
}

/** A module-scope `.global` or `.const` variable (`__device__`, `__constant__`). */
export interface PtxVariable {
  readonly name: string;
  readonly space: 'global' | 'const';
  readonly bytes: number;
  readonly align: number;
  /** Its initial bytes (zero-filled past what the initializer gives); undefined: all zeros. */
  readonly init: Uint8Array | undefined;
}

export interface PtxModule {
  /** `.version` as written, e.g. `9.0`. */
  readonly version: string;
  readonly target: string | undefined;
  readonly entries: ReadonlyMap<string, PtxEntry>;
  /** Variables the module defines (not `.extern` ones), by name. */
  readonly variables: ReadonlyMap<string, PtxVariable>;
}

const CALL = 'cuModuleLoadData';

/** Sizes of the PTX fundamental types a kernel parameter may have (PTX ISA, "Fundamental Types"). */
const TYPE_SIZES: Readonly<Record<string, number>> = {
  u8: 1, s8: 1, b8: 1,
  u16: 2, s16: 2, b16: 2, f16: 2, bf16: 2,
  u32: 4, s32: 4, b32: 4, f32: 4, f16x2: 4, bf16x2: 4,
  u64: 8, s64: 8, b64: 8, f64: 8,
};

/** The kernel parameter space is at most 32,764 bytes (CUDA 12.1+; 4,096 before). */
const MAX_PARAM_BYTES = 32_764;

const STATE_SPACES = new Set(['.global', '.const', '.local', '.shared']);

function invalid(detail: string): CudaError {
  return new CudaError('CUDA_ERROR_INVALID_PTX', CALL, detail);
}

/**
 * Removes `//` and `/* *\/` comments, keeping string literals (`.file 1 "a//b.cu"`) intact and
 * newlines in place so nothing after a comment shifts onto the previous line.
 */
export function stripPtxComments(text: string): string {
  let out = '';
  let i = 0;
  let copied = 0;
  const n = text.length;
  while (i < n) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22 /* " */) {
      i++;
      while (i < n && text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c /* \ */ ? 2 : 1;
      i++;
    } else if (ch === 0x2f /* / */ && text.charCodeAt(i + 1) === 0x2f) {
      out += text.slice(copied, i);
      const end = text.indexOf('\n', i);
      i = end === -1 ? n : end;
      copied = i;
    } else if (ch === 0x2f && text.charCodeAt(i + 1) === 0x2a /* * */) {
      out += text.slice(copied, i);
      const end = text.indexOf('*/', i + 2);
      if (end === -1) throw invalid('unterminated /* comment');
      const body = text.slice(i, end + 2);
      out += body.replace(/[^\n]/g, ' ');
      i = end + 2;
      copied = i;
    } else {
      i++;
    }
  }
  return out + text.slice(copied);
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/** Parses one `.param ...` declaration of an entry's parameter list. */
function parseParam(decl: string, entry: string): Omit<PtxParam, 'offset'> {
  const tokens = decl.trim().split(/\s+/);
  if (tokens[0] !== '.param') throw invalid(`${entry}: expected .param, found '${decl.trim()}'`);
  let align: number | undefined;
  let type: string | undefined;
  let pointer = false;
  let name: string | undefined;
  for (let t = 1; t < tokens.length; t++) {
    const token = tokens[t] ?? '';
    if (token === '.align') {
      const value = Number(tokens[++t]);
      if (!Number.isInteger(value) || value < 1 || value > 256 || (value & (value - 1)) !== 0) {
        throw invalid(`${entry}: bad .align in '${decl.trim()}'`);
      }
      // After `.ptr`, `.align` states the pointee's alignment, not the parameter's.
      if (!pointer) align = value;
    } else if (token === '.ptr') {
      pointer = true;
    } else if (pointer && STATE_SPACES.has(token)) {
      // `.ptr .global`: the pointee's state space; the parameter itself is still a .u64.
    } else if (token.startsWith('.') && type === undefined) {
      const bare = token.slice(1);
      if (TYPE_SIZES[bare] === undefined) throw invalid(`${entry}: unsupported parameter type ${token}`);
      type = bare;
    } else if (name === undefined) {
      // The name, possibly written `name[16]` or `name [16]`.
      name = tokens.slice(t).join('');
      break;
    }
  }
  if (type === undefined || name === undefined) throw invalid(`${entry}: incomplete parameter '${decl.trim()}'`);
  const elementSize = TYPE_SIZES[type] ?? 0;
  const match = /^([A-Za-z_$%][\w$%]*)(?:\[(\d+)\])?$/.exec(name);
  if (!match?.[1]) throw invalid(`${entry}: bad parameter name '${name}'`);
  const count = match[2] === undefined ? 1 : Number(match[2]);
  if (!Number.isSafeInteger(count) || count < 1 || count * elementSize > MAX_PARAM_BYTES) {
    throw invalid(`${entry}: bad parameter array size in '${name}'`);
  }
  if (pointer && elementSize !== 8) throw invalid(`${entry}: .ptr parameter '${match[1]}' is not 64-bit`);
  return { name: match[1], type, size: count * elementSize, align: align ?? elementSize };
}

/** Splits the text between an entry's parentheses into its declarations. */
function parseParamList(list: string, entry: string): PtxParam[] {
  const params: PtxParam[] = [];
  if (list.trim() === '') return params;
  let offset = 0;
  for (const decl of list.split(',')) {
    const param = parseParam(decl, entry);
    const at = alignUp(offset, param.align);
    params.push({ ...param, offset: at });
    offset = at + param.size;
  }
  if (offset > MAX_PARAM_BYTES) throw invalid(`${entry}: ${offset} bytes of parameters exceed ${MAX_PARAM_BYTES}`);
  return params;
}

const ENTRY = /\.entry\s+([A-Za-z_$%][\w$%]*)\s*(\()?/g;

/** 32-bit registers one `.reg` of each type takes (PTX ISA, "Fundamental Types"); predicates none. */
function registerWords(type: string): number {
  if (type === 'pred') return 0;
  const size = TYPE_SIZES[type] ?? (type === 'b128' ? 16 : 4);
  return Math.max(1, Math.ceil(size / 4));
}

/** Per-thread registers at most (sm_90: 255). */
const MAX_REGISTERS = 255;

/**
 * What an entry declares past its parameter list: the directives before its body, the 32-bit
 * registers its body declares (`.reg .b64 %rd<6>;` is six 64-bit registers, `.reg .f32 %f1, %f2;`
 * two), and the threads its `.maxntid` / `.reqntid` allow. The body is the brace block after `from`.
 */
function entryDetails(source: string, from: number, entry: string): { registers: number; maxThreads: number | undefined } {
  const open = source.indexOf('{', from);
  if (open === -1) throw invalid(`${entry}: no body`);
  let depth = 0;
  let close = -1;
  for (let i = open; i < source.length; i++) {
    const ch = source.charCodeAt(i);
    if (ch === 0x7b /* { */) depth++;
    else if (ch === 0x7d /* } */ && --depth === 0) {
      close = i;
      break;
    }
  }
  if (close === -1) throw invalid(`${entry}: unterminated body`);
  let words = 0;
  for (const m of source.slice(open, close).matchAll(/\.reg\s+(?:\.v\d\s+)?\.(\w+)\s+([^;]+);/g)) {
    const perRegister = registerWords(m[1] ?? '');
    for (const name of (m[2] ?? '').split(',')) {
      const count = /<(\d+)>\s*$/.exec(name.trim())?.[1];
      words += perRegister * (count === undefined ? 1 : Number(count));
    }
  }
  let maxThreads: number | undefined;
  const bound = /\.(?:maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?/.exec(source.slice(from, open));
  if (bound) maxThreads = Number(bound[1]) * Number(bound[2] ?? 1) * Number(bound[3] ?? 1);
  return { registers: Math.min(MAX_REGISTERS, words), maxThreads };
}

/** The text outside every brace block: module-scope statements only. */
function moduleScope(source: string): string {
  let out = '';
  let depth = 0;
  let copied = 0;
  for (let i = 0; i < source.length; i++) {
    const ch = source.charCodeAt(i);
    if (ch === 0x7b /* { */ && depth === 0 && /=\s*$/.test(source.slice(Math.max(copied, i - 64), i))) {
      // An initializer list (`= {1, 2}`, nested for arrays of arrays): part of its statement.
      let nest = 0;
      for (; i < source.length; i++) {
        const c = source.charCodeAt(i);
        if (c === 0x7b) nest++;
        else if (c === 0x7d && --nest === 0) break;
      }
    } else if (ch === 0x7b /* { */) {
      if (depth === 0) out += `${source.slice(copied, i)};`;
      depth++;
    } else if (ch === 0x7d /* } */ && depth > 0) {
      depth--;
      if (depth === 0) copied = i + 1;
    }
  }
  return depth === 0 ? out + source.slice(copied) : out;
}

/** Writes one initializer element of `type` (`42`, `-1`, `0x1f`, `0f3FC00000`, `0d4004...`, `1.5`). */
function writeElement(view: DataView, at: number, type: string, size: number, literal: string, name: string): void {
  const text = literal.trim();
  const float = type === 'f32' || type === 'f64' || type === 'f16' || type === 'bf16';
  let hex: string | undefined;
  if (/^0[fF][0-9a-fA-F]{8}$/.test(text) || /^0[dD][0-9a-fA-F]{16}$/.test(text)) hex = text.slice(2);
  if (hex !== undefined) {
    const bits = BigInt(`0x${hex}`);
    if (hex.length / 2 !== size) {
      // A 0f literal for a .f64 (or 0d for a .f32) is a value: convert it as PTX does.
      const value = hex.length === 8 ? new DataView(new Uint32Array([Number(bits)]).buffer).getFloat32(0, true)
        : new DataView(new BigUint64Array([bits]).buffer).getFloat64(0, true);
      if (size === 4) view.setFloat32(at, value, true);
      else if (size === 8) view.setFloat64(at, value, true);
      else throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', CALL, `${name}: a float initializer for a ${size}-byte element`);
      return;
    }
    for (let b = 0; b < size; b++) view.setUint8(at + b, Number((bits >> BigInt(8 * b)) & 0xffn));
    return;
  }
  if (/^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$/.test(text) && (float || /[.eE]/.test(text))) {
    const value = Number(text);
    if (size === 4) view.setFloat32(at, value, true);
    else if (size === 8) view.setFloat64(at, value, true);
    else throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', CALL, `${name}: a float initializer for a ${size}-byte element`);
    return;
  }
  if (/^[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)[uU]?$/.test(text)) {
    const negative = text.startsWith('-');
    const digits = text.replace(/^[+-]/, '').replace(/[uU]$/, '');
    const magnitude = BigInt(digits);
    const bits = BigInt.asUintN(8 * size, negative ? -magnitude : magnitude);
    for (let b = 0; b < size; b++) view.setUint8(at + b, Number((bits >> BigInt(8 * b)) & 0xffn));
    return;
  }
  // Addresses of other variables (`generic(x)`, `x+4`) would need a link step the sim does not have.
  throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', CALL, `${name}: the software GPU cannot initialize from '${text}'`);
}

const VARIABLE = /^((?:\.(?:visible|extern|weak|common)\s+)*)\.(global|const)\s+(?:\.align\s+(\d+)\s+)?(?:\.v([24])\s+)?\.(\w+)\s+([A-Za-z_$%][\w$%]*)((?:\s*\[\s*\d*\s*\])*)\s*(?:=\s*([\s\S]*))?$/;

/** The module-scope `.global` / `.const` variables, with their sizes and initial bytes. */
function parseVariables(source: string): Map<string, PtxVariable> {
  const variables = new Map<string, PtxVariable>();
  // The directives that end at their line rather than at a semicolon.
  const statements = moduleScope(source).replace(/^\s*\.(?:version|target|address_size|file)\b[^\n]*$/gm, ';');
  for (const raw of statements.split(';')) {
    const statement = raw.trim();
    if (!/^(?:\.(?:visible|extern|weak|common)\s+)*\.(?:global|const)\b/.test(statement)) continue;
    const m = VARIABLE.exec(statement);
    if (!m) throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', CALL, `the software GPU cannot read the declaration '${statement.slice(0, 80)}'`);
    if ((m[1] ?? '').includes('.extern')) continue;
    const space = m[2] === 'const' ? 'const' : 'global';
    const type = m[5] ?? '';
    const name = m[6] ?? '';
    const elementSize = TYPE_SIZES[type];
    if (elementSize === undefined) throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', CALL, `${name}: variables of type .${type} are not supported`);
    const size = elementSize * Number(m[4] ?? 1);
    const literals = m[8] === undefined ? [] : m[8].replace(/[{}]/g, ' ').split(',').map((l) => l.trim()).filter((l) => l !== '');
    let count = 1;
    let open = false;
    for (const dim of (m[7] ?? '').matchAll(/\[\s*(\d*)\s*\]/g)) {
      if (dim[1] === '') open = true;
      else count *= Number(dim[1]);
    }
    if (open) count *= Math.max(1, Math.ceil(literals.length / Math.max(1, count)));
    const bytes = count * size;
    if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > 2 ** 31) throw invalid(`${name}: bad size ${bytes}`);
    if (literals.length * elementSize > bytes) throw invalid(`${name}: ${literals.length} initializers for ${bytes} bytes`);
    let init: Uint8Array | undefined;
    if (literals.length > 0) {
      init = new Uint8Array(bytes);
      const view = new DataView(init.buffer);
      literals.forEach((literal, i) => {
        writeElement(view, i * elementSize, type, elementSize, literal, name);
      });
    }
    if (variables.has(name)) throw invalid(`duplicate variable ${name}`);
    const align = m[3] === undefined ? elementSize : Number(m[3]);
    variables.set(name, { name, space, bytes, align, init });
  }
  return variables;
}

/** Parses PTX text; throws CudaError CUDA_ERROR_INVALID_PTX when it has no .version or no entries. */
export function parsePtx(text: string): PtxModule {
  const source = stripPtxComments(text);
  const version = /^\s*\.version\s+(\d+\.\d+)\s*$/m.exec(source)?.[1];
  if (version === undefined) throw invalid('no .version directive');
  const target = /^\s*\.target\s+([^\n]+?)\s*$/m.exec(source)?.[1];
  const entries = new Map<string, PtxEntry>();
  for (const match of source.matchAll(ENTRY)) {
    const name = match[1] ?? '';
    let params: PtxParam[] = [];
    let bodyFrom = match.index + match[0].length;
    if (match[2] !== undefined) {
      const open = (match.index) + match[0].length;
      const close = source.indexOf(')', open);
      if (close === -1) throw invalid(`${name}: unterminated parameter list`);
      params = parseParamList(source.slice(open, close), name);
      bodyFrom = close;
    }
    if (entries.has(name)) throw invalid(`duplicate .entry ${name}`);
    const last = params.at(-1);
    entries.set(name, { name, params, paramBytes: last ? last.offset + last.size : 0, ...entryDetails(source, bodyFrom, name) });
  }
  if (entries.size === 0) throw invalid('no .entry in the module');
  return { version, target, entries, variables: parseVariables(source) };
}
