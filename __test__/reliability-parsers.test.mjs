// Parsers under hostile input, with fixed seeds:
//  - 12,000 mutations of real narinfos (written by narcache and, signed, by `nix copy`)
//    through parseNarinfo: never anything but a one-line NarcacheError or a result that
//    says what Nix's own reading of the text says (its line splitting, transcribed from
//    NixOS/nix 2.8 src/libstore/nar-info.cc), with exact sizes;
//  - 655 of them in caches checked by `narcache verify --json`: every narinfo it calls
//    valid is one real Nix reads (`nix path-info --store file://…`) with the NarHash,
//    NarSize, URL and references of the original;
//  - 12,000 mutations of real NARs (nix-store --dump) through verifyNar(file, 'none'), and
//    1,000 each of xz and zstd NAR files: a one-line rejection or an accepted NAR whose
//    hash and size are those of the bytes, each call settling within its timeout, the
//    process's resident memory bounded; a sample is judged by real Nix too
//    (nix-store --restore, then --dump gives back the same bytes exactly when accepted).
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import lib from '../dist/index.js';
import native from '../dist/native.js';
import { hashDecompressed, readNarinfos } from './helpers/cache.mjs';
import { hashSpellings, mutateNar, mutateNarinfo, narStrings } from './helpers/mutate.mjs';
import {
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  makeTempDir,
  nixCopyTo,
  nixEnv,
  nixGenerateKey,
  run,
} from './helpers/nix.mjs';
import { buildMany, random, scratchDir, verifyJson } from './helpers/reliability.mjs';

const { parseNarinfo, NarcacheError, nix32Decode } = lib;
const { verifyNar } = native;

const many = await buildMany();
const fx = await buildFixtures();
const ours = makeTempDir('narcache-fuzz-ours-');
await cliBuild([many.rootA], ours, { compression: 'zstd' });
const theirs = makeTempDir('narcache-fuzz-nix-');
const key = await nixGenerateKey('fuzz-1', makeTempDir('narcache-fuzz-key-'));
await nixCopyTo(theirs, [many.rootA], 'none', { secretKeyFile: key.secretKeyFile });
const originals = [...(await readNarinfos(ours)).values(), ...(await readNarinfos(theirs)).values()];

test.after.always(cleanupTempDirs);

/**
 * The peak resident memory of this process so far, as the kernel counts it (no spike is
 * missed); it bounds the memory of every call made until then.
 */
const peakRss = () => process.resourceUsage().maxRSS * 1024;

const MiB = 2 ** 20;
const RSS_LIMIT = 300 * MiB;

// ---------------------------------------------------------------------------------------
// narinfos

/**
 * How Nix 2.8 reads narinfo text (NarInfo::NarInfo): Key up to the first ':', the value
 * from two characters after it up to the next '\n' found from there. Returns the fields as
 * Nix keeps them, or undefined where Nix throws on the framing, a number or a repetition.
 * Validity of store paths, hashes and CA is left to real Nix (the verify test below).
 */
function nixReading(s) {
  const r = { sigs: new Set(), references: [] };
  let sawRefs = false;
  for (let pos = 0; pos < s.length; ) {
    const colon = s.indexOf(':', pos);
    if (colon < 0) return undefined;
    const eol = s.indexOf('\n', colon + 2);
    if (eol < 0) return undefined;
    const name = s.slice(pos, colon);
    const value = s.slice(colon + 2, eol);
    pos = eol + 1;
    const number = () => (/^\+?\d+$/.test(value) && BigInt(value) < 2n ** 64n ? BigInt(value) : undefined);
    if (name === 'StorePath') r.storePath = value;
    else if (name === 'URL') r.url = value;
    else if (name === 'Compression') r.compression = value;
    else if (name === 'FileHash') r.fileHash = value;
    else if (name === 'NarHash') r.narHash = value;
    else if (name === 'FileSize' || name === 'NarSize') {
      if (number() === undefined) return undefined;
      r[name === 'FileSize' ? 'fileSize' : 'narSize'] = number();
    } else if (name === 'References') {
      if (sawRefs && r.references.length) return undefined;
      sawRefs = true;
      r.references = value.split(' ').filter(Boolean);
    } else if (name === 'Deriver') {
      if (value !== 'unknown-deriver') r.deriver = value;
    } else if (name === 'Sig') r.sigs.add(value);
    else if (name === 'CA') {
      if (r.ca !== undefined) return undefined;
      r.ca = value;
    }
  }
  if (!r.compression) r.compression = 'bzip2';
  return r;
}

