// Real Nix substitutes from narcache's caches: `nix copy --from file://OURS --to <fresh
// chroot store>` must succeed, `nix store verify --all` must pass, and what arrived must be
// registered exactly like in the local store. Also from a cache on a read-only mount.
import test from 'ava';
import path from 'node:path';

import {
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  dumpDb,
  makeTempDir,
  pathInfo,
  run,
  substitute,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const rootClosure = await closure([fx.root]);
const bigClosure = await closure([fx.root, fx.big]);
const localInfo = await pathInfo(bigClosure);
const localDb = await dumpDb(bigClosure);

test.after.always(cleanupTempDirs);

// the 300 MiB sparse path goes only into the zstd cache (one substitution case)
const CASES = { zstd: [fx.root, fx.big], xz: [fx.root], none: [fx.root] };

// One cache per test: Nix writes into a writable cache it reads from (it creates
// realisations/, log/, even nix-cache-info when missing), which would hide exactly what the
// read-only case is there to catch.
async function freshCache(compression, roots) {
  const dir = makeTempDir(`narcache-subst-${compression}-`);
  await cliBuild(roots, dir, { compression });
  return dir;
}

async function checkSubstituted(t, res, roots, expectedClosure) {
  t.is(res.copy.code, 0, `nix copy --from our cache failed:\n${res.copy.stderr}`);
  t.is(res.verify.code, 0, `nix store verify failed:\n${res.verify.stderr}`);
  if (res.copy.code !== 0) return;
  // exactly the closure arrived, registered as in the local store
  const got = await pathInfo([], { store: res.store, all: true });
  t.deepEqual([...got.keys()].sort(), expectedClosure, 'paths in the fresh store = closure of the roots');
  const gotDb = await dumpDb(expectedClosure, { store: res.store });
  for (const p of expectedClosure) {
    const mine = gotDb.get(p);
    const ref = localDb.get(p);
    t.is(mine?.narHash, ref.narHash, `${p} NarHash`);
    t.is(mine?.narSize, ref.narSize, `${p} NarSize`);
    t.deepEqual(mine?.references, ref.references, `${p} references`);
    t.is(mine?.deriver, ref.deriver, `${p} deriver`);
    t.is(got.get(p)?.ca, localInfo.get(p).ca, `${p} CA`);
  }
}

for (const compression of ['zstd', 'xz', 'none']) {
  const roots = CASES[compression];
  const label = roots.includes(fx.big) ? ' (with the 300 MiB sparse path)' : '';
  test(`${compression}: Nix substitutes the closure from our cache and verifies it${label}`, async (t) => {
    const cache = await freshCache(compression, roots);
    const res = await substitute(cache, roots);
    await checkSubstituted(t, res, roots, roots.includes(fx.big) ? bigClosure : rootClosure);
  });

  test(`${compression}: Nix substitutes from our cache on a read-only mount (chmod -R a-w)`, async (t) => {
    const cache = await freshCache(compression, [fx.root]);
    // chmod alone does not stop root: substitute() also mounts the cache read-only
    // (unshare -m, mount --bind, remount,ro), which is what makes a missing directory
    // such as realisations/ fatal for Nix.
    const chmod = await run('chmod', ['-R', 'a-w', cache]);
    t.is(chmod.code, 0, chmod.stderr);
    try {
      const res = await substitute(cache, fx.root, { readOnly: true });
      await checkSubstituted(t, res, [fx.root], rootClosure);
    } finally {
      await run('chmod', ['-R', 'u+w', cache]);
    }
  });
}

test('a subset of the closure substitutes on its own (lib and its references)', async (t) => {
  const cache = await freshCache('xz', [fx.root]);
  const libPath = rootClosure.find((p) => path.basename(p).endsWith('-lib'));
  const res = await substitute(cache, libPath);
  await checkSubstituted(t, res, [libPath], await closure([libPath]));
});
