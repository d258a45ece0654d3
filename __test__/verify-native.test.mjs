// verifyNar, the Rust half of `narcache verify`: for every NAR file of caches written by
// narcache and by real `nix copy` (xz, zstd, none; bzip2, br, gzip) it gives exactly the narinfo's
// FileHash/FileSize/NarHash/NarSize, which also match Nix's database and an independent
// hash of the file. Broken files are refused with one line that says what is wrong, and on
// mutated NARs it agrees with `nix-store --restore` about what is a NAR at all.
import test from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import native from '../dist/native.js';
import { hashFile, narinfoFields, readNarinfos } from './helpers/cache.mjs';
import {
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  dumpDb,
  makeTempDir,
  nixCopyTo,
  nixEnv,
  REPO,
  run,
  runOk,
  tempDir,
} from './helpers/nix.mjs';

const { verifyNar, verifyProgress } = native;

const fx = await buildFixtures();
const paths = await closure([fx.root]);
const db = await dumpDb(paths);

// One cache per writer and compression, made once, never modified: damage is done to copies.
const caches = new Map();
for (const compression of ['xz', 'zstd', 'none']) {
  const ours = makeTempDir(`narcache-verify-native-${compression}-`);
  await cliBuild([fx.root], ours, { compression });
  caches.set(`narcache ${compression}`, { dir: ours, compression });
  const nix = makeTempDir(`narcache-verify-native-nix-${compression}-`);
  await nixCopyTo(nix, [fx.root], compression);
  caches.set(`nix copy ${compression}`, { dir: nix, compression });
}

test.after.always(cleanupTempDirs);

/** The narinfo fields of every path of a cache, biggest NAR file last. */
async function entries(name) {
  const { dir } = caches.get(name);
  const all = [...(await readNarinfos(dir)).values()].map(narinfoFields);
  all.sort((a, b) => Number(a.FileSize) - Number(b.FileSize));
  return all.map((f) => ({ ...f, file: path.join(dir, f.URL) }));
}

/** The biggest NAR file of a cache, copied to a scratch directory under `name`. */
async function scratchCopy(t, cache, name) {
  const list = await entries(cache);
  const { file } = list[list.length - 1];
  const copy = path.join(tempDir(t, 'narcache-verify-native-scratch-'), name ?? path.basename(file));
  await fsp.copyFile(file, copy);
  return copy;
}

/** verifyNar must reject; returns the message after checking it is one line. */
async function rejection(t, file, compression, narSize) {
  const error = await t.throwsAsync(verifyNar(file, compression, narSize));
  t.false(error.message.includes('\n'), `one line: ${JSON.stringify(error.message)}`);
  return error.message;
}

const execFileBuffer = promisify(execFile);
async function dumpNar(p) {
  const { stdout } = await execFileBuffer('nix-store', ['--dump', p], {
    env: nixEnv,
    encoding: 'buffer',
    maxBuffer: 1 << 26,
  });
  return stdout;
}

