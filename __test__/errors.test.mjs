// Bad input to the CLI: non-zero exit, exactly one stderr line starting with
// "narcache: ", no stack trace, and no narinfo in the destination.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

import { findNarinfos, hashPart, listTree } from './helpers/cache.mjs';
import { buildFixtures, cleanupTempDirs, closure, makeTempDir, runCli } from './helpers/nix.mjs';

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
