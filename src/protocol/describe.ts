// Renders the message table of docs/protocol.md from MESSAGES, so the document cannot drift from
// the constants: a test compares the two, and scripts/gen-docs regenerates the table in place.
import type { FieldType, Fields } from './codec.js';
import { MESSAGES, type MessageName } from './messages.js';

export function describeType(type: FieldType): string {
  if (typeof type === 'string') return type;
  if ('list' in type) return `list<${describeType(type.list)}>`;
  return `{${describeFields(type.struct)}}`;
}

export function describeFields(fields: Fields): string {
  return Object.entries(fields)
    .map(([name, type]) => `${name}: ${describeType(type)}`)
    .join(', ');
}

/** One Markdown table row per message: opcode, name, request fields, reply fields. */
export function messageTableRows(): string[] {
  return (Object.entries(MESSAGES) as [MessageName, (typeof MESSAGES)[MessageName]][]).map(
    ([name, m]) =>
      `| 0x${m.opcode.toString(16).padStart(4, '0')} | ${name} | ${describeFields(m.request) || '-'} | ${describeFields(m.reply) || '-'} |`,
  );
}

export const TABLE_BEGIN = '<!-- messages:begin (generated from src/protocol/messages.ts by `npm run docs`) -->';
export const TABLE_END = '<!-- messages:end -->';

export function messageTable(): string {
  return [TABLE_BEGIN, '| opcode | message | request | reply |', '|---|---|---|---|', ...messageTableRows(), TABLE_END].join('\n');
}
