// A store path with thousands of references has a narinfo larger than 1 MiB (Nix sets no
// bound): narcache writes it, verifies it, signs it and every other narinfo of the cache,
// and Nix substitutes the closure from it with signatures enforced. Its 5,001 narinfos,
// written and signed in batches of hundreds, also need no more open files than a low
// ulimit -n allows.
import test from 'ava';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { hashPart } from './helpers/cache.mjs';
import { CLI, cleanupTempDirs, FIXTURES_DIR, makeTempDir, nixBuild, nixGenerateKey, run, runCli, substitute } from './helpers/nix.mjs';

const [root] = await nixBuild(path.join(FIXTURES_DIR, 'many-refs.nix'));
const key = await nixGenerateKey('many-refs-1', makeTempDir('narcache-many-refs-keys-'));

test.after.always(cleanupTempDirs);

test('a narinfo of more than 1 MiB is written, verified, signed, and substituted with signatures enforced', async (t) => {
  const cache = makeTempDir('narcache-many-refs-');
  const built = await runCli(['build', root, '-o', cache, '--json']);
  t.is(built.code, 0, built.stderr);
  const { size } = await fsp.stat(path.join(cache, `${hashPart(root)}.narinfo`));
  t.true(size > 1 << 20, `the narinfo has ${size} bytes`);
  const again = await runCli(['build', root, '-o', cache, '--json']);
  t.is(again.code, 0, again.stderr);
  t.like(JSON.parse(again.stdout), { written: 0, replaced: 0, skipped: 5001 });

  const verified = await runCli(['verify', cache, '--json']);
  t.is(verified.code, 0, verified.stdout);
  const report = JSON.parse(verified.stdout);
  t.true(report.ok);
  t.is(report.narinfos, 5001);

  const signed = await runCli(['sign', cache, '--sign-key-file', key.secretKeyFile, '--json']);
  t.is(signed.code, 0, signed.stderr);
  t.like(JSON.parse(signed.stdout), { narinfos: 5001, signed: 5001 });
  const trusted = await runCli(['verify', cache, '--trusted-public-key', key.publicKey]);
  t.is(trusted.code, 0, trusted.stdout);

  const s = await substitute(cache, [root], { trustedPublicKey: key.publicKey });
  t.is(s.copy.code, 0, s.copy.stderr);
  t.is(s.verify.code, 0, s.verify.stderr);
});

test('5,001 narinfos are built and signed with ulimit -n 64', async (t) => {
  const cache = makeTempDir('narcache-many-refs-ulimit-');
  const limited = (args) => run('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, CLI, ...args]);
  const built = await limited(['build', root, '-o', cache, '--json']);
  t.is(built.code, 0, built.stderr.slice(-2000));
  t.is(JSON.parse(built.stdout).written, 5001);
  const signed = await limited(['sign', cache, '--sign-key-file', key.secretKeyFile, '--json']);
  t.is(signed.code, 0, signed.stderr);
  t.like(JSON.parse(signed.stdout), { signed: 5001 });
  t.is((await runCli(['verify', cache, '--trusted-public-key', key.publicKey])).code, 0);
});
