// Signed caches, against real Nix: key files interchangeable with
// `nix-store --generate-binary-cache-key` in both directions, Sig lines byte-equal to those
// `nix copy --to 'file://…?secret-key=…'` writes, and caches that Nix substitutes from with
// signatures enforced (no --no-check-sigs) — and refuses when another key is trusted.
import test from 'ava';
import fsp from 'node:fs/promises';
import path from 'node:path';

import lib from '../dist/index.js';
import { listTree, narinfoFields, narinfoLines, printable, readNarinfos } from './helpers/cache.mjs';
import {
  buildFixtures,
  cleanupTempDirs,
  closure,
  makeTempDir,
  nixCopyTo,
  nixGenerateKey,
  runCli,
  runOk,
  substitute,
} from './helpers/nix.mjs';

const { DirectoryDestination, closureFromNix, writeCache } = lib;

const fx = await buildFixtures();
const rootClosure = await closure([fx.root]);
const keyDir = makeTempDir('narcache-keys-');
const nixKey = await nixGenerateKey('nix-made-1', keyDir);
const otherNixKey = await nixGenerateKey('other-1', keyDir);

test.after.always(cleanupTempDirs);

const FILE_KEYS = new Set(['URL', 'FileHash', 'FileSize']);

function checkOneLineError(t, r, what) {
  t.not(r.code, 0, `${what}: exit code must be non-zero`);
  const lines = r.stderr.replace(/\n$/, '').split('\n');
  t.is(lines.length, 1, `${what}: one stderr line, got:\n${r.stderr}`);
  t.regex(r.stderr, /^narcache: \S/, what);
  t.false(r.stderr.includes('    at '), `${what}: no stack trace`);
}

async function keygen(name, dir = makeTempDir('narcache-keygen-'), extra = []) {
  const secretKeyFile = path.join(dir, 'secret');
  const publicKeyFile = path.join(dir, 'public');
  const r = await runCli(['keygen', name, '--secret-key-file', secretKeyFile, '--public-key-file', publicKeyFile, ...extra]);
  return { r, secretKeyFile, publicKeyFile };
}

async function ourKey(name) {
  const k = await keygen(name);
  if (k.r.code !== 0) throw new Error(`narcache keygen failed: ${k.r.stderr}`);
  return { ...k, publicKey: await fsp.readFile(k.publicKeyFile, 'utf8') };
}

/** narcache build of the root closure (xz, as nix copy), signed with the given secret key files. */
async function signedBuild(keyFiles, compression = 'xz') {
  const dir = makeTempDir('narcache-signed-');
  const r = await runCli(['build', fx.root, '-o', dir, '-c', compression, ...keyFiles.flatMap((f) => ['--sign-key-file', f])]);
  if (r.code !== 0) throw new Error(`narcache build --sign-key-file failed:\n${r.stderr}`);
  return dir;
}

async function nixSignedCopy(secretKeyFile, compression = 'xz') {
  const dir = makeTempDir('narcache-nixsigned-');
  await nixCopyTo(dir, [fx.root], compression, { secretKeyFile });
  return dir;
}

/** narinfo text without the lines that name the compressed file. */
function withoutFileLines(text) {
  return narinfoLines(text).filter(([k]) => !FILE_KEYS.has(k));
}

/** Every narinfo of `ours` equals the one in `theirs` (Sig lines included), file lines aside. */
async function checkSameNarinfos(t, ours, theirs, { sigsPerPath = 1 } = {}) {
  const a = await readNarinfos(ours);
  const b = await readNarinfos(theirs);
  t.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), 'same narinfo files');
  t.is(a.size, rootClosure.length, 'one narinfo per path of the closure');
  for (const [hash, text] of b) {
    t.deepEqual(withoutFileLines(a.get(hash) ?? ''), withoutFileLines(text), `${hash}.narinfo`);
    t.is(narinfoFields(text).Sig.length, sigsPerPath, `${hash}.narinfo: Nix wrote ${sigsPerPath} Sig line(s)`);
  }
}

