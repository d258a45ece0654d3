// Incremental builds: a second run into the same cache writes nothing and touches no
// file; a new root that overlaps the first closure adds exactly the missing narinfos;
// a deleted or broken narinfo is written again, identical. The grown cache still works with Nix.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';

import { describeEntry, hashPart, listTree, narinfoFields, printable, readNarinfos } from './helpers/cache.mjs';
import {
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  makeTempDir,
  nixCopyTo,
  runCli,
  substitute,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const c1 = await closure([fx.root]);
const c2 = await closure([fx.root2]);
const onlyIn2 = c2.filter((p) => !c1.includes(p));
const shared = c2.filter((p) => c1.includes(p));

test.after.always(cleanupTempDirs);

test('fixture: root2 overlaps root and adds new paths', (t) => {
  t.true(shared.length >= 5, `shared ${shared.length}`);
  t.true(onlyIn2.length >= 2, `new ${onlyIn2.length}`);
});

// files: type, inode, size, mtime; directories: type, inode
const same = (snap) => printable(snap);

test.serial('second run of the same closure writes nothing and changes no file', async (t) => {
  const dest = makeTempDir('narcache-incr-');
  const first = await cliBuild([fx.root], dest, { compression: 'zstd' });
  t.is(first.summary.written, c1.length);
  t.is(first.summary.skipped, 0);
  const before = await listTree(dest);

  const second = await cliBuild([fx.root], dest, { compression: 'zstd' });
  t.is(second.summary.paths, c1.length, 'paths');
  t.is(second.summary.written, 0, 'written');
  t.is(second.summary.skipped, c1.length, 'skipped');
  const after = await listTree(dest);
  t.deepEqual(same(after), same(before), 'same files, inodes, sizes and mtimes');

  // a symlink into the store (like a nix-build result link) names the same closure
  const link = path.join(makeTempDir('narcache-link-'), 'result');
  await fs.symlink(fx.root, link);
  const third = await cliBuild([link], dest, { compression: 'zstd' });
  t.is(third.summary.paths, c1.length, 'paths via symlink');
  t.is(third.summary.written, 0, 'written via symlink');
  t.deepEqual(same(await listTree(dest)), same(before), 'nothing changed via symlink');
});

test.serial('an overlapping root adds only the missing narinfos', async (t) => {
  const dest = makeTempDir('narcache-incr2-');
  await cliBuild([fx.root], dest, { compression: 'xz' });
  const before = await listTree(dest);
  const infosBefore = await readNarinfos(dest);

  const r = await cliBuild([fx.root2], dest, { compression: 'xz' });
  t.is(r.summary.paths, c2.length, 'paths = closure of root2');
  t.is(r.summary.written, onlyIn2.length, 'written = paths not yet in the cache');
  t.is(r.summary.skipped, shared.length, 'skipped = paths already in the cache');

  const after = await listTree(dest);
  const infosAfter = await readNarinfos(dest);
  const expected = [...new Set([...c1, ...c2])].map(hashPart).sort();
  t.deepEqual([...infosAfter.keys()].sort(), expected, 'narinfos = union of both closures');

  // every file that existed is untouched (same inode, size, mtime)
  const now = {};
  for (const k of before.keys()) now[k] = describeEntry(after.get(k));
  t.deepEqual(now, printable(before), 'files of the first run are untouched');
  for (const [hp, text] of infosBefore) t.is(infosAfter.get(hp), text);

  // new files are exactly the new narinfos and their NARs
  const newFiles = [...after.keys()].filter((k) => !before.has(k) && after.get(k).type !== 'dir').sort();
  const newInfos = onlyIn2.map((p) => `${hashPart(p)}.narinfo`);
  const newNars = onlyIn2.map((p) => narinfoFields(infosAfter.get(hashPart(p)) ?? 'X: y\n').URL);
  t.deepEqual(newFiles, [...new Set([...newInfos, ...newNars])].sort(), 'only the missing narinfos (and NARs)');

  // and Nix can substitute the new root from the grown cache
  const res = await substitute(dest, fx.root2);
  t.is(res.copy.code, 0, res.copy.stderr);
  t.is(res.verify.code, 0, res.verify.stderr);
});

test.serial('a deleted narinfo is written again, identical; nothing else changes', async (t) => {
  const dest = makeTempDir('narcache-incr3-');
  await cliBuild([fx.root], dest, { compression: 'none' });
  const lib = c1.find((p) => p.endsWith('-lib'));
  const file = path.join(dest, `${hashPart(lib)}.narinfo`);
  const text = await fs.readFile(file, 'utf8');
  await fs.rm(file);
  const before = await listTree(dest);

  const r = await cliBuild([fx.root], dest, { compression: 'none' });
  t.is(r.summary.written, 1, 'written');
  t.is(r.summary.skipped, c1.length - 1, 'skipped');
  t.is(await fs.readFile(file, 'utf8'), text, 'the same narinfo again');

  // all other narinfos and nix-cache-info untouched (the NAR may be rewritten, same bytes)
  const after = await listTree(dest);
  const now = {};
  const was = {};
  for (const [k, v] of before) {
    if (v.type !== 'file' || k.startsWith('nar/')) continue;
    was[k] = describeEntry(v);
    now[k] = describeEntry(after.get(k));
  }
  t.deepEqual(now, was);

  // with compression none the cache equals nix copy's, narinfo for narinfo
  const theirs = makeTempDir('narcache-incr3-nix-');
  await nixCopyTo(theirs, [fx.root], 'none');
  t.deepEqual(Object.fromEntries(await readNarinfos(dest)), Object.fromEntries(await readNarinfos(theirs)));
});

// nix copy trusts any narinfo it finds; narcache, writing a directory, checks at no cost
// that one parses, is for its path and names a NAR file of its FileSize, and writes a
// broken one anew.
test('a re-run replaces broken entries: an empty narinfo, a missing NAR file, a short one, another path, a link out of nar/', async (t) => {
  const dest = makeTempDir('narcache-incr-broken-');
  await cliBuild([fx.root], dest);
  // dup-a and dup-b have one NAR file between them: damage to it would break both.
  const [empty, missing, short, other, linkedOut, linkedIn] = c1.filter((p) => p !== fx.root && !/-dup-/.test(p)).slice(0, 6);
  t.truthy(linkedIn, 'six paths to damage');
  const narinfo = (p) => path.join(dest, `${hashPart(p)}.narinfo`);
  const narOf = async (p) => path.join(dest, narinfoFields(await fs.readFile(narinfo(p), 'utf8')).URL);
  const before = await readNarinfos(dest);
  await fs.writeFile(narinfo(empty), '');
  await fs.rm(await narOf(missing));
  await fs.truncate(await narOf(short), 1);
  await fs.copyFile(narinfo(fx.root), narinfo(other));
  // A NAR file that is a link: to a copy outside nar/, it is not relied on; to one inside, it is.
  const relink = async (p, copy) => {
    const nar = await narOf(p);
    await fs.rename(nar, copy);
    await fs.symlink(copy, nar);
  };
  await relink(linkedOut, path.join(dest, 'outside'));
  await relink(linkedIn, path.join(dest, 'nar', 'inside'));

  const again = await cliBuild([fx.root], dest);
  t.is(again.summary.written, 5);
  t.is(again.summary.replaced, 5);
  t.is(again.summary.skipped, c1.length - 5);
  t.true((await fs.lstat(await narOf(linkedIn))).isSymbolicLink(), 'the link inside nar/ was kept');
  t.deepEqual(await readNarinfos(dest), before, 'every narinfo as it was first written');
  const text = await runCli(['build', fx.root, '-o', dest]);
  t.regex(text.stderr, /^narcache: 0 paths written, \d+ already present, into /m);
  await fs.writeFile(narinfo(empty), '');
  const one = await runCli(['build', fx.root, '-o', dest]);
  t.regex(one.stderr, /^narcache: 1 path written \(1 replacing a broken entry\), \d+ already present, into /m);
  const s = await substitute(dest, [fx.root]);
  t.is(s.copy.code, 0, s.copy.stderr);
  t.is(s.verify.code, 0, s.verify.stderr);
});
