// NAR serialisation: for every path of the fixture closure (including the 300 MiB sparse
// file), narcache's NAR (packPath, compression 'none') must be byte-identical to
// `nix-store --dump`, and its narHash/narSize must equal what Nix registered.
import test from 'ava';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import lib from '../dist/index.js';
import { NIX32_RE, hashFile, nix32Decode, nix32Encode } from './helpers/cache.mjs';
import { buildFixtures, closure, dumpDb, nixDumpHash, runOk, tempDir } from './helpers/nix.mjs';

const { packPath } = lib;

const fx = await buildFixtures();
const paths = await closure([fx.root, fx.big]);
const db = await dumpDb(paths);

test('the fixture closure is what these tests expect', (t) => {
  // guards against a fixture that silently lost paths (then the loop below tests less)
  t.true(paths.length >= 19, `closure has ${paths.length} paths`);
  for (const name of ['-tree', '-big', '-single-file', '-symlink-path', '-ca-text.txt', '-fod-rec', '-lib']) {
    t.true(
      paths.some((p) => p.endsWith(name)),
      `closure contains *${name}`,
    );
  }
  t.true(db.get(fx.big).narSize > 300 * 1024 * 1024);
});

for (const p of paths) {
  const name = path.basename(p).slice(33);
  test(`NAR of ${name} equals nix-store --dump and Nix's NarHash/NarSize`, async (t) => {
    const dest = tempDir(t, 'narcache-nar-');
    const [res, theirs] = await Promise.all([packPath(p, dest, { compression: 'none' }), nixDumpHash(p)]);
    const rec = db.get(p);

    t.is(res.compression, 'none');
    t.regex(res.url, /^nar\/[0-9a-df-np-sv-z]{52}\.nar$/, 'url is nar/<nix32>.nar');

    const ours = await hashFile(path.join(dest, res.url));
    // byte-for-byte (streamed): same size, same sha256 as `nix-store --dump`
    t.is(ours.size, theirs.size, 'NAR size vs nix-store --dump');
    t.is(ours.hex, theirs.hex, 'NAR sha256 vs nix-store --dump');

    // the hashes reported by packPath, against Nix's database
    t.is(res.narHash, rec.narHash, 'narHash vs nix-store --dump-db');
    t.is(res.narSize, rec.narSize, 'narSize vs nix-store --dump-db');
    t.is(res.narHash, `sha256:${theirs.nix32}`, 'narHash vs hash of nix-store --dump');

    // for 'none' the file is the NAR
    t.is(res.fileHash, `sha256:${ours.nix32}`, 'fileHash is the sha256 of the written file');
    t.is(res.fileSize, ours.size, 'fileSize is the size of the written file');
    t.is(res.url, `nar/${ours.nix32}.nar`, 'file is named by its own hash');
  });
}

test('nix32Encode / nix32Decode agree with nix-hash --to-base32', async (t) => {
  const inputs = ['', 'abc', 'hello', ...paths.slice(0, 5)];
  for (const s of inputs) {
    const digest = createHash('sha256').update(s).digest();
    const r = await runOk('nix-hash', ['--type', 'sha256', '--to-base32', digest.toString('hex')]);
    const expected = r.stdout.trim();
    t.is(nix32Encode(digest), expected, 'test helper nix32 (sanity)');
    t.is(lib.nix32Encode(digest), expected, `nix32Encode(sha256(${JSON.stringify(s)}))`);
    t.regex(lib.nix32Encode(digest), NIX32_RE);
    t.true(Buffer.from(lib.nix32Decode(expected)).equals(digest), `nix32Decode(${expected})`);
  }
  // the 20-byte (160-bit) length Nix uses for store path hashes: 32 chars
  const h20 = createHash('sha1').update('x').digest();
  t.is(lib.nix32Encode(h20), nix32Encode(h20));
  t.is(lib.nix32Encode(h20).length, 32);
  t.true(Buffer.from(lib.nix32Decode(nix32Encode(h20))).equals(h20));
  // store path hash parts decode and re-encode to themselves
  for (const p of paths) {
    const hp = path.basename(p).slice(0, 32);
    t.is(lib.nix32Encode(Buffer.from(lib.nix32Decode(hp))), hp);
    t.true(Buffer.from(lib.nix32Decode(hp)).equals(nix32Decode(hp)));
  }
});

test('packPath refuses a destination inside the store, writing nothing there', async (t) => {
  const [p] = await closure([fx.root]);
  const error = await t.throwsAsync(packPath(p, path.join(fx.root, 'cache'), { compression: 'none' }));
  t.regex(error.message, /inside the Nix store \/nix\/store/);
  t.false(fs.existsSync(path.join(fx.root, 'cache')));
});