/** Compress with the xz or zstd command-line tool: an encoder independent of narcache. */
async function compressWithCli(tool, data) {
  const args = tool === 'xz' ? ['-c', '-6'] : ['-c', '-q', '-3'];
  return new Promise((resolve, reject) => {
    const child = execFile(tool, args, { encoding: 'buffer', maxBuffer: 1 << 26 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    );
    child.stdin.end(data);
  });
}

for (const name of caches.keys()) {
  test(`every NAR file of a ${name} cache gives its narinfo's hashes and sizes`, async (t) => {
    const list = await entries(name);
    t.is(list.length, paths.length, 'one narinfo per path of the closure');
    for (const f of list) {
      t.is(f.Compression, caches.get(name).compression);
      const check = await verifyNar(f.file, f.Compression);
      t.deepEqual(
        check,
        {
          fileHash: f.FileHash,
          fileSize: Number(f.FileSize),
          narHash: f.NarHash,
          narSize: Number(f.NarSize),
        },
        f.StorePath,
      );
      const record = db.get(f.StorePath);
      t.is(check.narHash, record.narHash, `${f.StorePath}: NarHash vs nix-store --dump-db`);
      t.is(check.narSize, record.narSize, `${f.StorePath}: NarSize vs nix-store --dump-db`);
      const file = await hashFile(f.file);
      t.is(check.fileHash, `sha256:${file.nix32}`, `${f.StorePath}: FileHash vs sha256 of the file`);
      t.is(check.fileSize, file.size, `${f.StorePath}: FileSize vs size of the file`);
    }
  });
}

// Serial: ava runs these before the concurrent tests, so no other call moves the counters.
test.serial('verifyProgress counts the file bytes read and the NAR bytes checked', async (t) => {
  for (const name of ['nix copy xz', 'narcache none']) {
    const list = await entries(name);
    const f = list[list.length - 1];
    const before = verifyProgress();
    await verifyNar(f.file, f.Compression);
    const after = verifyProgress();
    t.is(after.fileBytes - before.fileBytes, Number(f.FileSize), name);
    t.is(after.narBytes - before.narBytes, Number(f.NarSize), name);
  }
});

for (const name of ['narcache xz', 'narcache zstd', 'nix copy xz', 'nix copy zstd']) {
  const compression = caches.get(name).compression;

  test(`a truncated file of a ${name} cache is refused`, async (t) => {
    const file = await scratchCopy(t, name);
    const { size } = await fsp.stat(file);
    for (const length of [0, 10, Math.floor(size / 2), size - 1]) {
      await fsp.truncate(file, length);
      t.is(
        await rejection(t, file, compression),
        `the ${compression} stream ends early: the file is truncated or corrupt`,
        `cut to ${length} of ${size} bytes`,
      );
      await fsp.copyFile((await entries(name)).at(-1).file, file);
    }
  });

  test(`a flipped byte in the middle of a file of a ${name} cache is refused`, async (t) => {
    const file = await scratchCopy(t, name);
    const last = (await entries(name)).at(-1);
    const bytes = await fsp.readFile(file);
    bytes[bytes.length >> 1] ^= 0x10;
    await fsp.writeFile(file, bytes);
    if (name === 'nix copy zstd') {
      // Nix writes zstd frames without a checksum: a flip may decode to another NAR, which
      // only the narinfo's NarHash then tells apart.
      const outcome = await verifyNar(file, compression).then(
        (check) => check.narHash,
        (e) => e.message,
      );
      t.not(outcome, last.NarHash);
      return;
    }
    t.regex(await rejection(t, file, compression), new RegExp(`^not a valid ${compression} stream \\(.+\\)$`));
  });
}

test('a NAR file truncated or flipped without compression is refused as a NAR', async (t) => {
  const file = await scratchCopy(t, 'nix copy none');
  const original = await fsp.readFile(file);
  await fsp.writeFile(file, original.subarray(0, 100));
  t.regex(await rejection(t, file, 'none'), /^NAR ends early at byte 100 \(expected .+\)$/);
  const flipped = Buffer.from(original);
  flipped[16] ^= 1; // inside "nix-archive-1"
  await fsp.writeFile(file, flipped);
  t.is(await rejection(t, file, 'none'), 'not a NAR: it does not start with "nix-archive-1"');
});

test('a file in the other compression is refused, naming the one expected', async (t) => {
  const zstdAsXz = await scratchCopy(t, 'nix copy zstd', 'renamed.nar.xz');
  t.is(await rejection(t, zstdAsXz, 'xz'), 'not a valid xz stream (stream/file format not recognized)');
  const xzAsZstd = await scratchCopy(t, 'narcache xz', 'renamed.nar.zst');
  t.is(await rejection(t, xzAsZstd, 'zstd'), 'not a valid zstd stream (Unknown frame descriptor)');
  t.is(await rejection(t, xzAsZstd, 'none'), 'not a NAR: it does not start with "nix-archive-1"');
});

test('valid xz and zstd streams of what is not a NAR are refused as NARs', async (t) => {
  const dir = tempDir(t, 'narcache-verify-native-streams-');
  const nar = await dumpNar(paths.find((p) => p.endsWith('-tree')));
  const cases = [
    [Buffer.from('hello, this is not a NAR\n'), 'not a NAR: it does not start with "nix-archive-1"'],
    [nar.subarray(0, 1000), /^NAR ends early at byte 1000 \(expected .+\)$/],
    [Buffer.concat([nar, Buffer.alloc(8)]), `NAR has data after its end at byte ${nar.length}`],
  ];
  for (const tool of ['xz', 'zstd']) {
    for (const [data, message] of cases) {
      const file = path.join(dir, `case.${tool}`);
      await fsp.writeFile(file, await compressWithCli(tool, data));
      const got = await rejection(t, file, tool);
      if (typeof message === 'string') t.is(got, message, tool);
      else t.regex(got, message, tool);
    }
  }
});

for (const compression of ['bzip2', 'br', 'gzip']) {
  test(`every NAR file of a nix copy ${compression} cache gives its narinfo's hashes and sizes`, async (t) => {
    const dir = makeTempDir(`narcache-verify-native-${compression}-`);
    await nixCopyTo(dir, [fx.root], compression);
    const list = [...(await readNarinfos(dir)).values()].map(narinfoFields);
    t.is(list.length, paths.length);
    for (const f of list) {
      t.is(f.Compression, compression);
      const check = await verifyNar(path.join(dir, f.URL), f.Compression, Number(f.NarSize));
      t.deepEqual(
        check,
        { fileHash: f.FileHash, fileSize: Number(f.FileSize), narHash: f.NarHash, narSize: Number(f.NarSize) },
        f.StorePath,
      );
      t.is(check.narHash, db.get(f.StorePath).narHash, `${f.StorePath}: Nix's database`);
    }
  });
}

test('compressions narcache does not read, unknown ones and missing files are refused cleanly', async (t) => {
  const dir = makeTempDir('narcache-verify-native-lz4-');
  await nixCopyTo(dir, [paths.find((p) => p.endsWith('-single-file'))], 'lz4');
  const [f] = [...(await readNarinfos(dir)).values()].map(narinfoFields);
  t.is(f.Compression, 'lz4');
  t.is(
    await rejection(t, path.join(dir, f.URL), f.Compression),
    'unsupported compression "lz4" (narcache reads zstd, xz, bzip2, br, gzip and none)',
  );
  t.is(
    await rejection(t, path.join(dir, f.URL), 'lz5'),
    'unknown compression "lz5" (expected zstd, xz or none)',
  );
  t.is(
    await rejection(t, path.join(dir, 'nar', 'missing.nar.xz'), 'xz'),
    'cannot read the file: No such file or directory (os error 2)',
  );
});

/** The start of a NAR of one regular file of `size` bytes, up to its contents. */
function narHeaderOfFile(size) {
  const str = (s) => {
    const b = Buffer.from(s);
    const padded = Buffer.alloc(8 + Math.ceil(b.length / 8) * 8);
    padded.writeBigUInt64LE(BigInt(b.length));
    b.copy(padded, 8);
    return padded;
  };
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(size));
  return Buffer.concat([...['nix-archive-1', '(', 'type', 'regular', 'contents'].map(str), length]);
}

