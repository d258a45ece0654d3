// nix/mk-binary-cache.nix: a derivation whose builder is narcache itself (node from the
// machine, the sandbox off), fed by exportReferencesGraph through .attrs.json, no nix command
// inside. It builds with the Nix here, its output is the cache of the Nix-CLI source but for
// the Deriver lines (.attrs.json has none), real Nix substitutes from it where it lies (in the
// store, read-only), and nix-build --check finds a second build byte-identical. The derivation
// names the narcache it runs, so that a changed one is never handed an older one's output.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';

import { hashPart, narinfoFields, readNarinfos, withoutFields } from './helpers/cache.mjs';
import {
  CLOSURE_NIX,
  REPO,
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  makeTempDir,
  nixBuild,
  run,
  runOk,
  substitute,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const [hashOnly] = await nixBuild(CLOSURE_NIX, 'hashOnly');
const ROOTS = [fx.root, hashOnly];
const CLOSURE = await closure(ROOTS);
const referenceDir = makeTempDir('narcache-mkbc-ref-');
await cliBuild(ROOTS, referenceDir);
const REFERENCE = await readNarinfos(referenceDir);

const cacheExpr = (args = '') => `
  let fx = import ${CLOSURE_NIX}; in
  import ${REPO}/nix/mk-binary-cache.nix { rootPaths = [ fx.root fx.hashOnly ]; ${args} }`;

const nixBuildArgs = (args = '', extra = []) => ['-E', cacheExpr(args), '--no-out-link', ...extra];

test.after.always(cleanupTempDirs);

test.serial('builds; the cache of the Nix-CLI source without Deriver lines; Nix substitutes from it in the store', async (t) => {
  const r = await runOk('nix-build', nixBuildArgs());
  const out = r.stdout.trim();
  t.regex(out, /^\/nix\/store\/[0-9a-z]{32}-binary-cache$/);
  const narinfos = await readNarinfos(out);
  t.deepEqual([...narinfos.keys()].sort(), CLOSURE.map(hashPart).sort());
  for (const [h, reference] of REFERENCE) {
    t.is(narinfos.get(h), withoutFields(reference, new Set(['Deriver'])), h);
  }
  t.true([...narinfos.values()].some((n) => narinfoFields(n).CA), 'CA lines come from .attrs.json');
  t.true([...narinfos.values()].every((n) => narinfoFields(n).Compression === 'zstd'), 'zstd by default');

  const sub = await substitute(out, ROOTS);
  t.is(sub.copy.code, 0, sub.copy.stderr);
  t.is(sub.verify.code, 0, sub.verify.stderr);
});

test.serial('nix-build --check: a second build gives identical output', async (t) => {
  await runOk('nix-build', nixBuildArgs());
  const check = await run('nix-build', nixBuildArgs('', ['--check']));
  t.is(check.code, 0, check.stderr);
  t.notRegex(check.stderr, /not be deterministic|differs/);
});

test.serial('compression is passed through', async (t) => {
  const out = (await runOk('nix-build', nixBuildArgs('compression = "xz";'))).stdout.trim();
  const narinfos = await readNarinfos(out);
  t.is(narinfos.size, CLOSURE.length);
  t.true([...narinfos.values()].every((n) => narinfoFields(n).Compression === 'xz' && /\.nar\.xz$/.test(narinfoFields(n).URL)));
  const sub = await substitute(out, ROOTS);
  t.is(sub.copy.code, 0, sub.copy.stderr);
});

test('another narcache is another derivation: its package files are part of it', async (t) => {
  const pkg = makeTempDir('narcache-mkbc-pkg-');
  for (const part of ['dist', 'native', 'package.json']) {
    await fs.cp(path.join(REPO, part), path.join(pkg, part), { recursive: true });
  }
  const narcache = path.join(pkg, 'dist', 'bin.js');
  const drv = async () =>
    (await runOk('nix-instantiate', ['-E', cacheExpr(`narcache = "${narcache}";`)])).stdout.trim();
  const first = await drv();
  t.regex(first, /^\/nix\/store\/[0-9a-z]{32}-binary-cache\.drv$/);
  t.is(await drv(), first, 'the same files, the same derivation');
  const seen = new Set([first]);
  const native = (await fs.readdir(path.join(pkg, 'native'))).find((f) => f.endsWith('.node'));
  for (const file of [path.join('native', native), path.join('dist', 'schedule.js'), path.join('dist', 'publish', 'directory.js'), 'package.json']) {
    await fs.appendFile(path.join(pkg, file), '\n');
    const changed = await drv();
    t.false(seen.has(changed), `${file} changed`);
    seen.add(changed);
  }
});
