// `openmps run`'s line prefixer: whatever the chunking, every line comes out whole and prefixed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinePrefixer } from '../../src/cli/line-prefixer.js';

function collect(prefix = '[1] '): { prefixer: LinePrefixer; writes: string[] } {
  const writes: string[] = [];
  return { prefixer: new LinePrefixer(prefix, (t) => writes.push(t)), writes };
}

test('whole lines are prefixed and written together', () => {
  const { prefixer, writes } = collect();
  prefixer.push('one\ntwo\n');
  assert.deepEqual(writes, ['[1] one\n[1] two\n']);
});

test('a partial line waits for its newline; end() flushes it with one', () => {
  const { prefixer, writes } = collect();
  prefixer.push('hel');
  prefixer.push('lo');
  assert.deepEqual(writes, []);
  prefixer.push(' world\nnext');
  assert.deepEqual(writes, ['[1] hello world\n']);
  prefixer.end();
  assert.deepEqual(writes, ['[1] hello world\n', '[1] next\n']);
  prefixer.end();
  assert.equal(writes.length, 2, 'end() twice writes nothing more');
});

test('empty lines keep their prefix; a stream ending on a newline adds nothing at end()', () => {
  const { prefixer, writes } = collect();
  prefixer.push(Buffer.from('a\n\nb\n'));
  prefixer.end();
  assert.deepEqual(writes.join(''), '[1] a\n[1] \n[1] b\n');
});

test('every split of a stream, bytes of a UTF-8 character included, gives the same output', () => {
  const text = 'ünï\ncödé ✓ line two\n\n日本語 three\npartial…';
  const bytes = Buffer.from(text, 'utf8');
  const expected = '[3] ünï\n[3] cödé ✓ line two\n[3] \n[3] 日本語 three\n[3] partial…\n';
  for (let cut = 0; cut <= bytes.length; cut++) {
    for (const step of [1, 2, 3, 7]) {
      const { prefixer, writes } = collect('[3] ');
      prefixer.push(bytes.subarray(0, cut));
      for (let i = cut; i < bytes.length; i += step) prefixer.push(bytes.subarray(i, Math.min(bytes.length, i + step)));
      prefixer.end();
      assert.equal(writes.join(''), expected, `cut ${cut} step ${step}`);
      assert.ok(writes.every((w) => w.endsWith('\n')), 'only whole lines are written');
    }
  }
});

test('pushing after end() is a bug and says so', () => {
  const { prefixer } = collect();
  prefixer.end();
  assert.throws(() => {
    prefixer.push('x');
  });
});