test('keygen writes a pair in Nix’s format: secret 0600, and Nix derives the same public key', async (t) => {
  const { r, secretKeyFile, publicKeyFile } = await keygen('cache.example.org-1');
  t.is(r.code, 0, r.stderr);
  const secret = await fsp.readFile(secretKeyFile, 'utf8');
  const pub = await fsp.readFile(publicKeyFile, 'utf8');
  t.is(r.stdout, `${pub}\n`, 'keygen prints the public key');
  t.is((await fsp.stat(secretKeyFile)).mode & 0o777, 0o600, 'secret key file mode');
  t.is((await fsp.stat(publicKeyFile)).mode & 0o777, 0o644, 'public key file mode');

  const nixSecret = await fsp.readFile(nixKey.secretKeyFile, 'utf8');
  const shape = (text) => {
    const m = /^([^:\s]+):([A-Za-z0-9+/]+=*)$/.exec(text);
    return m && { name: m[1], bytes: Buffer.from(m[2], 'base64').length };
  };
  t.deepEqual(shape(secret), { name: 'cache.example.org-1', bytes: 64 });
  t.deepEqual(shape(pub), { name: 'cache.example.org-1', bytes: 32 });
  t.deepEqual(shape(nixSecret), { name: 'nix-made-1', bytes: 64 }, 'Nix writes the same shape (no newline either)');
  t.deepEqual(shape(nixKey.publicKey), { name: 'nix-made-1', bytes: 32 });

  const derived = await runOk('nix', ['key', 'convert-secret-to-public'], { input: secret });
  t.is(derived.stdout.trim(), pub, 'nix key convert-secret-to-public agrees with our public key');
  // and the other way round: our reading of Nix's secret key gives Nix's public key
  t.is(lib.formatPublicKey(lib.publicKeyOf(await lib.readSecretKeyFile(nixKey.secretKeyFile))), nixKey.publicKey);
});

test('keygen never overwrites a key file without --force; with it, the secret file becomes 0600', async (t) => {
  const dir = makeTempDir('narcache-keygen-');
  const secretKeyFile = path.join(dir, 'secret');
  const publicKeyFile = path.join(dir, 'public');
  await fsp.writeFile(secretKeyFile, 'precious', { mode: 0o644 });
  let k = await keygen('k-1', dir);
  checkOneLineError(t, k.r, 'secret file exists');
  t.regex(k.r.stderr, /already exists/);
  t.is(await fsp.readFile(secretKeyFile, 'utf8'), 'precious', 'secret file untouched');
  await t.throwsAsync(fsp.access(publicKeyFile), undefined, 'no public key written either');

  await fsp.rm(secretKeyFile);
  await fsp.writeFile(publicKeyFile, 'precious-public');
  k = await keygen('k-1', dir);
  checkOneLineError(t, k.r, 'public file exists');
  await t.throwsAsync(fsp.access(secretKeyFile), undefined, 'no secret key written when the public file exists');
  t.is(await fsp.readFile(publicKeyFile, 'utf8'), 'precious-public');

  await fsp.writeFile(secretKeyFile, 'precious', { mode: 0o644 });
  k = await keygen('k-1', dir, ['--force']);
  t.is(k.r.code, 0, k.r.stderr);
  t.is((await fsp.stat(secretKeyFile)).mode & 0o777, 0o600, 'replaced secret key file is 0600');
  const pub = await fsp.readFile(publicKeyFile, 'utf8');
  const derived = await runOk('nix', ['key', 'convert-secret-to-public'], { input: await fsp.readFile(secretKeyFile) });
  t.is(derived.stdout.trim(), pub, 'the replaced files are a matching pair');
  t.deepEqual(
    (await fsp.readdir(dir)).sort(),
    ['public', 'secret'],
    'no temporary files left beside the keys',
  );

  for (const name of ['has:colon', 'has space', '']) {
    const bad = await keygen(name);
    checkOneLineError(t, bad.r, `key name ${JSON.stringify(name)}`);
    await t.throwsAsync(fsp.access(bad.secretKeyFile), undefined, `no secret key file for name ${JSON.stringify(name)}`);
  }
});

test('a key from nix-store --generate-binary-cache-key signs in narcache build exactly as nix copy signs', async (t) => {
  const [ours, theirs] = await Promise.all([signedBuild([nixKey.secretKeyFile]), nixSignedCopy(nixKey.secretKeyFile)]);
  await checkSameNarinfos(t, ours, theirs);
  const res = await substitute(ours, fx.root, { trustedPublicKey: nixKey.publicKey });
  t.is(res.copy.code, 0, `nix copy with signatures enforced:\n${res.copy.stderr}`);
  t.is(res.verify.code, 0, `nix store verify with the key:\n${res.verify.stderr}`);
});

test('a key from narcache keygen works in Nix: same Sig lines as nix copy with it, and Nix trusts only it', async (t) => {
  const key = await ourKey('ours-1');
  const [ours, theirs, unsigned] = await Promise.all([
    signedBuild([key.secretKeyFile]),
    nixSignedCopy(key.secretKeyFile),
    signedBuild([]),
  ]);
  await checkSameNarinfos(t, ours, theirs);

  const good = await substitute(ours, fx.root, { trustedPublicKey: key.publicKey });
  t.is(good.copy.code, 0, `nix copy trusting our key:\n${good.copy.stderr}`);
  t.is(good.verify.code, 0, `nix store verify trusting our key:\n${good.verify.stderr}`);

  const wrongKey = await substitute(ours, fx.root, { trustedPublicKey: otherNixKey.publicKey });
  t.not(wrongKey.copy.code, 0, 'nix copy must refuse a cache signed by a key it does not trust');
  t.regex(wrongKey.copy.stderr, /lacks a valid signature/);

  // the control: without signatures, the same command fails, so the success above is the signature's doing
  const none = await substitute(unsigned, fx.root, { trustedPublicKey: key.publicKey });
  t.not(none.copy.code, 0, 'nix copy must refuse an unsigned cache');
  t.regex(none.copy.stderr, /lacks a valid signature/);
});

