// Bad input to the CLI: non-zero exit, exactly one stderr line starting with
// "narcache: ", no stack trace, and no narinfo in the destination (nor anything written
// inside the store).
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

import { findNarinfos, hashPart, listTree } from './helpers/cache.mjs';
import { buildFixtures, cleanupTempDirs, closure, makeTempDir, runCli, runOk, STORE_DIR } from './helpers/nix.mjs';

const fx = await buildFixtures();
const singleFile = (await closure([fx.root])).find((p) => p.endsWith('-single-file'));

test.after.always(cleanupTempDirs);

function checkError(t, r, what) {
  t.not(r.code, 0, `${what}: exit code must be non-zero (stderr: ${r.stderr})`);
  t.is(r.signal, null, `${what}: killed by ${r.signal}`);
  const lines = r.stderr.replace(/\n$/, '').split('\n');
  t.is(lines.length, 1, `${what}: exactly one stderr line, got:\n${r.stderr}`);
  t.true(r.stderr.startsWith('narcache: '), `${what}: stderr starts with "narcache: ", got:\n${r.stderr}`);
  t.true(r.stderr.length > 'narcache: '.length + 1, `${what}: a message follows the prefix`);
  t.false(r.stderr.includes('    at '), `${what}: no stack trace`);
  t.false(r.stdout.includes('    at '), `${what}: no stack trace on stdout either`);
}

async function checkNoNarinfo(t, dest) {
  t.deepEqual(await findNarinfos(dest), [], `no narinfo in ${dest}`);
}

const missingStorePath = `/nix/store/${'0'.repeat(32)}-narcache-does-not-exist`;

const badPaths = {
  'nonexistent store path': async () => [missingStorePath],
  'nonexistent path outside the store': async () => ['/nonexistent/narcache/path'],
  'regular file outside the store (/etc/passwd)': async () => ['/etc/passwd'],
  'directory outside the store (/tmp/…)': async () => [makeTempDir('narcache-notstore-')],
  'symlink pointing outside the store': async () => {
    const l = path.join(makeTempDir('narcache-link-'), 'etc');
    await fs.symlink('/etc', l);
    return [l];
  },
  'dangling symlink': async () => {
    const l = path.join(makeTempDir('narcache-link-'), 'dangling');
    await fs.symlink(missingStorePath, l);
    return [l];
  },
  'a store path and a nonexistent one': async () => [singleFile, missingStorePath],
};

for (const [name, mkPaths] of Object.entries(badPaths)) {
  test(`bad path: ${name}`, async (t) => {
    const paths = await mkPaths();
    const dest = path.join(makeTempDir('narcache-err-'), 'cache');
    const r = await runCli(['build', ...paths, '-o', dest]);
    checkError(t, r, name);
    if (name === 'a store path and a nonexistent one') {
      // the good path may or may not have been written, but nothing else
      const found = (await findNarinfos(dest)).map((f) => f.replace(/\.narinfo$/, ''));
      t.true(
        found.every((h) => h === hashPart(singleFile)),
        `unexpected narinfos ${found}`,
      );
    } else {
      await checkNoNarinfo(t, dest);
    }
  });
}

test('bad path: a directory in /nix/store that Nix does not know (not registered valid)', async (t) => {
  const name = `${crypto.randomBytes(16).toString('hex').replace(/[eotu]/g, '0').slice(0, 32)}-narcache-unregistered`;
  const fake = path.join('/nix/store', name);
  await fs.mkdir(fake);
  t.teardown(() => fs.rm(fake, { recursive: true, force: true }));
  await fs.writeFile(path.join(fake, 'file'), 'not registered\n');
  const dest = path.join(makeTempDir('narcache-err-'), 'cache');
  const r = await runCli(['build', fake, '-o', dest]);
  checkError(t, r, 'unregistered store path');
  await checkNoNarinfo(t, dest);
});

test('unwritable destination: read-only mount', async (t) => {
  const dest = makeTempDir('narcache-ro-');
  const r = await runCli(['build', fx.root, '-o', dest], { readOnly: dest });
  checkError(t, r, 'read-only destination');
  await checkNoNarinfo(t, dest);
  t.deepEqual([...(await listTree(dest)).keys()], [], 'nothing at all was written');
});

test('unwritable destination: missing directory under a read-only mount', async (t) => {
  const ro = makeTempDir('narcache-ro-');
  const dest = path.join(ro, 'sub', 'cache');
  const r = await runCli(['build', fx.root, '-o', dest], { readOnly: ro });
  checkError(t, r, 'destination below a read-only mount');
  t.deepEqual([...(await listTree(ro)).keys()], [], 'nothing at all was written');
});

test('unwritable destination: below a regular file', async (t) => {
  const dir = makeTempDir('narcache-file-');
  const file = path.join(dir, 'a-file');
  await fs.writeFile(file, 'x');
  const r = await runCli(['build', fx.root, '-o', path.join(file, 'cache')]);
  checkError(t, r, 'destination below a regular file');
  t.deepEqual(await findNarinfos(dir), []);
  t.is(await fs.readFile(file, 'utf8'), 'x');
});

test('unwritable destination: below /etc/passwd', async (t) => {
  const r = await runCli(['build', singleFile, '-o', '/etc/passwd/narcache-cache']);
  checkError(t, r, 'destination /etc/passwd/…');
});

test('unwritable destination: the destination is a regular file', async (t) => {
  const dir = makeTempDir('narcache-file-');
  const file = path.join(dir, 'a-file');
  await fs.writeFile(file, 'x');
  const r = await runCli(['build', singleFile, '-o', file]);
  checkError(t, r, 'destination is a regular file');
  t.is(await fs.readFile(file, 'utf8'), 'x', 'the file is untouched');
  t.deepEqual(await findNarinfos(dir), []);
});

