#!/usr/bin/env node
// Generates the C side of the wire format from its one definition, the TypeScript schema
// (docs/protocol.md, "The C side"):
//   native/include/openmps-wire.h  frame layout and flags, PROTOCOL_VERSION, every opcode, a C
//                                  struct per request and reply, the encoder and decoder
//                                  declarations, the command ring's layout
//   native/common/openmps-wire.c   the encoders, decoders and the table of messages
// It reads the compiled schema (dist/src/protocol/*.js, dist/src/transport/command-ring.js: run
// `npm run build` first) and, for what those modules keep private (the frame header's byte offsets,
// the ring header's word indices and record layouts, the daemon's bounds in socket-bounds.ts, whose
// module loads the koffi bindings), the TypeScript source itself.
// Usage: node scripts/gen-native-wire.mjs [--check]; --check exits 1 when a committed file differs.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const check = process.argv.includes('--check');
const dist = (p) => join(root, 'dist', 'src', p);
for (const p of ['protocol/messages.js', 'protocol/frame.js', 'protocol/codec.js', 'transport/command-ring.js']) {
  if (!existsSync(dist(p))) {
    console.error(`gen-native-wire: ${dist(p)} is missing: run npm run build first`);
    process.exit(2);
  }
}
const messages = await import(pathToFileURL(dist('protocol/messages.js')).href);
const frame = await import(pathToFileURL(dist('protocol/frame.js')).href);
const codec = await import(pathToFileURL(dist('protocol/codec.js')).href);
const ring = await import(pathToFileURL(dist('transport/command-ring.js')).href);

// ---- names ----

const C_RESERVED = new Set(
  ('auto break case char const continue default do double else enum extern float for goto if inline int long ' +
    'register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while ' +
    'bool true false alignas alignof noreturn static_assert thread_local').split(' '),
);

/** camelCase to snake_case; a C keyword gets a trailing underscore (MEMCPY_HTOD's `inline`). */
function cName(name) {
  const snake = name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toLowerCase();
  return C_RESERVED.has(snake) ? `${snake}_` : snake;
}

const SCALAR_C = {
  u8: 'uint8_t',
  u16: 'uint16_t',
  u32: 'uint32_t',
  i32: 'int32_t',
  u64: 'uint64_t',
  i64: 'int64_t',
  f64: 'double',
  bool: 'bool',
  str: 'omps_str_t',
  bytes: 'omps_bytes_t',
};

// Nested structs are named by the field that first holds them; the same schema object (DEVICE_INFO,
// LIMITS, reused by several messages) is one C type.
const structNames = new Map(); // Fields object -> C type name (without _t)
const structOrder = []; // [name, fields], dependencies first
const usedNames = new Set();

function nameStruct(fields, hint) {
  const known = structNames.get(fields);
  if (known) return known;
  let name = `omps_${hint}`;
  for (let i = 2; usedNames.has(name); i++) name = `omps_${hint}${i}`;
  usedNames.add(name);
  structNames.set(fields, name);
  for (const [key, type] of Object.entries(fields)) visitType(type, cName(key).replace(/_$/, ''));
  structOrder.push([name, fields]);
  return name;
}

function visitType(type, hint) {
  if (typeof type === 'string') {
    if (!(type in SCALAR_C)) throw new Error(`unknown field type ${type}`);
    return;
  }
  if ('list' in type) {
    visitType(type.list, `${hint}_item`);
    return;
  }
  nameStruct(type.struct, hint);
}

function cType(type) {
  if (typeof type === 'string') return SCALAR_C[type];
  if ('struct' in type) return `${structNames.get(type.struct)}_t`;
  throw new Error('lists have no single C type');
}

