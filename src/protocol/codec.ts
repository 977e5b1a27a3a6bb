// Binary field codec for openmps messages (docs/protocol.md, "Field types").
// Contract: every value is little-endian; strings and byte strings carry a u32 length first; lists
// carry a u32 count first. Every read is bounds-checked and a decode that does not consume the
// payload exactly is an error, so a malformed or truncated frame can never be half-read.
// This module uses only the platform's Uint8Array/DataView/TextEncoder: no Node-specific imports.

export type ScalarType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | 'i64' | 'f64' | 'bool' | 'str' | 'bytes';
export type FieldType = ScalarType | { readonly list: FieldType } | { readonly struct: Fields };
export type Fields = Readonly<Record<string, FieldType>>;

/** The TypeScript value of a field type: 64-bit integers are bigint, byte strings Uint8Array. */
export type ValueOf<T> = T extends 'u64' | 'i64'
  ? bigint
  : T extends 'bool'
    ? boolean
    : T extends 'str'
      ? string
      : T extends 'bytes'
        ? Uint8Array
        : T extends { readonly list: infer E }
          ? ValueOf<E>[]
          : T extends { readonly struct: infer F extends Fields }
            ? ObjectOf<F>
            : number;

export type ObjectOf<F extends Fields> = { -readonly [K in keyof F]: ValueOf<F[K]> };

/** Largest string, byte string or list a message may carry; the frame bound applies as well. */
export const MAX_FIELD_LENGTH = 64 * 1024 * 1024;

export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

const encoder = new TextEncoder();
// ignoreBOM: a string that begins with U+FEFF keeps it (by default TextDecoder drops it, so such a
// string would not round-trip, and the C codec, which keeps every byte, would disagree).
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class Writer {
  #buf: Uint8Array;
  #view: DataView;
  #pos = 0;

  constructor(initial = 256) {
    this.#buf = new Uint8Array(initial);
    this.#view = new DataView(this.#buf.buffer);
  }

  get length(): number {
    return this.#pos;
  }

  #reserve(n: number): number {
    const at = this.#pos;
    const need = at + n;
    if (need > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < need) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.#buf.subarray(0, at));
      this.#buf = next;
      this.#view = new DataView(next.buffer);
    }
    this.#pos = need;
    return at;
  }

  // Each writer reserves before it reads #view: a reserve that grows the buffer replaces the view
  // (`this.#view.setX(this.#reserve(n), v)` would write through the old one, out of its bounds).
  u8(v: number): void {
    const at = this.#reserve(1);
    this.#view.setUint8(at, v);
  }
  u16(v: number): void {
    const at = this.#reserve(2);
    this.#view.setUint16(at, v, true);
  }
  u32(v: number): void {
    const at = this.#reserve(4);
    this.#view.setUint32(at, v, true);
  }
  i32(v: number): void {
    const at = this.#reserve(4);
    this.#view.setInt32(at, v, true);
  }
  u64(v: bigint): void {
    const at = this.#reserve(8);
    this.#view.setBigUint64(at, v, true);
  }
  i64(v: bigint): void {
    const at = this.#reserve(8);
    this.#view.setBigInt64(at, v, true);
  }
  f64(v: number): void {
    const at = this.#reserve(8);
    this.#view.setFloat64(at, v, true);
  }
  bytes(v: Uint8Array): void {
    this.u32(v.length);
    // Reserve first: it may replace #buf, which must not be read before.
    const at = this.#reserve(v.length);
    this.#buf.set(v, at);
  }
  str(v: string): void {
    this.bytes(encoder.encode(v));
  }

  /** The bytes written so far (a view; copy it if the writer is reused). */
  finish(): Uint8Array {
    return this.#buf.subarray(0, this.#pos);
  }
}

export class Reader {
  readonly #buf: Uint8Array;
  readonly #view: DataView;
  #pos = 0;

  constructor(buf: Uint8Array) {
    this.#buf = buf;
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get remaining(): number {
    return this.#buf.length - this.#pos;
  }

  #take(n: number): number {
    if (n > this.#buf.length - this.#pos) {
      throw new DecodeError(`truncated payload: needs ${n} bytes at offset ${this.#pos}, has ${this.#buf.length - this.#pos}`);
    }
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  u8(): number {
    return this.#view.getUint8(this.#take(1));
  }
  u16(): number {
    return this.#view.getUint16(this.#take(2), true);
  }
  u32(): number {
    return this.#view.getUint32(this.#take(4), true);
  }
  i32(): number {
    return this.#view.getInt32(this.#take(4), true);
  }
  u64(): bigint {
    return this.#view.getBigUint64(this.#take(8), true);
  }
  i64(): bigint {
    return this.#view.getBigInt64(this.#take(8), true);
  }
  f64(): number {
    return this.#view.getFloat64(this.#take(8), true);
  }
  length(): number {
    const n = this.u32();
    if (n > MAX_FIELD_LENGTH) throw new DecodeError(`length ${n} exceeds the field limit ${MAX_FIELD_LENGTH}`);
    return n;
  }
  /** A copy, so the caller may keep it after the frame buffer is reused. */
  bytes(): Uint8Array {
    const n = this.length();
    const at = this.#take(n);
    return this.#buf.slice(at, at + n);
  }
  str(): string {
    const n = this.length();
    const at = this.#take(n);
    try {
      return decoder.decode(this.#buf.subarray(at, at + n));
    } catch {
      throw new DecodeError(`string at offset ${at} is not valid UTF-8`);
    }
  }
  end(): void {
    if (this.#pos !== this.#buf.length) {
      throw new DecodeError(`${this.#buf.length - this.#pos} trailing bytes after the payload`);
    }
  }
}

function checkInteger(value: unknown, min: number, max: number, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`field ${name}: ${String(value)} is not an integer in [${min}, ${max}]`);
  }
  return value;
}

