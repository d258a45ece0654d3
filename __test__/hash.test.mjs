// Hash forms: every form Nix prints of a SHA-256 reads back as the same
// bytes, checked against Nix's own conversions (`nix hash to-*`).
import test from 'ava';
import { createHash } from 'node:crypto';

import { formatHash, normaliseHash, parseHash } from '../dist/index.js';
import { runOk } from './helpers/nix.mjs';

const nixHash = async (to, hash) =>
  (await runOk('nix', ['hash', to, '--type', 'sha256', hash])).stdout.trim();

for (const input of ['', 'abc', 'narcache']) {
  test(`sha256(${JSON.stringify(input)}) in base16, nix32, base64 and SRI`, async (t) => {
    const hex = createHash('sha256').update(input).digest('hex');
    const nix32 = await nixHash('to-base32', hex);
    const sri = await nixHash('to-sri', hex);
    const base64 = await nixHash('to-base64', hex);
    t.is(formatHash(Buffer.from(hex, 'hex')), `sha256:${nix32}`);
    for (const form of [hex, `sha256:${hex}`, nix32, `sha256:${nix32}`, sri, `sha256:${base64}`]) {
      t.is(parseHash(form).toString('hex'), hex, form);
      t.is(normaliseHash(form), `sha256:${nix32}`, form);
    }
  });
}

test('malformed hashes are refused with a message naming them', (t) => {
  for (const bad of ['', 'sha256:', 'sha256:xyz', 'md5:abc', 'e'.repeat(52), 'sha256-AAAA', '0'.repeat(63)]) {
    const error = t.throws(() => parseHash(bad), undefined, bad);
    t.true(error.message.includes(JSON.stringify(bad)), error.message);
  }
});
