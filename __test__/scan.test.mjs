// --scan: references found from the files alone, the way Nix finds a build's references
// (the NAR of each path searched for the hash parts of the store paths present), must be
// exactly those Nix recorded (nix-store --dump-db) on every test closure: a self-reference,
// references in file contents, in binary data, in symlink targets, and ones that appear only
// as a bare 32-character hash, in a file's contents or as a file name. NarHash and NarSize
// from the same pass are Nix's. Also in a chroot store (--store-root), where real Nix then
// substitutes from the cache and registers the same references.
import test from 'ava';
import path from 'node:path';

import lib from '../dist/index.js';
import { readNarinfos } from './helpers/cache.mjs';
import {
  CLOSURE_NIX,
  buildFixtures,
  chrootLayout,
  cleanupTempDirs,
  closure,
  dumpDb,
  makeTempDir,
  nixBuild,
  nixCopyToStore,
  runCli,
  substitute,
} from './helpers/nix.mjs';

const { closureFromScan, loadClosure } = lib;

const fx = await buildFixtures();
const [hashOnly] = await nixBuild(CLOSURE_NIX, 'hashOnly');
const CLOSURES = {
  root: [fx.root],
  root2: [fx.root2],
  big: [fx.big],
  extra: [fx.extra],
  'hash-only': [hashOnly],
  'all at once': [fx.root, fx.root2, fx.big, hashOnly],
};
const ALL = await closure(CLOSURES['all at once']);
const RECORDED = await dumpDb(ALL);
const named = (suffix) => ALL.find((p) => p.endsWith(`-${suffix}`));

test.after.always(cleanupTempDirs);

/** The scanned closure equals what Nix recorded: the paths, each one's references, NarHash and NarSize. */
async function checkAgainstNix(t, scanned, roots) {
  t.deepEqual(scanned.paths.map((p) => p.path).sort(), await closure(roots), 'the closure');
  for (const info of scanned.paths) {
    const recorded = RECORDED.get(info.path);
    t.deepEqual(info.references, recorded.references, `${info.path}: references`);
    t.is(info.narHash, recorded.narHash, `${info.path}: NarHash`);
    t.is(info.narSize, recorded.narSize, `${info.path}: NarSize`);
    t.deepEqual(info.sigs, []);
    t.false('deriver' in info || 'ca' in info, `${info.path}: no deriver nor CA is guessed`);
  }
}

for (const [name, roots] of Object.entries(CLOSURES)) {
  test(`${name}: the references Nix recorded, found by scanning /nix/store`, async (t) => {
    const scanned = await closureFromScan(roots, '/nix/store');
    t.is(scanned.storeDir, '/nix/store');
    await checkAgainstNix(t, scanned, roots);
  });
}

test('the corner cases are in the closures scanned, and found', async (t) => {
  const scanned = new Map((await closureFromScan(CLOSURES['all at once'], '/nix/store')).paths.map((p) => [p.path, p]));
  const refs = (suffix) => scanned.get(named(suffix)).references;
  t.true(refs('lib').includes(named('lib')), 'a self-reference');
  t.deepEqual(refs('hash-only'), [named('empty-file'), named('single-exec')].sort(), 'bare hashes, in contents and a file name');
  t.true(refs('symlink-path').includes(named('tree')), 'a symlink target');
  t.true(refs('app').includes(named('fod-rec')), 'a symlink target inside a tree');
  t.true(refs('app').includes(named('fod-flat')), 'a path inside random binary data');
  t.deepEqual(refs('symlink-dangling'), [], 'no reference');
});

test('a chroot store: --store-root, roots given by their files; real Nix substitutes from the cache and registers the same references', async (t) => {
  const store = path.join(makeTempDir('narcache-scan-store-'), 'root');
  const roots = [fx.root, hashOnly];
  await nixCopyToStore(store, roots);
  const { storeRoot } = chrootLayout(store);
  const byFile = roots.map((r) => path.join(storeRoot, path.basename(r), ...(r === fx.root ? ['deps'] : [])));
  const scanned = await loadClosure({ kind: 'scan' }, byFile, { storeDir: '/nix/store', storeRoot });
  await checkAgainstNix(t, scanned, roots);

  const cache = makeTempDir('narcache-scan-cache-');
  const r = await runCli(['build', '--scan', '--store-root', storeRoot, ...byFile, '-o', cache]);
  t.is(r.code, 0, r.stderr);
  t.is((await readNarinfos(cache)).size, scanned.paths.length);
  const sub = await substitute(cache, roots);
  t.is(sub.copy.code, 0, sub.copy.stderr);
  t.is(sub.verify.code, 0, sub.verify.stderr);
  const registered = await dumpDb(scanned.paths.map((p) => p.path), { store: sub.store });
  for (const info of scanned.paths) {
    t.deepEqual(registered.get(info.path).references, RECORDED.get(info.path).references, `${info.path}: registered references`);
  }
});

test('a root that is not in the store: one line', async (t) => {
  const missing = `/nix/store/${'0'.repeat(32)}-narcache-scan-missing`;
  const r = await runCli(['build', '--scan', missing, '-o', makeTempDir('narcache-scan-err-')]);
  t.not(r.code, 0);
  t.is(r.stderr, `narcache: ${path.basename(missing)}: not a store path in /nix/store\n`);
});