/** What differs between parseNarinfo's result `n` and Nix's reading `r` of the same text. */
function disagreement(n, r) {
  if (!r) return 'Nix cannot read it';
  const diffs = [];
  const show = (v) => (typeof v === 'bigint' ? String(v) : JSON.stringify(v));
  const same = (what, a, b) => a !== b && diffs.push(`${what}: ${show(a)} vs Nix ${show(b)}`);
  same('StorePath', n.storePath, r.storePath);
  same('URL', n.url, r.url);
  same('Compression', n.compression, r.compression);
  same('NarHash', n.narHash, r.narHash);
  same('FileHash', n.fileHash, r.fileHash || undefined);
  same('NarSize', BigInt(n.narSize), r.narSize);
  same('FileSize', n.fileSize === undefined ? undefined : BigInt(n.fileSize), r.fileSize);
  same('References', [...n.references].sort().join(' '), [...r.references].sort().join(' '));
  same('Deriver', n.deriver, r.deriver || undefined);
  same('CA', n.ca, r.ca || undefined);
  same('Sig', [...new Set(n.sigs)].sort().join(' '), [...r.sigs].sort().join(' '));
  for (const size of ['narSize', 'fileSize']) {
    if (n[size] !== undefined && !Number.isSafeInteger(n[size])) diffs.push(`${size} ${n[size]} is not exact`);
  }
  return diffs.join('; ');
}