/** Struct members for a field set: a list is a count and a pointer to its elements. */
function members(fields) {
  const out = [];
  for (const [key, type] of Object.entries(fields)) {
    const n = cName(key);
    if (typeof type === 'object' && 'list' in type) {
      if (typeof type.list === 'object' && 'list' in type.list) throw new Error(`${key}: lists of lists are not generated`);
      out.push(`  uint32_t ${n.replace(/_$/, '')}_count;`);
      out.push(`  ${cType(type.list)} *${n};`);
    } else {
      out.push(`  ${cType(type)} ${n};`);
    }
  }
  // C11 has no empty structs; the member is never encoded.
  if (out.length === 0) out.push('  char unused_;');
  return out;
}

// ---- encode / decode bodies ----

function putValue(type, expr, indent) {
  if (typeof type === 'string') return [`${indent}omps_put_${type}(w, ${expr});`];
  if ('struct' in type) return [`${indent}put_${structNames.get(type.struct)}(w, &${expr});`];
  throw new Error('nested list');
}

function encodeBody(fields, v) {
  const lines = [];
  for (const [key, type] of Object.entries(fields)) {
    const n = cName(key);
    if (typeof type === 'object' && 'list' in type) {
      const count = `${v}->${n.replace(/_$/, '')}_count`;
      lines.push(`  omps_put_count(w, ${count});`);
      lines.push(`  for (uint32_t i = 0; i < ${count} && w->status == OMPS_WIRE_OK; i++) {`);
      lines.push(...putValue(type.list, `${v}->${n}[i]`, '    '));
      lines.push('  }');
    } else {
      lines.push(...putValue(type, `${v}->${n}`, '  '));
    }
  }
  return lines;
}

function getValue(type, expr, indent) {
  if (typeof type === 'string') return [`${indent}if (!omps_get_${type}(r, &${expr})) return false;`];
  if ('struct' in type) return [`${indent}if (!get_${structNames.get(type.struct)}(r, &${expr})) return false;`];
  throw new Error('nested list');
}

function decodeBody(fields, v) {
  const lines = [];
  for (const [key, type] of Object.entries(fields)) {
    const n = cName(key);
    if (typeof type === 'object' && 'list' in type) {
      const count = `${v}->${n.replace(/_$/, '')}_count`;
      // Through a void * rather than a cast of &member to void **, which would break aliasing rules.
      lines.push('  {', '    void *items = NULL;');
      lines.push(`    if (!omps_get_list(r, &${count}, &items, sizeof(*${v}->${n}))) return false;`);
      lines.push(`    ${v}->${n} = items;`, '  }');
      lines.push(`  for (uint32_t i = 0; i < ${count}; i++) {`);
      lines.push(...getValue(type.list, `${v}->${n}[i]`, '    '));
      lines.push('  }');
    } else {
      lines.push(...getValue(type, `${v}->${n}`, '  '));
    }
  }
  return lines;
}

// ---- signatures: a field list in one character per type, for code that walks any message ----

const SIGNATURE = { u8: 'B', u16: 'H', u32: 'I', i32: 'i', u64: 'Q', i64: 'q', f64: 'd', bool: '?', str: 's', bytes: 'y' };

function signatureOf(type) {
  if (typeof type === 'string') return SIGNATURE[type];
  if ('list' in type) return `[${signatureOf(type.list)}`;
  return `{${signature(type.struct)}}`;
}

/** Each field's letter in order; `[` + element for a list, `{...}` for a struct. */
function signature(fields) {
  return Object.values(fields).map(signatureOf).join('');
}

// ---- the sources' private constants ----

