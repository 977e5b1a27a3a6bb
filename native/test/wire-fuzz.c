/* Deterministic mutation fuzzing of the C decoder, run under ASan + UBSan by `make -C native test`
 * (and so by npm test, test/unit/native-sanitizers.test.ts). For every message, request, reply and
 * error reply, it builds valid frames from random values by the message's signature, checks that
 * each decodes and re-encodes to the same bytes, then mutates it: bit flips, truncations, trailing
 * bytes, every length and count word set to oversize and boundary values, bad header lengths,
 * flags and opcodes, and random garbage. A mutant must never crash or leak; one that decodes must
 * re-encode to exactly its bytes; truncations, trailing bytes and lengths past the end must be
 * refused. Usage: wire-fuzz [rounds] [seed] [corpus-dir]; it prints what it did. With corpus-dir,
 * the valid frames of the first round are also written there, one file each, as the seed corpus
 * of the libFuzzer target (fuzz-wire.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire-check.h"

static uint64_t rng_state;

static uint64_t next(void) {
  /* splitmix64: deterministic for a seed, so a failure reproduces. */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint32_t below(uint32_t n) { return n ? (uint32_t)(next() % n) : 0; }

/* Offsets (in the frame) of the length and count words the generator wrote. */
static size_t length_words[4096];
static size_t n_length_words;

static const char *skip_type(const char *sig) {
  if (*sig == '[') return skip_type(sig + 1);
  if (*sig == '{') {
    sig++;
    while (*sig != '}') sig = skip_type(sig);
    return sig + 1;
  }
  return sig + 1;
}

static void note_length(omps_writer_t *w) {
  if (n_length_words < sizeof(length_words) / sizeof(length_words[0])) length_words[n_length_words++] = w->len;
}