export function writeField(w: Writer, type: FieldType, value: unknown, name: string): void {
  if (typeof type === 'object') {
    if ('list' in type) {
      if (!Array.isArray(value)) throw new TypeError(`field ${name}: expected a list`);
      w.u32(value.length);
      value.forEach((item: unknown, i) => {
        writeField(w, type.list, item, `${name}[${i}]`);
      });
      return;
    }
    writeFields(w, type.struct, value, name);
    return;
  }
  switch (type) {
    case 'u8':
      w.u8(checkInteger(value, 0, 0xff, name));
      return;
    case 'u16':
      w.u16(checkInteger(value, 0, 0xffff, name));
      return;
    case 'u32':
      w.u32(checkInteger(value, 0, 0xffffffff, name));
      return;
    case 'i32':
      w.i32(checkInteger(value, -0x80000000, 0x7fffffff, name));
      return;
    case 'u64':
      if (typeof value !== 'bigint' || value < 0n || value > 0xffffffffffffffffn) throw new RangeError(`field ${name}: expected a u64 bigint`);
      w.u64(value);
      return;
    case 'i64':
      if (typeof value !== 'bigint') throw new RangeError(`field ${name}: expected an i64 bigint`);
      w.i64(value);
      return;
    case 'f64':
      if (typeof value !== 'number') throw new TypeError(`field ${name}: expected a number`);
      w.f64(value);
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw new TypeError(`field ${name}: expected a boolean`);
      w.u8(value ? 1 : 0);
      return;
    case 'str':
      if (typeof value !== 'string') throw new TypeError(`field ${name}: expected a string`);
      w.str(value);
      return;
    case 'bytes':
      if (!(value instanceof Uint8Array)) throw new TypeError(`field ${name}: expected a Uint8Array`);
      w.bytes(value);
      return;
  }
}

export function writeFields(w: Writer, fields: Fields, value: unknown, name = 'payload'): void {
  if (typeof value !== 'object' || value === null) throw new TypeError(`${name}: expected an object`);
  const record = value as Record<string, unknown>;
  for (const [key, type] of Object.entries(fields)) {
    writeField(w, type, record[key], `${name}.${key}`);
  }
}

export function readField(r: Reader, type: FieldType): unknown {
  if (typeof type === 'object') {
    if ('list' in type) {
      const n = r.length();
      // Each element takes at least one byte, so a count beyond the remaining bytes is a lie.
      if (n > r.remaining) throw new DecodeError(`list of ${n} elements in ${r.remaining} bytes`);
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) out.push(readField(r, type.list));
      return out;
    }
    return readFields(r, type.struct);
  }
  switch (type) {
    case 'u8':
      return r.u8();
    case 'u16':
      return r.u16();
    case 'u32':
      return r.u32();
    case 'i32':
      return r.i32();
    case 'u64':
      return r.u64();
    case 'i64':
      return r.i64();
    case 'f64':
      return r.f64();
    case 'bool': {
      const b = r.u8();
      if (b > 1) throw new DecodeError(`bool byte ${b} is neither 0 nor 1`);
      return b === 1;
    }
    case 'str':
      return r.str();
    case 'bytes':
      return r.bytes();
  }
}

export function readFields(r: Reader, fields: Fields): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, type] of Object.entries(fields)) out[key] = readField(r, type);
  return out;
}

/** Encode an object by its schema into a fresh byte array. */
export function encodeFields<F extends Fields>(fields: F, value: ObjectOf<F>): Uint8Array {
  const w = new Writer();
  writeFields(w, fields, value);
  return w.finish();
}

/** Decode a whole payload by its schema; trailing bytes are an error. */
export function decodeFields<F extends Fields>(fields: F, payload: Uint8Array): ObjectOf<F> {
  const r = new Reader(payload);
  const out = readFields(r, fields);
  r.end();
  return out as ObjectOf<F>;
}