test('build keeps the signatures the store holds, adds one per key after them and before CA', async (t) => {
  const key = await ourKey('ours-2');
  // Signatures as Nix itself made them, standing in for those a store holds.
  const nixSigned = await readNarinfos(await nixSignedCopy(nixKey.secretKeyFile));
  const withStoreSigs = async () => {
    const c = await closureFromNix([fx.root]);
    for (const info of c.paths) info.sigs = narinfoFields(nixSigned.get(path.basename(info.path).slice(0, 32))).Sig;
    return c;
  };
  const secret = await lib.readSecretKeyFile(key.secretKeyFile);
  const dir = makeTempDir('narcache-storesigs-');
  await writeCache(await withStoreSigs(), new DirectoryDestination(dir), { compression: 'xz', signKeys: [secret] });
  const ours = await readNarinfos(await signedBuild([key.secretKeyFile]));
  let withCa = 0;
  for (const [hash, text] of await readNarinfos(dir)) {
    const keys = narinfoLines(text).map(([k]) => k);
    const expectedOrder = [
      'StorePath', 'URL', 'Compression', 'FileHash', 'FileSize', 'NarHash', 'NarSize', 'References',
      ...(keys.includes('Deriver') ? ['Deriver'] : []), 'Sig', 'Sig', ...(keys.includes('CA') ? ['CA'] : []),
    ];
    t.deepEqual(keys, expectedOrder, `${hash}.narinfo: line order`);
    if (keys.includes('CA')) withCa++;
    t.deepEqual(
      narinfoFields(text).Sig,
      [...narinfoFields(nixSigned.get(hash)).Sig, ...narinfoFields(ours.get(hash)).Sig],
      `${hash}.narinfo: the store's signature, then ours`,
    );
  }
  t.true(withCa > 0, 'the closure has content-addressed paths');
  for (const trusted of [nixKey.publicKey, key.publicKey]) {
    const res = await substitute(dir, fx.root, { trustedPublicKey: trusted });
    t.is(res.copy.code, 0, `nix copy trusting ${trusted}:\n${res.copy.stderr}`);
  }

  // a key whose signature the store already holds adds no second, identical line
  const again = makeTempDir('narcache-storesigs-');
  const nixSecret = await lib.readSecretKeyFile(nixKey.secretKeyFile);
  await writeCache(await withStoreSigs(), new DirectoryDestination(again), { compression: 'xz', signKeys: [nixSecret] });
  for (const [hash, text] of await readNarinfos(again)) {
    t.deepEqual(narinfoFields(text).Sig, narinfoFields(nixSigned.get(hash)).Sig, `${hash}.narinfo: one Sig`);
  }
});

test('narcache sign adds the Sig lines nix copy writes, leaves signed narinfos alone, and Nix then trusts the cache', async (t) => {
  const key = await ourKey('ours-3');
  const cache = makeTempDir('narcache-tosign-');
  await nixCopyTo(cache, [fx.root], 'xz');
  const theirs = await nixSignedCopy(nixKey.secretKeyFile);

  let r = await runCli(['sign', cache, '--sign-key-file', nixKey.secretKeyFile, '--json']);
  t.is(r.code, 0, r.stderr);
  let summary = JSON.parse(r.stdout);
  t.like(summary, { narinfos: rootClosure.length, signed: rootClosure.length, alreadySigned: 0 });
  await checkSameNarinfos(t, cache, theirs);

  const before = await listTree(cache);
  r = await runCli(['sign', cache, '--sign-key-file', nixKey.secretKeyFile, '--json']);
  t.is(r.code, 0, r.stderr);
  summary = JSON.parse(r.stdout);
  t.like(summary, { signed: 0, alreadySigned: rootClosure.length });
  t.deepEqual(printable(await listTree(cache)), printable(before), 'a second run rewrites nothing');

  r = await runCli(['sign', cache, '--sign-key-file', nixKey.secretKeyFile, '--sign-key-file', key.secretKeyFile]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`signed ${rootClosure.length} narinfos, 0 were signed already`));
  const ours = await readNarinfos(await signedBuild([key.secretKeyFile]));
  for (const [hash, text] of await readNarinfos(cache)) {
    t.deepEqual(
      narinfoFields(text).Sig,
      [...narinfoFields((await readNarinfos(theirs)).get(hash)).Sig, ...narinfoFields(ours.get(hash)).Sig],
      `${hash}.narinfo: the first key's signature kept, the second's added`,
    );
  }
  t.deepEqual(
    [...(await listTree(cache)).keys()].filter((f) => path.basename(f).startsWith('.tmp-narcache-')),
    [],
    'no temporary files left',
  );
  const res = await substitute(cache, fx.root, { trustedPublicKey: key.publicKey });
  t.is(res.copy.code, 0, `nix copy trusting the key added by narcache sign:\n${res.copy.stderr}`);
  t.is(res.verify.code, 0, res.verify.stderr);

  const v = await runCli(['verify', cache, '--trusted-public-key', key.publicKey]);
  t.is(v.code, 0, `narcache verify with the key after sign:\n${v.stdout}${v.stderr}`);
});