static void random_utf8(omps_writer_t *w) {
  uint8_t buf[256];
  size_t n = 0;
  uint32_t chars = below(24);
  for (uint32_t i = 0; i < chars; i++) {
    uint32_t kind = below(8);
    uint32_t cp;
    if (kind < 4) cp = 0x20 + below(0x5f);
    else if (kind == 4) cp = below(0x80); /* NULs and controls too */
    else if (kind == 5) cp = 0x80 + below(0x800 - 0x80);
    else if (kind == 6) {
      cp = 0x800 + below(0x10000 - 0x800);
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfeff; /* a BOM, anywhere in the string */
    } else cp = 0x10000 + below(0x110000 - 0x10000);
    if (cp < 0x80) buf[n++] = (uint8_t)cp;
    else if (cp < 0x800) {
      buf[n++] = (uint8_t)(0xc0 | cp >> 6);
      buf[n++] = (uint8_t)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      buf[n++] = (uint8_t)(0xe0 | cp >> 12);
      buf[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
      buf[n++] = (uint8_t)(0x80 | (cp & 0x3f));
    } else {
      buf[n++] = (uint8_t)(0xf0 | cp >> 18);
      buf[n++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
      buf[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
      buf[n++] = (uint8_t)(0x80 | (cp & 0x3f));
    }
  }
  note_length(w);
  omps_str_t s = {(const char *)buf, (uint32_t)n};
  omps_put_str(w, s);
}

static const char *random_value(const char *sig, omps_writer_t *w) {
  switch (*sig) {
    case 'B': omps_put_u8(w, (uint8_t)next()); return sig + 1;
    case 'H': omps_put_u16(w, (uint16_t)next()); return sig + 1;
    case 'I': omps_put_u32(w, (uint32_t)next()); return sig + 1;
    case 'i': omps_put_i32(w, (int32_t)(uint32_t)next()); return sig + 1;
    case 'Q':
    case 'q':
    case 'd': omps_put_u64(w, next()); return sig + 1; /* any bits: NaN payloads too */
    case '?': omps_put_bool(w, next() & 1); return sig + 1;
    case 's': random_utf8(w); return sig + 1;
    case 'y': {
      uint8_t buf[64];
      uint32_t n = below(sizeof(buf) + 1);
      for (uint32_t i = 0; i < n; i++) buf[i] = (uint8_t)next();
      note_length(w);
      omps_bytes_t b = {buf, n};
      omps_put_bytes(w, b);
      return sig + 1;
    }
    case '[': {
      uint32_t n = below(5);
      note_length(w);
      omps_put_count(w, n);
      for (uint32_t i = 0; i < n; i++) random_value(sig + 1, w);
      return skip_type(sig + 1);
    }
    case '{':
      sig++;
      while (*sig != '}') sig = random_value(sig, w);
      return sig + 1;
  }
  fprintf(stderr, "wire-fuzz: unknown signature letter %c\n", *sig);
  exit(2);
}

static void put_le32(uint8_t *at, uint32_t v) {
  for (int i = 0; i < 4; i++) at[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t mutants, accepted, refused;
static omps_writer_t check_out;

static void fail(const char *what, const uint8_t *frame, size_t len) {
  fprintf(stderr, "wire-fuzz: %s (frame of %zu bytes:", what, len);
  for (size_t i = 0; i < len && i < 96; i++) fprintf(stderr, " %02x", frame[i]);
  fprintf(stderr, ")\n");
  exit(1);
}

/* One mutant: never a crash; accepted means it re-encodes to itself. */
static omps_wire_status_t try_frame(const uint8_t *frame, size_t len) {
  mutants++;
  omps_wire_status_t st = wire_check_frame(frame, len, &check_out);
  if (st == OMPS_WIRE_OK) {
    accepted++;
    if (check_out.len != len || memcmp(check_out.buf, frame, len) != 0) fail("an accepted mutant re-encodes differently", frame, len);
  } else {
    refused++;
  }
  return st;
}

static void must_refuse(const uint8_t *frame, size_t len, const char *what) {
  if (try_frame(frame, len) == OMPS_WIRE_OK) fail(what, frame, len);
}

int main(int argc, char **argv) {
  long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 400;
  rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
  const char *corpus = argc > 3 ? argv[3] : NULL;
  uint64_t valid = 0;
  omps_writer_t w = {0};
  uint8_t *m = NULL;
  size_t m_cap = 0;

  for (long round = 0; round < rounds; round++) {
    for (size_t mi = 0; mi < OMPS_MESSAGE_COUNT; mi++) {
      const omps_message_desc_t *desc = &omps_messages[mi];
      for (int kind = 0; kind < 3; kind++) {
        /* 0: request, 1: reply, 2: error reply (ERROR_FIELDS). */
        const char *sig = kind == 0 ? desc->request_signature : kind == 1 ? desc->reply_signature : OMPS_ERROR_FIELDS_SIGNATURE;
        n_length_words = 0;
        omps_frame_begin(&w);
        while (*sig) sig = random_value(sig, &w);
        uint16_t flags = kind == 0 ? (uint16_t)(next() & OMPS_FLAG_NO_REPLY) : OMPS_FLAG_REPLY;
        uint32_t status = kind == 2 ? 1 + below(999) : 0;
        if (omps_frame_end(&w, desc->opcode, flags, (uint32_t)next(), status) != OMPS_WIRE_OK) {
          fprintf(stderr, "wire-fuzz: cannot encode a valid %s: %s\n", desc->name, omps_wire_status_name(w.status));
          return 1;
        }
        valid++;
        if (corpus && round == 0) {
          char path[4096];
          snprintf(path, sizeof(path), "%s/%s-%d", corpus, desc->name, kind);
          FILE *f = fopen(path, "wb");
          if (!f || fwrite(w.buf, 1, w.len, f) != w.len || fclose(f) != 0) {
            fprintf(stderr, "wire-fuzz: cannot write %s\n", path);
            return 2;
          }
        }
        if (try_frame(w.buf, w.len) != OMPS_WIRE_OK) fail("a valid frame is refused", w.buf, w.len);
        size_t len = w.len;
        size_t payload = len - OMPS_HEADER_BYTES;
        if (m_cap < len + 16) {
          m_cap = (len + 16) * 2;
          m = realloc(m, m_cap);
          if (!m) return 2;
        }

        /* Bit flips anywhere, the header included. */
        for (int t = 0; t < 8; t++) {
          memcpy(m, w.buf, len);
          int flips = 1 + (int)below(4);
          for (int f = 0; f < flips; f++) m[below((uint32_t)len)] ^= (uint8_t)(1u << below(8));
          try_frame(m, len);
        }
        /* Truncations: the header says the shorter length (a consistent frame whose payload ends
         * early) or keeps the old one (a frame cut short). */
        for (int t = 0; t < 4 && payload > 0; t++) {
          size_t cut = below((uint32_t)payload);
          memcpy(m, w.buf, OMPS_HEADER_BYTES + cut);
          must_refuse(m, OMPS_HEADER_BYTES + cut, "a frame cut short is accepted");
          put_le32(m + OMPS_FRAME_LENGTH_OFFSET, (uint32_t)cut);
          must_refuse(m, OMPS_HEADER_BYTES + cut, "a truncated payload is accepted");
        }
        /* Trailing bytes after the last field. */
        {
          size_t extra = 1 + below(8);
          memcpy(m, w.buf, len);
          for (size_t i = 0; i < extra; i++) m[len + i] = (uint8_t)next();
          put_le32(m + OMPS_FRAME_LENGTH_OFFSET, (uint32_t)(payload + extra));
          must_refuse(m, len + extra, "a payload with trailing bytes is accepted");
        }
        /* Every length and count word: oversize and boundary values. */
        for (size_t k = 0; k < n_length_words; k++) {
          size_t at = length_words[k];
          size_t left = len - at - 4;
          const uint32_t values[] = {0xffffffffu, OMPS_MAX_FIELD_LENGTH + 1u, OMPS_MAX_FIELD_LENGTH, 0x80000000u,
                                     (uint32_t)left + 1u, (uint32_t)left + 4096u, (uint32_t)left, 0u, (uint32_t)next()};
          for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
            memcpy(m, w.buf, len);
            put_le32(m + at, values[v]);
            omps_wire_status_t st = try_frame(m, len);
            if (values[v] > left && st == OMPS_WIRE_OK) fail("a length past the end of the payload is accepted", m, len);
          }
        }
        /* Header: oversize and lying lengths, unknown flags, other opcodes. */
        memcpy(m, w.buf, len);
        put_le32(m + OMPS_FRAME_LENGTH_OFFSET, OMPS_MAX_PAYLOAD + 1u + below(1000));
        must_refuse(m, len, "an oversize header length is accepted");
        memcpy(m, w.buf, len);
        m[OMPS_FRAME_FLAGS_OFFSET] |= (uint8_t)(0x8u << below(5));
        must_refuse(m, len, "unknown flags are accepted");
        memcpy(m, w.buf, len);
        uint16_t op = (uint16_t)(below(3) == 0 ? next() : omps_messages[below(OMPS_MESSAGE_COUNT)].opcode);
        m[OMPS_FRAME_OPCODE_OFFSET] = (uint8_t)op;
        m[OMPS_FRAME_OPCODE_OFFSET + 1] = (uint8_t)(op >> 8);
        try_frame(m, len);
        /* Garbage behind a plausible header. */
        {
          size_t glen = below((uint32_t)(len + 16));
          for (size_t i = 0; i < glen; i++) m[i] = (uint8_t)next();
          if (glen >= OMPS_HEADER_BYTES) {
            put_le32(m + OMPS_FRAME_LENGTH_OFFSET, (uint32_t)(glen - OMPS_HEADER_BYTES));
            m[OMPS_FRAME_FLAGS_OFFSET] &= OMPS_KNOWN_FLAGS;
            m[OMPS_FRAME_FLAGS_OFFSET + 1] = 0;
            op = omps_messages[below(OMPS_MESSAGE_COUNT)].opcode;
            m[OMPS_FRAME_OPCODE_OFFSET] = (uint8_t)op;
            m[OMPS_FRAME_OPCODE_OFFSET + 1] = (uint8_t)(op >> 8);
          }
          try_frame(m, glen);
        }
      }
    }
  }
  printf("wire-fuzz: %" PRIu64 " valid frames, %" PRIu64 " frames checked: %" PRIu64 " decoded and re-encoded to themselves, %" PRIu64 " refused\n",
         valid, mutants, accepted, refused);
  free(m);
  omps_writer_free(&w);
  omps_writer_free(&check_out);
  return 0;
}