const frameSource = readFileSync(join(root, 'src', 'protocol', 'frame.ts'), 'utf8');
/** The header's fields and byte offsets, as encodeFrame writes them. */
function frameOffsets() {
  const body = /export function encodeFrame[\s\S]*?\n}/.exec(frameSource)?.[0];
  if (!body) throw new Error('no encodeFrame in frame.ts');
  const names = { 'payload.length': 'LENGTH', opcode: 'OPCODE', flags: 'FLAGS', 'requestId >>> 0': 'REQUEST_ID', 'status >>> 0': 'STATUS' };
  const out = [];
  for (const m of body.matchAll(/view\.setUint(\d+)\((\d+), ([^,]+), true\)/g)) {
    const name = names[m[3]];
    if (!name) throw new Error(`frame.ts writes an unknown header field ${m[3]}`);
    out.push({ name, offset: Number(m[2]), bytes: Number(m[1]) / 8 });
  }
  const end = Math.max(...out.map((f) => f.offset + f.bytes));
  if (out.length !== 5 || end !== frame.HEADER_BYTES) throw new Error(`frame header fields end at ${end}, HEADER_BYTES is ${frame.HEADER_BYTES}`);
  return out;
}

const ringSource = readFileSync(join(root, 'src', 'transport', 'command-ring.ts'), 'utf8');
/** Top-level `const NAME = <integer expression>;` of a source file, exported or not, evaluated. */
function constantsOf(text) {
  const values = new Map();
  for (const m of text.matchAll(/^(?:export )?const ([A-Z][A-Z0-9_]*) = ([^;\n]+);/gm)) {
    let expr = m[2].replace(/\/\/.*$/, '').trim();
    expr = expr.replace(/[A-Z][A-Z0-9_]*/g, (id) => (values.has(id) ? String(values.get(id)) : id));
    if (!/^[0-9x+\-*/() ]+$/.test(expr)) continue;
    values.set(m[1], Number(new Function(`return (${expr});`)()));
  }
  return values;
}

/** command-ring.ts's constants, checked against what its module exports. */
function ringConstants() {
  const values = constantsOf(ringSource);
  for (const [k, v] of Object.entries(ring)) {
    if (typeof v !== 'number') continue;
    if (values.has(k) && values.get(k) !== v) throw new Error(`${k}: source says ${values.get(k)}, module ${v}`);
    values.set(k, v);
  }
  return values;
}

/** A record's word layout from the layout comment at the top of command-ring.ts. */
function recordLayout(kind, expectBytes) {
  const comment = ringSource
    .split('\n')
    .filter((l) => l.startsWith('//'))
    .map((l) => l.slice(2).trim())
    .join(' ');
  const m = new RegExp(`${kind}:\\s*\\[([^\\]]*)\\]`).exec(comment);
  if (!m) throw new Error(`no ${kind} record layout in command-ring.ts`);
  const words = m[1].split(',').map((w) => w.trim().replace(/ \(.*\)$/, ''));
  if (words.length * 4 !== expectBytes) throw new Error(`${kind} layout has ${words.length} words, expected ${expectBytes / 4}`);
  return words;
}

// ---- emit ----

const header = [];
const source = [];
const hex = (n, w = 4) => `0x${n.toString(16).padStart(w, '0')}`;
const banner = [
  '/* Generated by scripts/gen-native-wire.mjs from src/protocol (messages, frame, codec) and src/transport',
  ' * (command-ring.ts, socket-bounds.ts).',
  ' * Do not edit: change the TypeScript schema and run `npm run build && node scripts/gen-native-wire.mjs`.',
  ' * docs/protocol.md, "The C side", says what this is and how it is kept equal to the TypeScript. */',
];