test('parseNarinfo on 12,000 mutated narinfos: a one-line NarcacheError or what Nix reads', async (t) => {
  const rng = random(0x1f0);
  const N = 12_000;
  const failures = [];
  const ops = {};
  let accepted = 0;
  let slowest = 0;
  for (let i = 0; i < N; i++) {
    let { text, op } = mutateNarinfo(rng.pick(originals), rng, nix32Decode);
    // A second mutation on top, now and then.
    if (rng.int(4) === 0) ({ text, op } = { text: mutateNarinfo(text, rng, nix32Decode).text, op: `${op}+` });
    ops[op] = (ops[op] ?? 0) + 1;
    const started = performance.now();
    let result;
    try {
      result = parseNarinfo(text, 'x.narinfo');
    } catch (e) {
      if (!(e instanceof NarcacheError) || e.message.includes('\n') || !e.message.startsWith('x.narinfo: ')) {
        failures.push({ i, op, text, error: `${e.name}: ${e.message}` });
      }
    }
    slowest = Math.max(slowest, performance.now() - started);
    if (result) {
      accepted++;
      const diff = disagreement(result, nixReading(text));
      if (diff) failures.push({ i, op, text, diff });
    }
    if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
  }
  const peak = peakRss();
  t.log(`${N} narinfo mutations, ${accepted} accepted, slowest call ${slowest.toFixed(1)} ms, peak RSS ${(peak / MiB).toFixed(0)} MiB`);
  t.log(`operations: ${JSON.stringify(ops)}`);
  const kinds = {};
  for (const f of failures) {
    const kind = f.error ?? f.diff.replace(/: .*? vs Nix .*?(;|$)/g, '$1');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  if (failures.length) t.log(`failures by kind: ${JSON.stringify(kinds)}`);
  t.deepEqual(failures.slice(0, 10), [], `${failures.length} failures`);
  t.true(accepted > 100 && accepted < N / 2, `${accepted} accepted`);
  t.true(slowest < 2000, `slowest ${slowest} ms`);
  t.true(peak < RSS_LIMIT, `peak RSS ${peak}`);
});

/**
 * A copy of the cache `ours` with the narinfo texts of `replaced` (hash part → text)
 * instead of its own; nar/ is a symlink to the original's.
 */
async function cacheWith(replaced) {
  const dir = makeTempDir('narcache-fuzz-copy-');
  await fsp.copyFile(path.join(ours, 'nix-cache-info'), path.join(dir, 'nix-cache-info'));
  await fsp.symlink(path.join(ours, 'nar'), path.join(dir, 'nar'));
  for (const [hp, text] of await readNarinfos(ours)) {
    await fsp.writeFile(path.join(dir, `${hp}.narinfo`), replaced.get(hp) ?? text);
  }
  return dir;
}

/** `nix path-info --json` of store paths in the cache `dir`: the entries, or Nix's error line. */
async function nixView(dir, storePaths) {
  const r = await run('nix', ['path-info', '--json', '--store', `file://${dir}`, ...storePaths]);
  return r.code === 0 ? JSON.parse(r.stdout) : r.stderr.split('\n').find((l) => l.startsWith('error: ')) ?? r.stderr;
}

test('narcache verify on caches of mutated narinfos: what it calls valid, Nix reads as the original', async (t) => {
  const rng = random(0x2f1);
  const base = await readNarinfos(ours);
  const storePaths = [...base.values()].map((text) => parseNarinfo(text).storePath);
  const originalView = new Map((await nixView(ours, storePaths)).map((e) => [e.path, e]));
  const failures = [];
  let mutants = 0;
  let calledValid = 0;
  for (let round = 0; round < 5; round++) {
    const changed = new Map();
    const replaced = new Map();
    for (const [hp, text] of base) {
      const { text: mutated, op } = mutateNarinfo(text, rng, nix32Decode);
      replaced.set(hp, mutated);
      if (mutated !== text) changed.set(`${hp}.narinfo`, { hp, op, mutated, storePath: parseNarinfo(text).storePath });
      mutants++;
    }
    const dir = await cacheWith(replaced);
    const { code, report, stderr } = await verifyJson(dir);
    if (!report) {
      failures.push(`round ${round}: verify exited ${code} without a report: ${stderr}`);
      continue;
    }
    t.is(code, report.ok ? 0 : 1, `round ${round}: exit code`);
    const flagged = new Set(report.problems.map((p) => p.file));
    const trusted = [...changed.entries()].filter(([file]) => !flagged.has(file)).map(([, c]) => c);
    calledValid += trusted.length;
    // Nix reads every narinfo verify calls valid as it reads the original: asked at once,
    // or, if it fails on one, for each apart, to know which.
    const all = await nixView(dir, trusted.map((c) => c.storePath));
    const views =
      typeof all === 'string'
        ? await Promise.all(trusted.map(async (c) => [await nixView(dir, [c.storePath])].flat()[0]))
        : trusted.map((c) => all.find((v) => v.path === c.storePath));
    trusted.forEach((c, i) => {
      const view = views[i];
      const want = originalView.get(c.storePath);
      // Without its References line a narinfo says the path has none, which only a
      // signature could contradict: references are compared where the line is there.
      const diff =
        typeof view !== 'object' || !view
          ? `Nix cannot read it: ${view}`
          : ['narHash', 'narSize', 'url']
              .concat(/^References: /m.test(c.mutated) ? ['references'] : [])
              .filter((k) => JSON.stringify(view[k]) !== JSON.stringify(want[k]))
              .map((k) => `${k}: ${JSON.stringify(view[k])} vs ${JSON.stringify(want[k])}`)
              .join('; ');
      if (diff) failures.push({ round, op: c.op, narinfo: c.mutated, diff });
    });
  }
  t.log(`${mutants} narinfos mutated in 5 caches, ${calledValid} changed ones called valid by verify, all read by Nix as their originals`);
  t.deepEqual(failures.slice(0, 10), [], `${failures.length} failures`);
});

// The ways the fuzzing above found in which verify called a narinfo valid that Nix reads
// otherwise or not at all (fixed in parseNarinfo): each must now be a problem of that file.
const MISREAD = [
  ['no final newline (a truncated file)', 'leaf', (s) => s.slice(0, -1)],
  ['an empty line, into which Nix swallows the next (References)', 'leaf', (s) => s.replace('References: ', '\nReferences: ')],
  ['a key not followed by ": "', 'leaf', (s) => s.replace('References: ', 'References:')],
  ['an empty Deriver', 'blob', (s) => s.replace(/^Deriver: .*$/m, 'Deriver: ')],
  ['a Deriver that is no store path', 'blob', (s) => s.replace(/^Deriver: .*$/m, 'Deriver: bad!name')],
  ['a CA of no known kind', 'leaf', (s) => s.replace('CA: text:', 'CA: texx:')],
  ['a CA hash with a character outside nix32', 'leaf', (s) => s.replace(/^(CA: text:sha256:.)./m, '$1Z')],
  ['a NarHash without its type', 'leaf', (s) => s.replace('NarHash: sha256:', 'NarHash: ')],
  ['a NarSize of 2^64', 'leaf', (s) => s.replace(/^NarSize: .*$/m, 'NarSize: 18446744073709551616')],
];

test('each way of misreading a narinfo that fuzzing found is a problem for verify, and Nix reads it otherwise', async (t) => {
  const base = await readNarinfos(ours);
  const find = (name) => [...base].find(([, text]) => new RegExp(`^StorePath: .*-${name}-5$`, 'm').test(text));
  const rows = [];
  for (const [what, name, mutate] of MISREAD) {
    const [hp, text] = find(name);
    const mutated = mutate(text);
    t.not(mutated, text, what);
    const dir = await cacheWith(new Map([[hp, mutated]]));
    const { report } = await verifyJson(dir);
    const problems = report.problems.filter((p) => p.file === `${hp}.narinfo`).map((p) => p.problem);
    t.true(problems.length > 0, `verify lets ${what} pass`);
    const storePath = /^StorePath: (.*)$/m.exec(text)[1];
    const [nix, original] = await Promise.all([dir, ours].map((d) => nixView(d, [storePath])));
    const nixSays =
      typeof nix === 'string' ? nix : JSON.stringify(nix) === JSON.stringify(original) ? 'the same' : `other data: ${JSON.stringify(nix)}`;
    t.not(nixSays, 'the same', `Nix reads ${what} as the original`);
    rows.push(`${what}: verify "${problems[0]}"; Nix: ${nixSays.slice(0, 100)}`);
  }
  t.log(rows.join('\n'));
});

test('hash spellings: verify accepts exactly those Nix reads', async (t) => {
  // The NarHash of one narinfo written as every spelling; `nix path-info` is the judge.
  const [hp, text] = [...(await readNarinfos(ours))][0];
  const narHash = /^NarHash: (.*)$/m.exec(text)[1];
  const results = [];
  for (const spelling of hashSpellings(narHash, nix32Decode)) {
    const dir = await cacheWith(new Map([[hp, text.replace(narHash, spelling)]]));
    const storePath = /^StorePath: (.*)$/m.exec(text)[1];
    const nix = await nixView(dir, [storePath]);
    const verify = await verifyJson(dir);
    results.push({ spelling, nix: typeof nix !== 'string', verify: verify.report?.ok });
  }
  t.log(results.map((r) => `${r.spelling.slice(0, 20)}…: Nix ${r.nix ? 'reads' : 'refuses'}, verify ${r.verify ? 'accepts' : 'refuses'}`).join('\n'));
  t.deepEqual(
    results.filter((r) => r.verify && !r.nix),
    [],
    'verify accepts no spelling that Nix refuses',
  );
  t.true(results.some((r) => r.verify), 'other spellings Nix reads are accepted');
});

// ---------------------------------------------------------------------------------------
// NARs

const CALL_TIMEOUT_MS = 20_000;

/** verifyNar, or a rejection naming the timeout if it does not settle in time. */
function verifyNarWithin(file, compression) {
  let timer;
  return Promise.race([
    verifyNar(file, compression).finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`HANG: verifyNar did not settle in ${CALL_TIMEOUT_MS} ms`)), CALL_TIMEOUT_MS);
    }),
  ]);
}

