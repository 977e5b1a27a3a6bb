#!/usr/bin/env node
// Regenerates the message table in docs/protocol.md from the compiled protocol (run after build).
// With --check it exits 1 when the document is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { messageTable, TABLE_BEGIN, TABLE_END } from '../dist/src/protocol/describe.js';

const path = new URL('../docs/protocol.md', import.meta.url);
const text = readFileSync(path, 'utf8');
const start = text.indexOf(TABLE_BEGIN);
const end = text.indexOf(TABLE_END);
if (start < 0 || end < 0) throw new Error('docs/protocol.md has no message table markers');
const next = text.slice(0, start) + messageTable() + text.slice(end + TABLE_END.length);
if (process.argv.includes('--check')) {
  if (next !== text) {
    console.error('docs/protocol.md is out of date: run npm run docs');
    process.exit(1);
  }
} else {
  writeFileSync(path, next);
}
