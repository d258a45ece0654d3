// narcache verify: caches written by real Nix (`nix copy`) and by narcache pass; each kind
// of damage, made on a copy of a good cache, is caught and reported against the right store
// path (and only that path, or the paths that depend on it); orphan NAR files are listed.
import test from 'ava';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { hashPart, narinfoFields, nix32Encode } from './helpers/cache.mjs';
import {
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  dumpDb,
  makeTempDir,
  nixCopyTo,
  nixGenerateKey,
  run,
  runCli,
  runOk,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const rootClosure = await closure([fx.root]);
const db = await dumpDb(rootClosure);
const byName = (name) => rootClosure.find((p) => p.endsWith(`-${name}`));
const APP = byName('app');
const LIB = byName('lib');
const TREE = byName('tree');
const SINGLE = byName('single-file');
const keyDir = makeTempDir('narcache-verify-keys-');
const key = await nixGenerateKey('trusted-1', keyDir);
const otherKey = await nixGenerateKey('untrusted-1', keyDir);

test.after.always(cleanupTempDirs);

// Good caches, each made once and only ever copied before damage is done.
const made = new Map();
function good(kind) {
  if (!made.has(kind)) {
    const dir = makeTempDir(`narcache-verify-${kind}-`);
    const [writer, compression, signed] = kind.split('-');
    made.set(
      kind,
      (writer === 'nix'
        ? nixCopyTo(dir, [fx.root], compression, signed ? { secretKeyFile: key.secretKeyFile } : {})
        : cliBuild([fx.root], dir, { compression })
      ).then(() => dir),
    );
  }
  return made.get(kind);
}

async function copyOf(kind) {
  const dir = makeTempDir('narcache-damaged-');
  await fsp.cp(await good(kind), dir, { recursive: true });
  return dir;
}

const narinfoOf = (cache, storePath) => path.join(cache, `${hashPart(storePath)}.narinfo`);

async function fieldsOf(cache, storePath) {
  return narinfoFields(await fsp.readFile(narinfoOf(cache, storePath), 'utf8'));
}

async function narOf(cache, storePath) {
  return path.join(cache, (await fieldsOf(cache, storePath)).URL);
}

/** Rewrites lines of a narinfo: `edits` maps a key to its new value (null: drop the line). */
async function editNarinfo(cache, storePath, edits) {
  const file = narinfoOf(cache, storePath);
  const lines = (await fsp.readFile(file, 'utf8')).slice(0, -1).split('\n');
  const out = [];
  for (const line of lines) {
    const k = line.slice(0, line.indexOf(': '));
    if (!(k in edits)) out.push(line);
    else if (edits[k] !== null) out.push(`${k}: ${edits[k]}`);
  }
  for (const [k, v] of Object.entries(edits)) if (v !== null && !lines.some((l) => l.startsWith(`${k}: `))) out.push(`${k}: ${v}`);
  await fsp.writeFile(file, out.join('\n') + '\n');
}

function sha256Nix32(buf) {
  return `sha256:${nix32Encode(createHash('sha256').update(buf).digest())}`;
}

/** Replaces a path's NAR file with `bytes` and makes FileSize and FileHash agree with them. */
async function replaceNarFile(cache, storePath, bytes, more = {}) {
  await fsp.writeFile(await narOf(cache, storePath), bytes);
  await editNarinfo(cache, storePath, { FileSize: String(bytes.length), FileHash: sha256Nix32(bytes), ...more });
}

async function compress(cmd, data) {
  const dir = makeTempDir('narcache-compress-');
  const file = path.join(dir, 'data');
  await fsp.writeFile(file, data);
  await runOk(cmd, ['-z', '-q', '-k', file]);
  return fsp.readFile(`${file}${cmd === 'xz' ? '.xz' : '.zst'}`);
}

/** The NAR of a store path as Nix serialises it. */
async function nixDump(storePath) {
  const file = path.join(makeTempDir('narcache-dump-'), 'nar');
  await runOk('sh', ['-c', 'nix-store --dump "$1" > "$2"', 'sh', storePath, file]);
  return fsp.readFile(file);
}

/** `narcache verify --json`: exit code and the parsed report. */
async function verify(cache, args = []) {
  const r = await runCli(['verify', cache, '--json', ...args]);
  let report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`verify --json printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return { code: r.code, report, stderr: r.stderr };
}

function problemsOf(report, storePath) {
  return report.problems.filter((p) => p.storePath === storePath).map((p) => p.problem);
}

/**
 * The report fails, names exactly the store paths in `paths` (and the narinfo files in
 * `files`, for narinfos without a readable store path), and for `storePath` has a problem
 * matching `pattern`.
 */
function checkCaught(t, { code, report }, { storePath, pattern, paths = [storePath], files = [] }) {
  t.is(code, 1, 'exit code 1');
  t.false(report.ok);
  t.deepEqual(
    [...new Set(report.problems.filter((p) => p.storePath).map((p) => p.storePath))].sort(),
    [...paths].sort(),
    `store paths with problems: ${JSON.stringify(report.problems, null, 1)}`,
  );
  t.deepEqual(
    [...new Set(report.problems.filter((p) => !p.storePath).map((p) => p.file))].sort(),
    [...files].sort(),
    'narinfo files with problems and no readable store path',
  );
  if (pattern) {
    const found = storePath ? problemsOf(report, storePath) : report.problems.map((p) => p.problem);
    t.true(
      found.some((p) => pattern.test(p)),
      `a problem of ${storePath ?? files} matches ${pattern}: ${JSON.stringify(found)}`,
    );
  }
}

/** Paths of the closure that reference `storePath` (other than itself). */
function referrers(storePath) {
  return rootClosure.filter((p) => p !== storePath && db.get(p).references.includes(storePath));
}

function checkGood(t, { code, report, stderr }, what) {
  t.is(code, 0, `${what}: exit 0\n${stderr}\n${JSON.stringify(report.problems, null, 1)}`);
  t.true(report.ok, what);
  t.deepEqual(report.problems, [], what);
  t.deepEqual(report.orphans, [], `${what}: no orphans`);
  t.is(report.narinfos, rootClosure.length, `${what}: every narinfo checked`);
  t.is(report.valid, rootClosure.length, what);
}

for (const kind of ['nix-xz', 'nix-zstd', 'nix-none', 'nix-xz-signed']) {
  test(`a cache written by nix copy (${kind}) passes`, async (t) => {
    const cache = await good(kind);
    checkGood(t, await verify(cache), kind);
    const narBytes = rootClosure.reduce((sum, p) => sum + db.get(p).narSize, 0);
    const { report } = await verify(cache);
    t.true(report.narBytes > 0 && report.narBytes <= narBytes, 'NAR bytes counted (identical NARs once)');
    if (kind.endsWith('signed')) {
      checkGood(t, await verify(cache, ['--trusted-public-key', key.publicKey]), `${kind} with its key`);
      // several keys in one value, as in nix.conf
      checkGood(t, await verify(cache, ['--trusted-public-key', `${otherKey.publicKey} ${key.publicKey}`]), 'two keys');
    } else {
      const r = await verify(cache, ['--trusted-public-key', key.publicKey]);
      checkCaught(t, r, { paths: rootClosure, pattern: /no signature by a trusted key \(unsigned\)/, storePath: APP });
    }
  });
}

for (const kind of ['ours-zstd', 'ours-xz', 'ours-none']) {
  test(`a cache written by narcache build (${kind}) passes`, async (t) => {
    checkGood(t, await verify(await good(kind)), kind);
  });
}

test('text output: nothing on stdout and a summary on stderr for a good cache; one line per problem otherwise', async (t) => {
  const ok = await runCli(['verify', await good('nix-xz')]);
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stdout, '');
  t.regex(ok.stderr, new RegExp(`^narcache: checked ${rootClosure.length} narinfos and \\d+ NAR files .*\\nnarcache: the cache is sound\\n$`));

  const cache = await copyOf('nix-xz');
  await fsp.rm(await narOf(cache, SINGLE));
  await editNarinfo(cache, APP, { FileSize: '1' });
  const bad = await runCli(['verify', cache]);
  t.is(bad.code, 1);
  const lines = bad.stdout.trimEnd().split('\n');
  t.is(lines.length, 2, bad.stdout);
  t.true(lines.some((l) => l.startsWith(`${SINGLE}: `) && /missing/.test(l)), bad.stdout);
  t.true(lines.some((l) => l.startsWith(`${APP}: `) && /FileSize/.test(l)), bad.stdout);
  t.regex(bad.stderr, /narcache: 2 problems in 2 narinfos/);
});

test('a truncated NAR file is caught', async (t) => {
  const cache = await copyOf('nix-xz');
  const nar = await narOf(cache, TREE);
  await fsp.truncate(nar, Math.floor((await fsp.stat(nar)).size / 2));
  const r = await verify(cache);
  checkCaught(t, r, { storePath: TREE, pattern: /FileSize/ });
  t.true(problemsOf(r.report, TREE).some((p) => /^NAR file nar\//.test(p)), 'the NAR itself is refused too');
});

test('one flipped byte inside a NAR is caught (xz, and uncompressed file contents)', async (t) => {
  const cache = await copyOf('nix-xz');
  const nar = await narOf(cache, TREE);
  const bytes = await fsp.readFile(nar);
  bytes[bytes.length >> 1] ^= 0x01;
  await fsp.writeFile(nar, bytes);
  // xz's own check catches it before the end of the stream
  checkCaught(t, await verify(cache), { storePath: TREE, pattern: /^NAR file nar\/\S+: .*xz/ });

  // uncompressed: a byte of a file's contents, so the NAR stays well-formed and only its hash tells
  const plain = await copyOf('nix-none');
  const file = await narOf(plain, SINGLE);
  const nar2 = await fsp.readFile(file);
  const at = nar2.indexOf('I am a whole store path');
  t.true(at > 0);
  nar2[at] ^= 0x01;
  await fsp.writeFile(file, nar2);
  const r = await verify(plain);
  checkCaught(t, r, { storePath: SINGLE, pattern: /NarHash does not match/ });
  t.true(problemsOf(r.report, SINGLE).some((p) => /FileHash does not match/.test(p)));
});

test('a missing NAR file is caught', async (t) => {
  const cache = await copyOf('nix-xz');
  await fsp.rm(await narOf(cache, LIB));
  checkCaught(t, await verify(cache), { storePath: LIB, pattern: /^NAR file nar\/\S+ is missing$/ });
});

test('a wrong FileSize is caught', async (t) => {
  const cache = await copyOf('nix-xz');
  const { FileSize } = await fieldsOf(cache, APP);
  await editNarinfo(cache, APP, { FileSize: String(Number(FileSize) + 1) });
  checkCaught(t, await verify(cache), { storePath: APP, pattern: /^FileSize is \d+ but nar\/\S+ has \d+ bytes$/ });
});

test('an edited NarHash is caught, and breaks the signature', async (t) => {
  const cache = await copyOf('nix-xz-signed');
  await editNarinfo(cache, APP, { NarHash: sha256Nix32(Buffer.from('something else')) });
  checkCaught(t, await verify(cache), { storePath: APP, pattern: /^NarHash does not match the NAR/ });
  const signed = await verify(cache, ['--trusted-public-key', key.publicKey]);
  checkCaught(t, signed, { storePath: APP, pattern: /no valid signature by a trusted key: the signature by trusted-1 does not verify/ });
});

test('a deleted narinfo of a reference is caught at every path that references it', async (t) => {
  const cache = await copyOf('nix-xz');
  await fsp.rm(narinfoOf(cache, LIB));
  const r = await verify(cache);
  const expected = referrers(LIB);
  t.true(expected.includes(APP) && expected.length >= 2, `lib has several referrers: ${expected}`);
  checkCaught(t, r, { storePath: APP, paths: expected, pattern: new RegExp(`^reference ${path.basename(LIB)} has no narinfo in the cache$`) });
  t.is(r.report.narinfos, rootClosure.length - 1);
  t.deepEqual(r.report.orphans, [(await fieldsOf(await good('nix-xz'), LIB)).URL], 'its NAR is now an orphan');
});

test('a Sig from an untrusted key is caught when keys are given', async (t) => {
  const cache = await copyOf('nix-xz-signed');
  const otherSigned = makeTempDir('narcache-other-signed-');
  await nixCopyTo(otherSigned, [APP], 'xz', { secretKeyFile: otherKey.secretKeyFile });
  await editNarinfo(cache, APP, { Sig: (await fieldsOf(otherSigned, APP)).Sig[0] });
  t.regex((await fieldsOf(cache, APP)).Sig[0], /^untrusted-1:/);
  checkCaught(t, await verify(cache, ['--trusted-public-key', key.publicKey]), {
    storePath: APP,
    pattern: /^no signature by a trusted key \(signed only by untrusted-1\)$/,
  });
  // without keys only the form of signatures is checked, and this one is well formed
  checkGood(t, await verify(cache), 'no keys given');
  // trusting both keys, it is fine again
  checkGood(t, await verify(cache, ['--trusted-public-key', key.publicKey, '--trusted-public-key', otherKey.publicKey]), 'both');
});

test('a Sig with bad base64 is caught, with or without keys', async (t) => {
  const cache = await copyOf('nix-xz-signed');
  await editNarinfo(cache, APP, { Sig: 'trusted-1:!!!!this-is-not-base64!!!!' });
  checkCaught(t, await verify(cache), { storePath: APP, pattern: /^Sig 1 is malformed: .*base64/ });
  checkCaught(t, await verify(cache, ['--trusted-public-key', key.publicKey]), { storePath: APP, pattern: /no valid signature/ });
});

test('a URL that leads outside nar/ is caught and the file is not read', async (t) => {
  for (const url of ['../../etc/passwd', '/etc/passwd', 'nar/../../etc/passwd', 'file:///etc/passwd', 'nix-cache-info', 'nar/']) {
    const cache = await copyOf('nix-xz');
    await editNarinfo(cache, APP, { URL: url });
    const r = await verify(cache);
    checkCaught(t, r, { storePath: APP, pattern: /^URL ".*" (is not relative to the cache|does not name a file inside nar\/)$/ });
    t.deepEqual(r.report.orphans, [(await fieldsOf(await good('nix-xz'), APP)).URL], `${url}: app's own NAR is an orphan`);
  }
  // a symlink inside nar/ that leads out of it
  const cache = await copyOf('nix-xz');
  await fsp.symlink('/etc/passwd', path.join(cache, 'nar', 'evil.nar.xz'));
  await editNarinfo(cache, APP, { URL: 'nar/evil.nar.xz' });
  checkCaught(t, await verify(cache), { storePath: APP, pattern: /^NAR file nar\/evil\.nar\.xz leads outside nar\// });
});

test('a narinfo that is garbage is caught, named by its file, and so are the paths that reference it', async (t) => {
  const cache = await copyOf('nix-xz');
  await fsp.writeFile(narinfoOf(cache, LIB), Buffer.from('\x00\x01garbage\nnot: a: narinfo\n\xff'));
  const r = await verify(cache);
  checkCaught(t, r, { storePath: APP, paths: referrers(LIB), files: [`${hashPart(LIB)}.narinfo`], pattern: /^reference \S+-lib: \S+\.narinfo is unreadable$/ });
  t.true(
    r.report.problems.some((p) => p.file === `${hashPart(LIB)}.narinfo` && !p.storePath && /^does not parse: /.test(p.problem)),
    JSON.stringify(r.report.problems),
  );
  const text = await runCli(['verify', cache]);
  t.true(text.stdout.split('\n').some((l) => l.startsWith(`${hashPart(LIB)}.narinfo: does not parse`)), text.stdout);
});

test('a narinfo named after another hash than its StorePath’s is caught', async (t) => {
  const cache = await copyOf('nix-xz');
  const wrong = `${'1'.repeat(32)}.narinfo`;
  await fsp.copyFile(narinfoOf(cache, SINGLE), path.join(cache, wrong));
  const r = await verify(cache);
  checkCaught(t, r, { storePath: SINGLE, pattern: new RegExp(`should be named ${hashPart(SINGLE)}\\.narinfo`) });
  t.deepEqual(r.report.problems.map((p) => p.file), [wrong], 'only the misnamed copy');
});

test('a compressed file that is not valid xz or zstd is caught', async (t) => {
  const noise = Buffer.alloc(4096);
  for (let i = 0; i < noise.length; i++) noise[i] = (i * 131 + 7) & 0xff;
  for (const [kind, bytes] of [
    ['nix-xz', noise],
    ['nix-zstd', noise],
    ['nix-xz', Buffer.from('')],
    ['nix-zstd', (await fsp.readFile(await narOf(await good('nix-zstd'), APP))).subarray(0, 40)],
  ]) {
    const cache = await copyOf(kind);
    await replaceNarFile(cache, APP, bytes);
    const r = await verify(cache);
    checkCaught(t, r, { storePath: APP, pattern: /^NAR file nar\/\S+: / });
    t.false(problemsOf(r.report, APP).some((p) => /^File(Size|Hash)/.test(p)), 'FileSize and FileHash agree with the file');
  }
});

test('a NAR that decompresses fine but is not a well-formed NAR is caught', async (t) => {
  const real = await nixDump(APP);
  const tooLong = Buffer.alloc(8 * 8);
  // str("nix-archive-1") str("(") str("type") str("regular") str("contents") then a length of 2^60
  const strs = ['nix-archive-1', '(', 'type', 'regular', 'contents'].map((s) => {
    const b = Buffer.alloc(8 + Math.ceil(s.length / 8) * 8);
    b.writeBigUInt64LE(BigInt(s.length));
    b.write(s, 8);
    return b;
  });
  tooLong.writeBigUInt64LE(1n << 60n);
  const variants = {
    'not a NAR at all': Buffer.from('this is plain text, not a NAR archive\n'.repeat(10)),
    'a NAR cut short': real.subarray(0, real.length - 24),
    'a NAR that announces a 2^60-byte file': Buffer.concat([...strs, tooLong.subarray(0, 8)]),
    'a NAR with a wrong magic': Buffer.concat([Buffer.from([13, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('nix-archive-2\0\0\0'), real.subarray(24)]),
  };
  for (const [what, nar] of Object.entries(variants)) {
    for (const [kind, cmd] of [['nix-xz', 'xz'], ['nix-zstd', 'zstd']]) {
      const cache = await copyOf(kind);
      // every stated hash and size agrees with the bytes: only the NAR parser can object
      await replaceNarFile(cache, APP, await compress(cmd, nar), { NarSize: String(nar.length), NarHash: sha256Nix32(nar) });
      const r = await verify(cache);
      checkCaught(t, r, { storePath: APP, pattern: /^NAR file nar\/\S+: / });
      t.is(problemsOf(r.report, APP).length, 1, `${what} (${kind}): only the NAR is refused: ${problemsOf(r.report, APP)}`);
    }
  }
});

test('orphan NAR files are listed but do not fail; files being written are ignored', async (t) => {
  const cache = await copyOf('nix-xz');
  const some = await narOf(cache, APP);
  await fsp.copyFile(some, path.join(cache, 'nar', 'orphan.nar.xz'));
  // Being written by a process that runs (this one): neither orphans nor leftovers.
  await fsp.copyFile(some, path.join(cache, 'nar', `.tmp-narcache-${process.pid}-abc-x.nar.xz`));
  await fsp.writeFile(path.join(cache, `.tmp-narcache-${process.pid}-abc-${'2'.repeat(32)}.narinfo`), 'half a narinf');
  const r = await verify(cache);
  t.is(r.code, 0, r.stderr);
  t.true(r.report.ok);
  t.deepEqual(r.report.orphans, ['nar/orphan.nar.xz']);
  t.deepEqual(r.report.leftovers, []);
  t.deepEqual(r.report.problems, []);
  const text = await runCli(['verify', cache]);
  t.is(text.code, 0);
  t.is(text.stdout, 'nar/orphan.nar.xz: orphan, no narinfo names it\n');
  t.regex(text.stderr, /the cache is sound; 1 orphan NAR file/);
});

test('a missing nix-cache-info is caught', async (t) => {
  const cache = await copyOf('nix-xz');
  await fsp.rm(path.join(cache, 'nix-cache-info'));
  checkCaught(t, await verify(cache), { paths: [], files: ['nix-cache-info'], pattern: /missing/ });
});

test('--jobs 1 and --jobs 4 give the same report for several problems', async (t) => {
  const cache = await copyOf('nix-xz-signed');
  await fsp.rm(await narOf(cache, TREE));
  await editNarinfo(cache, APP, { NarSize: '5' });
  await editNarinfo(cache, SINGLE, { Sig: null });
  const args = ['--trusted-public-key', key.publicKey];
  const [a, b] = await Promise.all([verify(cache, [...args, '--jobs', '1']), verify(cache, [...args, '--jobs', '4'])]);
  const strip = ({ seconds, ...rest }) => rest;
  t.deepEqual(strip(a.report), strip(b.report));
  t.is(a.report.problems.length, 4, JSON.stringify(a.report.problems)); // TREE missing; APP NarSize + signature; SINGLE unsigned
});

test('memory stays bounded: verifying a 300 MiB NAR', async (t) => {
  const cache = makeTempDir('narcache-verify-big-');
  await cliBuild([fx.big], cache, { compression: 'zstd' });
  const r = await run('/usr/bin/time', ['-f', '%M', process.execPath, path.resolve('dist/cli.js'), 'verify', cache, '--json']);
  t.is(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  t.true(report.ok);
  t.true(report.narBytes > 300 * 2 ** 20, `checked ${report.narBytes} NAR bytes`);
  const maxRssKiB = Number(r.stderr.trim().split('\n').at(-1));
  t.log(`max RSS ${(maxRssKiB / 1024).toFixed(0)} MiB for ${(report.narBytes / 2 ** 20).toFixed(0)} MiB of NAR`);
  t.true(maxRssKiB < 200 * 1024, `max RSS ${maxRssKiB} KiB`);
});

test('a progress bar on a terminal, cleared at the end', async (t) => {
  const cache = await good('nix-xz');
  const r = await run('script', ['-qec', `${process.execPath} ${path.resolve('dist/cli.js')} verify ${cache}`, '/dev/null']);
  t.is(r.code, 0, r.stdout);
  t.regex(r.stdout, new RegExp(`\\r\\x1b\\[K\\[#+\\] ${rootClosure.length}/${rootClosure.length} narinfos`));
  t.regex(r.stdout, /the cache is sound/);
});

test('bad arguments: one line, exit 1', async (t) => {
  for (const args of [
    ['verify', '/nonexistent/narcache-cache'],
    ['verify', await good('nix-xz'), '--trusted-public-key', 'no-colon'],
    ['verify', await good('nix-xz'), '--trusted-public-key', 'k:AAAA'],
    ['verify', await good('nix-xz'), '--jobs', '0'],
  ]) {
    const r = await runCli(args);
    t.is(r.code, 1, args.join(' '));
    t.regex(r.stderr, /^narcache: \S[^\n]*\n/, args.join(' '));
    t.is(r.stdout, '', args.join(' '));
  }
});

// Nix also writes lz4, lzip, … (through libarchive), which narcache does not read: such a
// cache is neither sound nor broken, and says so with a status of its own.
test('NAR files narcache does not read are reported as not checked, with exit status 2', async (t) => {
  const cache = makeTempDir('narcache-verify-lz4-');
  await nixCopyTo(cache, [fx.root], 'lz4');
  let r = await verify(cache);
  t.is(r.code, 2, r.stderr);
  t.false(r.report.ok);
  t.deepEqual(r.report.problems, []);
  t.deepEqual(r.report.unchecked.map((u) => u.storePath).sort(), rootClosure);
  t.true(r.report.unchecked.every((u) => u.compression === 'lz4'));
  const text = await runCli(['verify', cache]);
  t.is(text.code, 2);
  t.is(text.stdout.split('\n').filter((l) => / not checked: narcache does not read lz4$/.test(l)).length, rootClosure.length);
  t.regex(text.stderr, new RegExp(`no problem found, but ${rootClosure.length} NAR files not checked \\(lz4\\)\n$`));
  // A problem still makes it 1.
  await fsp.rm(await narOf(cache, APP));
  r = await verify(cache);
  t.is(r.code, 1);
  t.deepEqual(r.report.problems.map((p) => p.storePath), [APP]);
});