/** Runs `work(i)` for i < n, `limit` at a time. */
async function pool(n, limit, work) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await work(next++);
    }),
  );
}

const sha256 = (b) => createHash('sha256').update(b).digest();

/** Real NARs of the fixtures: every kind of node, odd names, deep and wide directories. */
async function realNars() {
  const rootPaths = await closure([fx.root]);
  const pick = (suffix) => rootPaths.find((p) => p.endsWith(suffix));
  const tree = pick('-tree');
  const sources = [
    ...['-lib', '-app', '-fod-rec', '-multi-dev', '-symlink-path', '-single-exec', '-empty-dir', '-empty-file', '-ca-text-ref.txt'].map(pick),
    ...['sortdir', 'a', 'deep', 'sub', 'dir with space', 'many'].map((d) => path.join(tree, d)),
    many.closureA.find((p) => p.endsWith('-leaf-7')),
  ];
  return Promise.all(
    sources.map(async (source) => {
      const nar = await dump(source);
      return { source, nar, strings: narStrings(nar) };
    }),
  );
}

const execFileBuffer = promisify(execFile);
/** nix-store --dump PATH, whole (the fixtures' NARs are small). */
async function dump(p) {
  const { stdout } = await execFileBuffer('nix-store', ['--dump', p], { env: nixEnv, encoding: 'buffer', maxBuffer: 1 << 26 });
  return stdout;
}