header.push(...banner, '#ifndef OPENMPS_WIRE_H', '#define OPENMPS_WIRE_H', '', '#include "openmps-codec.h"', '');
header.push('#ifdef __cplusplus', 'extern "C" {', '#endif', '');
header.push(`#define OMPS_PROTOCOL_VERSION ${messages.PROTOCOL_VERSION}`, '');
header.push('/* Frames (src/protocol/frame.ts). */');
header.push(`#define OMPS_HEADER_BYTES ${frame.HEADER_BYTES}`);
for (const f of frameOffsets()) header.push(`#define OMPS_FRAME_${f.name}_OFFSET ${f.offset} /* u${f.bytes * 8} */`);
header.push(`#define OMPS_MAX_PAYLOAD ${frame.MAX_PAYLOAD}u`);
header.push(`#define OMPS_FLAG_REPLY ${hex(frame.FLAG_REPLY)}u`);
header.push(`#define OMPS_FLAG_NO_REPLY ${hex(frame.FLAG_NO_REPLY)}u`);
header.push(`#define OMPS_FLAG_NOTICE ${hex(frame.FLAG_NOTICE)}u`);
header.push(`#define OMPS_KNOWN_FLAGS ${hex(frame.KNOWN_FLAGS)}u`);
header.push('/* Field codec (src/protocol/codec.ts). */');
header.push(`#define OMPS_MAX_FIELD_LENGTH ${codec.MAX_FIELD_LENGTH}u`);
const bounds = constantsOf(readFileSync(join(root, 'src', 'transport', 'socket-bounds.ts'), 'utf8'));
header.push('/* Bounds of the daemon and servers (src/transport/socket-bounds.ts): the largest payload they take');
header.push(' * before SESSION_OPEN, and the length a client clips its command line to. */');
for (const k of ['CONTROL_MAX_PAYLOAD', 'MAX_COMMAND_BYTES']) {
  if (!bounds.has(k)) throw new Error(`socket-bounds.ts has no constant ${k}`);
  header.push(`#define OMPS_${k} ${bounds.get(k)}u`);
}
header.push('');

header.push('/* Opcodes (src/protocol/messages.ts). */');
const entries = Object.entries(messages.MESSAGES);
for (const [name, m] of entries) header.push(`#define OMPS_OP_${name} ${hex(m.opcode)}`);
header.push(`#define OMPS_MESSAGE_COUNT ${entries.length}`, '');

// Name nested structs: messages first, in order, then ERROR_FIELDS.
for (const [, m] of entries) {
  for (const fields of [m.request, m.reply]) for (const [key, type] of Object.entries(fields)) visitType(type, cName(key).replace(/_$/, ''));
}

header.push('/* Structures nested in messages. */');
for (const [name, fields] of structOrder) header.push(`typedef struct ${name} {`, ...members(fields), `} ${name}_t;`, '');

const shapes = []; // { c, fields, what }
for (const [name, m] of entries) {
  const base = `omps_${name.toLowerCase()}`;
  shapes.push({ c: `${base}_req`, fields: m.request, what: `${name} request`, erased: true });
  shapes.push({ c: `${base}_rep`, fields: m.reply, what: `${name} reply`, erased: true });
}
shapes.push({ c: 'omps_error_fields', fields: messages.ERROR_FIELDS, what: 'the payload of every reply whose status is not CUDA_SUCCESS (ERROR_FIELDS)' });

header.push('/* Messages: for each, the request and the reply, and their encoders and decoders. An encoder');
header.push(' * appends the payload to the writer (after omps_frame_begin) and returns its status; a decoder');
header.push(' * reads a whole payload (trailing bytes are refused) into *out, allocating from the arena. */');
for (const s of shapes) {
  header.push(`/* ${s.what} */`);
  header.push(`typedef struct ${s.c} {`, ...members(s.fields), `} ${s.c}_t;`);
  header.push(`omps_wire_status_t ${s.c.replace(/^omps_/, 'omps_encode_')}(omps_writer_t *w, const ${s.c}_t *v);`);
  header.push(
    `omps_wire_status_t ${s.c.replace(/^omps_/, 'omps_decode_')}(const uint8_t *payload, size_t len, omps_arena_t *arena, ${s.c}_t *out);`,
    '',
  );
}