// A hostile cache must not cost time in proportion to what it claims not to
// be: the stream stops at the first byte past NarSize. What was read proves
// it, not a clock: verifyProgress counts the bytes (of this process: the test runs alone).
test.serial('a zstd bomb and a sparse NAR are refused as soon as they pass their NarSize', async (t) => {
  const dir = tempDir(t, 'narcache-verify-native-bomb-');
  // 30 GiB of zeros behind a valid NAR header: one 64 MiB frame, 480 times (zstd reads concatenated frames).
  const frame = await compressWithCli('zstd', Buffer.alloc(64 << 20));
  const bomb = path.join(dir, 'bomb.nar.zst');
  await fsp.writeFile(bomb, Buffer.concat([await compressWithCli('zstd', narHeaderOfFile(30 * 2 ** 30)), ...Array(480).fill(frame)]));
  const bombSize = (await fsp.stat(bomb)).size;
  let before = verifyProgress();
  t.is(await rejection(t, bomb, 'zstd', 100), 'the NAR is longer than its NarSize of 100 bytes');
  let after = verifyProgress();
  t.true(after.fileBytes - before.fileBytes < bombSize / 4, `read ${after.fileBytes - before.fileBytes} of ${bombSize} bytes`);
  t.true(after.narBytes - before.narBytes <= 100);

  // 50 GiB, sparse, uncompressed.
  const sparse = path.join(dir, 'sparse.nar');
  await fsp.writeFile(sparse, narHeaderOfFile(50 * 2 ** 30));
  await fsp.truncate(sparse, 50 * 2 ** 30 + 288);
  before = verifyProgress();
  t.is(await rejection(t, sparse, 'none', 288), 'the NAR is longer than its NarSize of 288 bytes');
  after = verifyProgress();
  t.true(after.narBytes - before.narBytes <= 288, `read ${after.narBytes - before.narBytes} NAR bytes`);

  // Through the command line: one problem, the cache's own words.
  const cache = path.join(dir, 'cache');
  await fsp.mkdir(path.join(cache, 'nar'), { recursive: true });
  await fsp.writeFile(path.join(cache, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  await fsp.rename(bomb, path.join(cache, 'nar', 'bomb.nar.zst'));
  const storePath = `/nix/store/${'0'.repeat(32)}-bomb`;
  const { nix32 } = await hashFile(path.join(cache, 'nar', 'bomb.nar.zst'));
  await fsp.writeFile(
    path.join(cache, `${'0'.repeat(32)}.narinfo`),
    `StorePath: ${storePath}\nURL: nar/bomb.nar.zst\nCompression: zstd\nFileHash: sha256:${nix32}\nFileSize: ${bombSize}\n` +
      `NarHash: sha256:${nix32}\nNarSize: 100\nReferences: \n`,
  );
  const r = await run(process.execPath, [path.join(REPO, 'dist', 'cli.js'), 'verify', cache]);
  t.is(r.code, 1, r.stderr);
  t.is(r.stdout, `${storePath}: NAR file nar/bomb.nar.zst: the NAR is longer than its NarSize of 100 bytes\n`);
});

test('on every one-bit mutation of a NAR, verifyNar and nix-store --restore agree', async (t) => {
  const dir = tempDir(t, 'narcache-verify-native-mutations-');
  const tree = path.join(dir, 'tree');
  fs.mkdirSync(path.join(tree, 'c'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'a'), 'hi\n', { mode: 0o755 });
  fs.symlinkSync('a', path.join(tree, 'b'));
  const nar = await dumpNar(tree);
  const verdicts = async (i) => {
    const mutated = Buffer.from(nar);
    mutated[i] ^= 1 << i % 8;
    const file = path.join(dir, `mutated-${i}.nar`);
    await fsp.writeFile(file, mutated);
    const ours = await verifyNar(file, 'none').then(
      () => 'accepted',
      (e) => e.message,
    );
    const out = path.join(dir, `restored-${i}`);
    const theirs = await run('nix-store', ['--restore', out], { input: mutated });
    return { i, ours, theirs: theirs.code === 0 ? 'accepted' : theirs.stderr.trim() };
  };
  const results = [];
  for (let i = 0; i < nar.length; i += 4) {
    const batch = [i, i + 1, i + 2, i + 3].filter((j) => j < nar.length);
    results.push(...(await Promise.all(batch.map(verdicts))));
  }
  // Nix's parser stops reading at the end of the root node; whatever follows is ignored
  // (and left out of the hash it checks). A NAR file must not carry such bytes.
  const trailing = /^NAR has data after its end at byte \d+$/;
  const disagreements = results.filter(
    ({ ours, theirs }) => (ours === 'accepted') !== (theirs === 'accepted') && !(trailing.test(ours) && theirs === 'accepted'),
  );
  t.deepEqual(disagreements, []);
  const refused = results.filter(({ ours }) => ours !== 'accepted').length;
  t.true(refused > nar.length / 2, `${refused} of ${nar.length} mutations refused`);
});

test('a 300 MiB NAR is verified with bounded memory', async (t) => {
  const dir = tempDir(t, 'narcache-verify-native-big-');
  await cliBuild([fx.big], dir, { compression: 'zstd' });
  const [f] = [...(await readNarinfos(dir)).values()].map(narinfoFields);
  t.true(Number(f.NarSize) > 300 * 1024 * 1024);
  // A fresh process, so that its peak resident memory is this one call's.
  const script = `
    const { verifyNar } = require(${JSON.stringify(path.join(REPO, 'dist', 'native.js'))});
    const baseline = process.memoryUsage().rss;
    verifyNar(${JSON.stringify(path.join(dir, f.URL))}, 'zstd').then((check) => {
      console.log(JSON.stringify({ check, baseline, peak: process.resourceUsage().maxRSS * 1024 }));
    });`;
  const r = await runOk(process.execPath, ['-e', script]);
  const { check, baseline, peak } = JSON.parse(r.stdout);
  t.is(check.narHash, f.NarHash);
  t.is(check.narSize, Number(f.NarSize));
  t.log(`peak RSS ${(peak / 2 ** 20).toFixed(1)} MiB, ${((peak - baseline) / 2 ** 20).toFixed(1)} MiB above start`);
  t.true(peak - baseline < 64 * 2 ** 20, `peak ${peak} vs start ${baseline}`);
});