test('bad keys and bad narinfos: one line, non-zero exit, nothing written', async (t) => {
  const dir = makeTempDir('narcache-badkeys-');
  const nixSecret = await fsp.readFile(nixKey.secretKeyFile, 'utf8');
  const [name, b64] = nixSecret.split(':');
  const bytes = Buffer.from(b64, 'base64');
  const files = {
    'a missing key file': path.join(dir, 'missing'),
    'a public key given as secret': nixKey.publicKeyFile,
    'a secret key whose public half is not its seed’s': await write(
      'halves',
      `${name}:${Buffer.concat([bytes.subarray(0, 32), Buffer.alloc(32, 7)]).toString('base64')}`,
    ),
    'a secret key with bad base64': await write('b64', `${name}:${'!'.repeat(88)}`),
    'a secret key without a name': await write('noname', b64),
  };
  async function write(file, text) {
    await fsp.writeFile(path.join(dir, file), text);
    return path.join(dir, file);
  }
  for (const [what, file] of Object.entries(files)) {
    const dest = path.join(makeTempDir('narcache-badkey-dest-'), 'cache');
    const r = await runCli(['build', fx.root, '-o', dest, '--sign-key-file', file]);
    checkOneLineError(t, r, `build with ${what}`);
    t.deepEqual((await listTree(dest)).size, 0, `build with ${what}: nothing written`);
    const cache = makeTempDir('narcache-badkey-sign-');
    await fsp.writeFile(path.join(cache, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    const s = await runCli(['sign', cache, '--sign-key-file', file]);
    checkOneLineError(t, s, `sign with ${what}`);
  }

  const cache = makeTempDir('narcache-badnarinfo-');
  await nixCopyTo(cache, [fx.root], 'xz');
  const garbage = path.join(cache, `${'0'.repeat(32)}.narinfo`);
  await fsp.writeFile(garbage, 'this is not a narinfo\n');
  const r = await runCli(['sign', cache, '--sign-key-file', nixKey.secretKeyFile]);
  checkOneLineError(t, r, 'sign a cache with a garbage narinfo');
  t.true(r.stderr.includes(garbage), `the message names the file: ${r.stderr}`);
  const none = await runCli(['sign', cache]);
  t.not(none.code, 0, 'sign without a key');
  t.regex(none.stderr, /^narcache: .*--sign-key-file/);
});

test('fingerprint, sign and verifySignature in the library agree with the Sig Nix wrote', async (t) => {
  const cache = await nixSignedCopy(nixKey.secretKeyFile, 'none');
  const publicKey = lib.parsePublicKey(nixKey.publicKey);
  const secretKey = await lib.readSecretKeyFile(nixKey.secretKeyFile);
  const other = lib.parsePublicKey(otherNixKey.publicKey);
  for (const [hash, text] of await readNarinfos(cache)) {
    const n = lib.parseNarinfo(text);
    const fp = lib.fingerprint(n);
    t.regex(fp, /^1;\/nix\/store\/[^;]+;sha256:[0-9a-df-np-sv-z]{52};\d+;(\/nix\/store\/[^,;]+(,|$))*$/, hash);
    t.deepEqual([lib.sign(fp, secretKey)], n.sigs, `${hash}: our signature of the fingerprint is Nix's`);
    t.true(lib.verifySignature(fp, n.sigs[0], [publicKey]), `${hash}: Nix's signature verifies`);
    t.false(lib.verifySignature(fp, n.sigs[0], [other]), `${hash}: not with another key`);
    t.false(lib.verifySignature(`${fp}x`, n.sigs[0], [publicKey]), `${hash}: not over other text`);
  }
  t.true('malformed' in lib.parseSignature('k:not base64!'));
  t.true('malformed' in lib.parseSignature(`k:${Buffer.alloc(63).toString('base64')}`));
  t.false(lib.verifySignature('x', 'no-colon', [publicKey]));
});