header.push('/* Every message by opcode, with type-erased encoders and decoders (tests, tracing). */');
header.push('typedef omps_wire_status_t (*omps_encode_fn)(omps_writer_t *w, const void *v);');
header.push('typedef omps_wire_status_t (*omps_decode_fn)(const uint8_t *payload, size_t len, omps_arena_t *arena, void *out);');
header.push('typedef struct omps_message_desc {');
header.push('  const char *name;', '  uint16_t opcode;', '  size_t request_size;', '  size_t reply_size;');
header.push('  omps_encode_fn encode_request;', '  omps_decode_fn decode_request;', '  omps_encode_fn encode_reply;', '  omps_decode_fn decode_reply;');
header.push('  /* The fields in order, one letter each: B u8, H u16, I u32, i i32, Q u64, q i64, d f64, ? bool,');
header.push('   * s str, y bytes; [X a list of X, {...} a struct. */');
header.push('  const char *request_signature;', '  const char *reply_signature;');
header.push('} omps_message_desc_t;');
header.push('extern const omps_message_desc_t omps_messages[OMPS_MESSAGE_COUNT];');
header.push(`#define OMPS_ERROR_FIELDS_SIGNATURE "${signature(messages.ERROR_FIELDS)}"`);
header.push('/* NULL for an opcode no message has. */');
header.push('const omps_message_desc_t *omps_message_by_opcode(uint16_t opcode);', '');

const rc = ringConstants();
const need = (k) => {
  if (!rc.has(k)) throw new Error(`command-ring.ts has no constant ${k}`);
  return rc.get(k);
};
header.push('/* The command ring (src/transport/command-ring.ts): sizes in bytes, H_ are 32-bit word indices');
header.push(' * of the header, R_ word indices within a record. */');
for (const k of [
  'RING_MAGIC',
  'RING_HEADER_BYTES',
  'DEFAULT_RING_CAPACITY',
  'MIN_RING_CAPACITY',
  'MAX_RING_CAPACITY',
  'H_MAGIC',
  'H_CAPACITY',
  'H_TAIL',
  'H_HEAD',
  'H_SERVER_AWAKE',
  'H_COMPLETED',
  'H_WAKE_WANTED',
  'H_DEAD',
  'H_CLIENTS',
  'FAILURE_SLOTS',
  'FAILURE_SLOT_BYTES',
  'FAILURES_OFFSET',
  'FAILURE_TEXT_MAX',
  'DEAD_TEXT_OFFSET',
  'DEAD_TEXT_MAX',
  'RECORD_PAD',
  'RECORD_LAUNCH',
  'RECORD_SYNC',
  'LAUNCH_HEADER_BYTES',
  'SYNC_RECORD_BYTES',
  'SYNC_CONTEXT',
  'MAX_RING_PARAM_BYTES',
  'RECORD_HTOD',
  'RECORD_DTOH',
  'HTOD_HEADER_BYTES',
  'DTOH_RECORD_BYTES',
  'MAX_RING_COPY_BYTES',
]) {
  const v = need(k);
  const name = k.includes('RING') ? `OMPS_${k}` : `OMPS_RING_${k}`;
  header.push(`#define ${name} ${k === 'RING_MAGIC' ? `${hex(v, 8)}u` : v < 0 ? `(${v})` : String(v)}`);
}
header.push('#define OMPS_RING_R_SIZE 0', '#define OMPS_RING_R_TYPE 1');
for (const [kind, bytes] of [
  ['LAUNCH', need('LAUNCH_HEADER_BYTES')],
  ['SYNC', need('SYNC_RECORD_BYTES')],
  ['HTOD', need('HTOD_HEADER_BYTES')],
  ['DTOH', need('DTOH_RECORD_BYTES')],
]) {
  const words = recordLayout(kind, bytes);
  if (words[0] !== 'size' || Number(words[1]) !== need(`RECORD_${kind}`)) throw new Error(`${kind} record does not start [size, ${need(`RECORD_${kind}`)}]`);
  words.forEach((word, i) => {
    if (i < 2) return;
    if (/^-?\d+$/.test(word)) return; // the type word and reserved zeros
    header.push(`#define OMPS_RING_${kind}_R_${cName(word).toUpperCase()} ${i}`);
  });
}
header.push('', '#ifdef __cplusplus', '}', '#endif', '', '#endif', '');

// ---- the C source ----

