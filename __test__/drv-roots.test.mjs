// A .drv given as a root: its narinfos are what `nix copy --derivation` writes, line for
// line (the CA: text:sha256:… line included), so that Nix takes them from the cache with
// signatures enforced; and a .drv whose outputs were never built is a root like any other.
import test from 'ava';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { readNarinfos } from './helpers/cache.mjs';
import { buildFixtures, cleanupTempDirs, makeTempDir, nixGenerateKey, run, runCli, runOk } from './helpers/nix.mjs';

const fx = await buildFixtures();
const built = (await runOk('nix-store', ['--query', '--deriver', fx.root])).stdout.trim();
const keyDir = makeTempDir('narcache-drv-keys-');
const key = await nixGenerateKey('drv-1', keyDir);

test.after.always(cleanupTempDirs);

/** A derivation, instantiated and never built, unlike any other (its name is random). */
async function unbuiltDrv() {
  const dir = makeTempDir('narcache-drv-expr-');
  const file = path.join(dir, 'notbuilt.nix');
  const name = `notbuilt-${crypto.randomBytes(6).toString('hex')}`;
  await fsp.writeFile(
    file,
    `derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; ` +
      `args = [ "-c" "echo > $out" ]; src = builtins.toFile "src.txt" "${name}\\n"; }\n`,
  );
  return (await runOk('nix-instantiate', [file])).stdout.trim();
}

for (const [what, drv] of [
  ['a built one', async () => built],
  ['one whose outputs are not built', unbuiltDrv],
]) {
  test(`a .drv root, ${what}: narinfos as nix copy --derivation writes them, taken by Nix with signatures enforced`, async (t) => {
    const root = await drv();
    const ours = makeTempDir('narcache-drv-ours-');
    const r = await runCli(['build', root, '-o', ours, '--compression', 'none', '--sign-key-file', key.secretKeyFile]);
    t.is(r.code, 0, r.stderr);
    const theirs = makeTempDir('narcache-drv-nix-');
    await runOk('nix', ['copy', '--derivation', '--to', `file://${theirs}?compression=none&secret-key=${key.secretKeyFile}`, root]);
    const [a, b] = [await readNarinfos(ours), await readNarinfos(theirs)];
    t.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), 'the same paths');
    for (const [file, text] of b) t.is(a.get(file), text, file);
    t.regex(a.get(path.basename(root).slice(0, 32)), /^CA: text:sha256:[0-9a-df-np-sv-z]{52}$/m);

    const store = path.join(makeTempDir('narcache-drv-store-'), 'root');
    const copy = await run('nix', [
      'copy', '--derivation', '--from', `file://${ours}`, '--to', store,
      '--option', 'trusted-public-keys', key.publicKey.trim(), root,
    ]);
    t.is(copy.code, 0, copy.stderr);
    const check = await run('nix', ['store', 'verify', '--derivation', '--recursive', '--store', store, '--option', 'trusted-public-keys', key.publicKey.trim(), root]);
    t.is(check.code, 0, check.stderr);
  });
}