test('verifyNar on 12,000 mutated NARs: a one-line error or the bytes\' own hash; bounded time and memory; Nix agrees on a sample', async (t) => {
  const nars = await realNars();
  const rng = random(0x3f2);
  const dir = scratchDir('narcache-fuzz-nar-');
  const N = 12_000;
  const LIMIT = 8;
  const failures = [];
  const ops = {};
  const sample = { accepted: [], rejected: [] };
  let accepted = 0;
  let slowest = 0;
  // Made one at a time, in order (the pool takes indices in order), and dropped once
  // checked, except those kept for Nix.
  const mutant = () => {
    const { nar, strings } = rng.pick(nars);
    let { bytes, op } = mutateNar(nar, strings, rng);
    // A second, byte-level, mutation on top, now and then.
    if (rng.int(5) === 0) ({ bytes, op } = { bytes: mutateNar(bytes, undefined, rng).bytes, op: `${op}+` });
    return { bytes, op };
  };
  const kept = new Map();
  await pool(N, LIMIT, async (i) => {
    const { bytes, op } = mutant();
    ops[op] = (ops[op] ?? 0) + 1;
    const file = path.join(dir, `m${i}.nar`);
    await fsp.writeFile(file, bytes);
    const started = performance.now();
    const outcome = await verifyNarWithin(file, 'none').then(
      (check) => ({ check }),
      (e) => ({ error: e.message }),
    );
    slowest = Math.max(slowest, performance.now() - started);
    await fsp.rm(file);
    if (outcome.check) {
      accepted++;
      const want = `sha256:${lib.nix32Encode(sha256(bytes))}`;
      if (outcome.check.narHash !== want || outcome.check.narSize !== bytes.length) {
        failures.push({ i, op, got: outcome.check, want: { narHash: want, narSize: bytes.length } });
      }
      if (sample.accepted.length < 25) {
        sample.accepted.push(i);
        kept.set(i, { bytes, op });
      }
    } else {
      if (outcome.error.includes('\n') || /HANG|panicked/.test(outcome.error)) failures.push({ i, op, error: outcome.error });
      // Not huge lengths: nix-store --restore allocates what they claim (2 GiB for 2^31).
      if (sample.rejected.length < 25 && i % 97 === 0 && !op.startsWith('hugeLength')) {
        sample.rejected.push(i);
        kept.set(i, { bytes, op });
      }
    }
  });
  const peak = peakRss();
  t.log(`${N} NAR mutations of ${nars.length} real NARs, ${accepted} accepted, slowest call ${slowest.toFixed(0)} ms, peak RSS ${(peak / MiB).toFixed(0)} MiB`);
  t.log(`operations: ${JSON.stringify(ops)}`);
  t.deepEqual(failures.slice(0, 10), [], `${failures.length} failures`);
  t.true(peak < RSS_LIMIT, `peak RSS ${peak}`);

  // Real Nix on the sample: a NAR is accepted exactly when nix-store --restore takes it
  // and nix-store --dump of what it restored gives back the same bytes.
  const disagreements = [];
  const judge = async (i) => {
    const out = path.join(dir, `restored-${i}`);
    const restore = await run('nix-store', ['--restore', out], { input: kept.get(i).bytes });
    const canonical = restore.code === 0 && (await dump(out).catch(() => Buffer.alloc(0))).equals(kept.get(i).bytes);
    await run('rm', ['-rf', out]);
    return canonical;
  };
  for (const [verdict, list] of [
    [true, sample.accepted],
    [false, sample.rejected],
  ]) {
    await pool(list.length, 2, async (k) => {
      const i = list[k];
      if ((await judge(i)) !== verdict) disagreements.push({ i, op: kept.get(i).op, narcache: verdict ? 'accepted' : 'refused' });
    });
  }
  t.log(`Nix judged ${sample.accepted.length} accepted and ${sample.rejected.length} refused mutants`);
  t.deepEqual(disagreements, []);
});