// A cache inside the store would change store paths (root can write there), and Nix would
// then find them corrupt: refused before anything is written, however the path is spelled.
test('-o inside the store: below a store path, the store itself, through a symlink', async (t) => {
  const before = await runOk('nix-store', ['--verify-path', singleFile]);
  const link = path.join(makeTempDir('narcache-link-'), 'result');
  await fs.symlink(fx.root, link);
  for (const dest of [
    path.join(fx.root, 'cache'),
    STORE_DIR,
    `${STORE_DIR}/./`,
    fx.root,
    path.join(link, 'sub', 'cache'),
  ]) {
    const r = await runCli(['build', singleFile, '-o', dest]);
    checkError(t, r, `-o ${dest}`);
    t.regex(r.stderr, /inside the Nix store \/nix\/store|is the Nix store \/nix\/store/, dest);
  }
  t.deepEqual(await fs.readdir(fx.root).then((names) => names.filter((n) => n === 'cache')), []);
  await t.throwsAsync(fs.access(path.join(STORE_DIR, 'nix-cache-info')));
  await t.throwsAsync(fs.access(path.join(STORE_DIR, 'nar')));
  t.is((await runOk('nix-store', ['--verify-path', singleFile])).code, before.code);
});

test('-o inside --store-root is refused too', async (t) => {
  const root = makeTempDir('narcache-store-root-');
  await fs.cp(singleFile, path.join(root, path.basename(singleFile)));
  const r = await runCli(['build', '--scan', '--store-root', root, path.join(root, path.basename(singleFile)), '-o', path.join(root, 'cache')]);
  checkError(t, r, '-o inside --store-root');
  t.deepEqual(await fs.readdir(root), [path.basename(singleFile)], 'nothing written');
});

test("a cache of another store is refused before anything is created in it", async (t) => {
  const dest = makeTempDir('narcache-other-store-');
  await fs.writeFile(path.join(dest, 'nix-cache-info'), 'StoreDir: /other/store\n');
  const r = await runCli(['build', singleFile, '-o', dest]);
  checkError(t, r, 'another store');
  t.deepEqual(await fs.readdir(dest), ['nix-cache-info']);
});

test('a directory named nix-cache-info is named as such', async (t) => {
  const dest = makeTempDir('narcache-info-dir-');
  await fs.mkdir(path.join(dest, 'nix-cache-info'));
  const r = await runCli(['build', singleFile, '-o', dest]);
  checkError(t, r, 'nix-cache-info is a directory');
  t.is(r.stderr, `narcache: ${path.join(dest, 'nix-cache-info')} is a directory, not a file\n`);
  t.deepEqual(await fs.readdir(dest), ['nix-cache-info']);
});

test('a public key given as a secret key, and the other way round, are named as such', async (t) => {
  const dir = makeTempDir('narcache-keys-');
  const secret = path.join(dir, 'k.secret');
  const pub = path.join(dir, 'k.public');
  await runOk('nix-store', ['--generate-binary-cache-key', 'k-1', secret, pub]);
  const cache = path.join(dir, 'cache');
  let r = await runCli(['build', singleFile, '-o', cache, '--sign-key-file', pub]);
  checkError(t, r, 'public key as secret key');
  t.is(r.stderr, `narcache: secret key file ${pub} is a public key, not a secret key\n`);
  r = await runCli(['verify', cache, '--trusted-public-key', await fs.readFile(secret, 'utf8')]);
  checkError(t, r, 'secret key as public key');
  t.regex(r.stderr, /is a secret key, not a public key\n$/);
});

test('sign of a directory inside the store, and keygen into it, are refused with nothing written', async (t) => {
  const key = path.join(makeTempDir('narcache-keys-'), 'k');
  await runOk('nix-store', ['--generate-binary-cache-key', 'k-1', key, `${key}.pub`]);
  const r = await runCli(['sign', fx.root, '--sign-key-file', key]);
  checkError(t, r, 'sign inside the store');
  t.regex(r.stderr, /is inside the Nix store \/nix\/store/);
  const g = await runCli(['keygen', 'k-2', '--secret-key-file', path.join(fx.root, 'k'), '--public-key-file', path.join(fx.root, 'k.pub')]);
  checkError(t, g, 'keygen inside the store');
  t.false((await fs.readdir(fx.root)).some((n) => n.startsWith('k') || n.startsWith('.tmp-narcache-')), 'nothing written');
  t.is((await runOk('nix-store', ['--verify-path', fx.root])).code, 0);
});

test('a nix-cache-info too large to be one is refused unread', async (t) => {
  const dest = makeTempDir('narcache-info-large-');
  const info = path.join(dest, 'nix-cache-info');
  await fs.writeFile(info, 'StoreDir: /nix/store\n');
  await fs.truncate(info, 2 ** 30); // sparse: a GiB that costs nothing to make
  const r = await runCli(['build', singleFile, '-o', dest]);
  checkError(t, r, 'large nix-cache-info');
  t.is(r.stderr, `narcache: ${dest}/nix-cache-info is ${2 ** 30} bytes, too large to be one\n`);
  t.deepEqual(await fs.readdir(dest), ['nix-cache-info']);
  const v = await runCli(['verify', dest, '--json']);
  t.deepEqual(JSON.parse(v.stdout).problems, [{ file: 'nix-cache-info', problem: 'missing or unreadable' }]);
});
