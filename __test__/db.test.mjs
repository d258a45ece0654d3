// `narcache build --db`: a cache from a store that Nix itself cannot open. The store is a chroot
// store filled by real Nix; its database sits on a real read-only mount (unshare -m, bind mount,
// remount ro), where Nix fails. narcache reads it without a lock and without writing anything
// (every file beside the database byte-identical before and after), also when the closure's rows
// exist only in db.sqlite-wal, as a running Nix leaves them; and real Nix substitutes from the
// cache it makes, which is the cache of the Nix-CLI source (plus the signatures in the database).
import test from 'ava';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { contentSnapshot, narinfoFields, readNarinfos, withoutFields } from './helpers/cache.mjs';
import {
  CLI,
  buildFixtures,
  chrootLayout,
  cleanupTempDirs,
  cliBuild,
  closure,
  holdStoreOpen,
  makeTempDir,
  nixCopyToStore,
  nixGenerateKey,
  readOnlyWrap,
  run,
  runCli,
  runOk,
  substitute,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const ROOTS = [fx.root];
const CLOSURE = await closure(ROOTS);
const referenceDir = makeTempDir('narcache-db-ref-');
await cliBuild(ROOTS, referenceDir);
const REFERENCE = await readNarinfos(referenceDir);
const key = await nixGenerateKey('narcache-db-test-1', makeTempDir('narcache-db-key-'));

test.after.always(cleanupTempDirs);

/** A fresh chroot store holding the closure of ROOTS (or an empty one). */
async function chrootStore({ empty = false } = {}) {
  const store = path.join(makeTempDir('narcache-db-store-'), 'root');
  if (empty) await runOk('nix-store', ['--store', store, '--init']);
  else await nixCopyToStore(store, ROOTS);
  return { store, ...chrootLayout(store) };
}

/** `narcache build --db` in a mount namespace where the whole chroot store is read-only. */
async function buildFromReadOnlyStore(s) {
  const cache = makeTempDir('narcache-db-cache-');
  const r = await runCli(['build', '--db', s.dbDir, '--store-root', s.storeRoot, ...ROOTS, '-o', cache], {
    readOnly: s.store,
  });
  return { r, cache, narinfos: await readNarinfos(cache) };
}

/** Nix, asked about the store while its database directory is a read-only mount. */
async function nixOnReadOnlyDb(s) {
  const [cmd, args] = readOnlyWrap(s.dbDir, 'nix', ['path-info', '--store', s.store, fx.root]);
  return run(cmd, args);
}

/**
 * `narcache build --db` on the writable database directory, where nothing but narcache itself
 * stops a write, under strace: every open of a file there is read-only, `files` among them,
 * and no file is locked but the cache directory.
 */
async function tracedBuild(t, s, files) {
  const cache = makeTempDir('narcache-db-traced-');
  const trace = path.join(makeTempDir('narcache-db-strace-'), 'trace');
  const args = ['build', '--db', s.dbDir, '--store-root', s.storeRoot, ...ROOTS, '-o', cache];
  const r = await run('strace', ['-f', '-qq', '-e', 'trace=open,openat,fcntl,flock', '-o', trace, process.execPath, CLI, ...args]);
  t.is(r.code, 0, r.stderr);
  t.is((await readNarinfos(cache)).size, CLOSURE.length);
  const calls = (await fsp.readFile(trace, 'utf8')).split('\n');
  const opened = calls.filter((c) => c.includes(`${s.dbDir}/`));
  for (const f of files) {
    t.true(opened.some((c) => c.includes(`${s.dbDir}/${f}", O_RDONLY`)), `${f} is read:\n${opened.join('\n')}`);
  }
  t.deepEqual(opened.filter((c) => /O_WRONLY|O_RDWR|O_CREAT/.test(c)), [], 'nothing there opened for writing');
  // The cache's own lock, a flock on the cache directory that builds hold shared (cache-lock.ts), is no lock on the database.
  const cacheFds = new Set(calls.map((c) => / openat\(AT_FDCWD, "([^"]*)", [^)]*\) = (\d+)$/.exec(c)).filter((m) => m?.[1] === cache).map((m) => m[2]));
  const locks = calls.filter((c) => /F_SETLKW?|F_OFD_SETLKW?|flock\(/.test(c));
  t.deepEqual(locks.filter((c) => !cacheFds.has(/(?:flock|fcntl)\((\d+),/.exec(c)?.[1])), [], 'no lock taken on the database');
}

/** The paths SQLite sees in the database file alone (immutable=1 ignores the WAL). */
async function pathsInDbFileAlone(dbDir) {
  const script =
    'import sqlite3, sys\n' +
    "c = sqlite3.connect('file:' + sys.argv[1] + '?immutable=1', uri=True)\n" +
    "print('\\n'.join(r[0] for r in c.execute('select path from ValidPaths')))\n";
  const r = await runOk('python3', ['-c', script, path.join(dbDir, 'db.sqlite')]);
  return r.stdout.split('\n').filter(Boolean);
}

test('a database on a read-only mount: Nix fails, narcache --db makes the cache Nix substitutes from, the database untouched', async (t) => {
  const s = await chrootStore();
  // Signatures in the database travel into the narinfos.
  await runOk('nix', ['store', 'sign', '--store', s.store, '--key-file', key.secretKeyFile, '--recursive', ...ROOTS]);
  const before = await contentSnapshot(s.dbDir);

  const nix = await nixOnReadOnlyDb(s);
  t.not(nix.code, 0, 'nix path-info against the read-only database must fail');
  t.regex(nix.stderr, /Read-only file system/);

  const { r, cache, narinfos } = await buildFromReadOnlyStore(s);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await contentSnapshot(s.dbDir), before, 'the database directory is byte-identical');

  // The Nix-CLI source's narinfos, plus the Sig lines Nix itself writes from this store.
  const nixCache = makeTempDir('narcache-db-nixcopy-');
  await runOk('nix', ['copy', '--from', s.store, '--to', `file://${nixCache}?compression=none`, ...ROOTS]);
  const nixNarinfos = await readNarinfos(nixCache);
  t.is(narinfos.size, CLOSURE.length);
  for (const [h, reference] of REFERENCE) {
    const ours = narinfos.get(h) ?? '';
    t.is(withoutFields(ours, new Set(['Sig'])), reference, `${h}: as the Nix-CLI source, but for Sig`);
    const sigs = narinfoFields(ours).Sig;
    t.is(sigs.length, 1, `${h}: one signature`);
    t.deepEqual(sigs, narinfoFields(nixNarinfos.get(h)).Sig, `${h}: the signature Nix writes`);
  }

  const sub = await substitute(cache, ROOTS, { trustedPublicKey: key.publicKey.trim() });
  t.is(sub.copy.code, 0, sub.copy.stderr);
  t.is(sub.verify.code, 0, sub.verify.stderr);
});

test('rows only in db.sqlite-wal, as a running Nix leaves them: the same cache, the files untouched', async (t) => {
  const s = await chrootStore({ empty: true });
  const holder = await holdStoreOpen(s.store);
  try {
    await nixCopyToStore(s.store, ROOTS);
    // The premise: the closure is registered, but not in the database file.
    const inFile = await pathsInDbFileAlone(s.dbDir);
    t.false(inFile.includes(fx.root), 'the root is only in the WAL');
    t.deepEqual(inFile.filter((p) => CLOSURE.includes(p)), [], 'no path of the closure is in db.sqlite');
    const before = await contentSnapshot(s.dbDir);
    t.true(before.has('db.sqlite-wal') && before.has('db.sqlite-shm'));

    const nix = await nixOnReadOnlyDb(s);
    t.not(nix.code, 0, 'nix path-info against the read-only database must fail');

    const { r, cache, narinfos } = await buildFromReadOnlyStore(s);
    t.is(r.code, 0, r.stderr);
    await tracedBuild(t, s, ['db.sqlite', 'db.sqlite-wal']);
    t.deepEqual(await contentSnapshot(s.dbDir), before, 'db.sqlite, -wal and -shm are byte-identical');

    t.deepEqual([...narinfos.keys()].sort(), [...REFERENCE.keys()].sort());
    for (const [h, reference] of REFERENCE) t.is(narinfos.get(h), reference, h);
    t.deepEqual(await contentSnapshot(path.join(cache, 'nar')), await contentSnapshot(path.join(referenceDir, 'nar')));

    const sub = await substitute(cache, ROOTS);
    t.is(sub.copy.code, 0, sub.copy.stderr);
    t.is(sub.verify.code, 0, sub.verify.stderr);
  } finally {
    await holder.stop();
  }
});

test('no lock, no write: narcache --db reads while another process holds an exclusive lock on the database', async (t) => {
  const s = await chrootStore();
  const db = path.join(s.dbDir, 'db.sqlite');
  const before = await contentSnapshot(s.dbDir);
  const locker = spawn(
    'python3',
    ['-c', "import fcntl, sys\nf = open(sys.argv[1], 'rb+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n", db],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const exited = new Promise((resolve) => locker.on('close', resolve));
  try {
    await new Promise((resolve, reject) => {
      locker.stdout.once('data', resolve);
      locker.once('error', reject);
      locker.once('exit', () => reject(new Error('the lock holder exited')));
    });
    // A normal SQLite reader is refused: the lock is real.
    const reader = await run('python3', ['-c', "import sqlite3, sys\nsqlite3.connect(sys.argv[1], timeout=0).execute('select count(*) from ValidPaths').fetchall()\n", db]);
    t.not(reader.code, 0);
    t.regex(reader.stderr, /database is locked/);

    await tracedBuild(t, s, ['db.sqlite']);
    t.deepEqual(await contentSnapshot(s.dbDir), before, 'the database directory is byte-identical, nothing added');
  } finally {
    locker.stdin.end();
    await exited;
  }
});