source.push(...banner, '#include "openmps-wire.h"', '', '#include <string.h>', '');
for (const [name, fields] of structOrder) {
  source.push(`static void put_${name}(omps_writer_t *w, const ${name}_t *v) {`);
  source.push(...encodeBody(fields, 'v'));
  if (Object.keys(fields).length === 0) source.push('  (void)w;', '  (void)v;');
  source.push('}', '');
  source.push(`static bool get_${name}(omps_reader_t *r, ${name}_t *v) {`);
  source.push(...decodeBody(fields, 'v'));
  if (Object.keys(fields).length === 0) source.push('  (void)r;', '  (void)v;');
  source.push('  return true;', '}', '');
}
for (const s of shapes) {
  const enc = s.c.replace(/^omps_/, 'omps_encode_');
  const dec = s.c.replace(/^omps_/, 'omps_decode_');
  const empty = Object.keys(s.fields).length === 0;
  source.push(`omps_wire_status_t ${enc}(omps_writer_t *w, const ${s.c}_t *v) {`);
  if (empty) source.push('  (void)v;');
  source.push(...encodeBody(s.fields, 'v'), '  return w->status;', '}', '');
  source.push(`static bool read_${s.c}(omps_reader_t *r, ${s.c}_t *v) {`);
  if (empty) source.push('  (void)r;', '  (void)v;');
  source.push(...decodeBody(s.fields, 'v'), '  return true;', '}', '');
  source.push(`omps_wire_status_t ${dec}(const uint8_t *payload, size_t len, omps_arena_t *arena, ${s.c}_t *out) {`);
  source.push('  omps_reader_t r;', '  omps_reader_init(&r, payload, len, arena);', '  memset(out, 0, sizeof(*out));');
  source.push(`  read_${s.c}(&r, out);`, '  return omps_reader_end(&r);', '}', '');
  if (!s.erased) continue;
  source.push(`static omps_wire_status_t erased_${enc}(omps_writer_t *w, const void *v) { return ${enc}(w, v); }`);
  source.push(
    `static omps_wire_status_t erased_${dec}(const uint8_t *p, size_t len, omps_arena_t *a, void *out) { return ${dec}(p, len, a, out); }`,
    '',
  );
}
source.push('const omps_message_desc_t omps_messages[OMPS_MESSAGE_COUNT] = {');
for (const [name] of entries) {
  const base = `omps_${name.toLowerCase()}`;
  source.push(
    `  {"${name}", OMPS_OP_${name}, sizeof(${base}_req_t), sizeof(${base}_rep_t), erased_omps_encode_${name.toLowerCase()}_req,`,
    `   erased_omps_decode_${name.toLowerCase()}_req, erased_omps_encode_${name.toLowerCase()}_rep, erased_omps_decode_${name.toLowerCase()}_rep,`,
    `   "${signature(messages.MESSAGES[name].request)}", "${signature(messages.MESSAGES[name].reply)}"},`,
  );
}
source.push('};', '');
source.push('const omps_message_desc_t *omps_message_by_opcode(uint16_t opcode) {');
source.push('  for (size_t i = 0; i < OMPS_MESSAGE_COUNT; i++) {', '    if (omps_messages[i].opcode == opcode) return &omps_messages[i];', '  }');
source.push('  return NULL;', '}', '');

const outputs = [
  [join(root, 'native', 'include', 'openmps-wire.h'), header.join('\n')],
  [join(root, 'native', 'common', 'openmps-wire.c'), source.join('\n')],
];
let stale = false;
for (const [path, text] of outputs) {
  if (check) {
    const current = existsSync(path) ? readFileSync(path, 'utf8') : '';
    if (current !== text) {
      console.error(`gen-native-wire: ${path} is stale: run npm run build && node scripts/gen-native-wire.mjs`);
      stale = true;
    }
  } else {
    writeFileSync(path, text);
    console.log(`gen-native-wire: wrote ${path}`);
  }
}
if (stale) process.exit(1);
