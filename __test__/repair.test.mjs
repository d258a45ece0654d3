// `narcache verify --repair`, against real Nix: a NAR file deleted and another corrupted in
// a cache that `nix copy` wrote are written again from the local store (with narinfos
// naming the new files, whose xz bytes differ from Nix's), and Nix substitutes from the
// repaired cache; in a cache narcache wrote, the file comes back byte for byte under its
// name and the narinfo is untouched; a narinfo whose NarHash the store does not match is
// reported as not repaired.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';

import { contentSnapshot, hashPart, narinfoFields } from './helpers/cache.mjs';
import { buildFixtures, cleanupTempDirs, closure, cliBuild, makeTempDir, nixCopyTo, runCli, substitute } from './helpers/nix.mjs';

const fx = await buildFixtures();
const paths = await closure([fx.root]);
const tree = paths.find((p) => p.endsWith('-tree'));
const lib = paths.find((p) => p.endsWith('-lib'));

test.after.always(cleanupTempDirs);

const narinfoPath = (dir, p) => path.join(dir, `${hashPart(p)}.narinfo`);
const fieldsOf = (dir, p) => narinfoFields(fs.readFileSync(narinfoPath(dir, p), 'utf8'));

async function repair(dir) {
  const r = await runCli(['verify', '--repair', dir, '--json']);
  return { ...r, report: JSON.parse(r.stdout) };
}

test("a deleted and a corrupted NAR of nix copy's cache are restored; Nix substitutes from it", async (t) => {
  const dir = path.join(makeTempDir('narcache-repair-nix-'), 'cache');
  await nixCopyTo(dir, [fx.root], 'xz');
  fs.rmSync(path.join(dir, fieldsOf(dir, lib).URL));
  const corrupt = path.join(dir, fieldsOf(dir, tree).URL);
  const bytes = fs.readFileSync(corrupt);
  bytes[bytes.length >> 1] ^= 0xff;
  fs.writeFileSync(corrupt, bytes);
  const broken = await runCli(['verify', dir]);
  t.is(broken.code, 1, 'the damage is seen');

  const r = await repair(dir);
  t.is(r.code, 0, r.stderr);
  t.true(r.report.ok);
  t.deepEqual(r.report.problems, []);
  t.deepEqual(r.report.repaired.map((p) => p.storePath).sort(), [lib, tree].sort());
  const after = await runCli(['verify', dir, '--json']);
  t.is(after.code, 0, after.stdout);
  for (const p of [lib, tree]) t.true(fs.existsSync(path.join(dir, fieldsOf(dir, p).URL)), `${p}: its narinfo names a file that is there`);
  const sub = await substitute(dir, fx.root);
  t.is(sub.copy.code, 0, `nix copy --from file://: ${sub.copy.stderr}`);
  t.is(sub.verify.code, 0, `nix store verify: ${sub.verify.stderr}`);
});

test("in narcache's own cache the NAR comes back byte for byte and the narinfo is untouched", async (t) => {
  const dir = makeTempDir('narcache-repair-own-');
  await cliBuild([fx.root], dir, { compression: 'zstd' });
  const before = await contentSnapshot(dir);
  fs.rmSync(path.join(dir, fieldsOf(dir, tree).URL));
  const r = await repair(dir);
  t.is(r.code, 0, r.stderr);
  t.like(r.report.repaired, [{ storePath: tree, narinfoRewritten: false }]);
  const after = await contentSnapshot(dir);
  for (const [f, v] of before) if (f.endsWith('.narinfo') || f.startsWith('nar/')) t.is(after.get(f), v, f);
});

test('a narinfo the store does not match is reported as not repaired', async (t) => {
  const dir = makeTempDir('narcache-repair-wrong-');
  await cliBuild([lib], dir);
  const file = narinfoPath(dir, lib);
  const text = fs.readFileSync(file, 'utf8');
  const narHash = narinfoFields(text).NarHash;
  const other = narinfoFields(fs.readFileSync(narinfoPath(dir, paths.find((p) => p.endsWith('ca-text.txt'))), 'utf8')).NarHash;
  fs.writeFileSync(file, text.replace(narHash, other));
  const r = await repair(dir);
  t.is(r.code, 1);
  t.deepEqual(r.report.repaired, []);
  t.true(
    r.report.problems.some((p) => p.storePath === lib && p.problem.startsWith('not repaired: ')),
    JSON.stringify(r.report.problems),
  );
});