for (const compression of ['zstd', 'xz']) {
  test(`verifyNar on 1,000 mutated ${compression} NAR files: a one-line error or the right hashes, bounded memory`, async (t) => {
    const src = makeTempDir(`narcache-fuzz-${compression}-`);
    await cliBuild([many.rootA], src, { compression });
    const files = [];
    for (const text of (await readNarinfos(src)).values()) {
      const url = /^URL: (.*)$/m.exec(text)[1];
      const bytes = await fsp.readFile(path.join(src, url));
      if (bytes.length < 64 * 1024) files.push(bytes);
    }
    const rng = random(compression === 'zstd' ? 0x4f3 : 0x5f4);
    const dir = scratchDir('narcache-fuzz-compressed-');
    const failures = [];
    let accepted = 0;
    await pool(1000, 8, async (i) => {
      const original = rng.pick(files);
      const b = Buffer.from(original);
      const op = rng.pick(['flip', 'truncate', 'insert', 'header']);
      let bytes = b;
      if (op === 'flip') b[rng.int(b.length)] ^= 1 + rng.int(255);
      if (op === 'header') b[rng.int(Math.min(32, b.length))] ^= 1 + rng.int(255);
      if (op === 'truncate') bytes = b.subarray(0, rng.int(b.length));
      if (op === 'insert') {
        const at = rng.int(b.length);
        bytes = Buffer.concat([b.subarray(0, at), Buffer.from([rng.int(256)]), b.subarray(at)]);
      }
      const file = path.join(dir, `m${i}`);
      await fsp.writeFile(file, bytes);
      const outcome = await verifyNarWithin(file, compression).then(
        (check) => ({ check }),
        (e) => ({ error: e.message }),
      );
      if (outcome.check) {
        accepted++;
        const want = await hashDecompressed(file, compression);
        if (outcome.check.narHash !== `sha256:${want.nix32}` || outcome.check.narSize !== want.size) failures.push({ i, op, got: outcome.check });
      } else if (outcome.error.includes('\n') || /HANG|panicked/.test(outcome.error)) failures.push({ i, op, error: outcome.error });
      await fsp.rm(file);
    });
    const peak = peakRss();
    t.log(`${compression}: 1000 mutations of ${files.length} files, ${accepted} accepted, peak RSS ${(peak / MiB).toFixed(0)} MiB`);
    t.deepEqual(failures, []);
    t.true(peak < RSS_LIMIT, `peak RSS ${peak}`);
  });
}
