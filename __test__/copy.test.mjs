// `narcache copy` between directory caches, against real Nix: a copy of a cache that
// `nix copy` wrote holds byte-identical narinfos and NAR files and Nix substitutes from
// it; with a key, narinfos gain a signature that Nix accepts and nothing else changes; a
// NAR file that is not what its narinfo says is not copied, nor is what refers to it;
// --keep copies a closure; SIGKILL at seeded moments leaves the copy sound, and a re-run
// completes it.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';

import { assertSound, buildAndSignal, buildMany, random, verifyJson } from './helpers/reliability.mjs';
import { contentSnapshot, hashPart, narinfoFields, readNarinfos, withoutFields } from './helpers/cache.mjs';
import {
  buildFixtures,
  CLOSURE_NIX,
  cleanupTempDirs,
  closure,
  cliBuild,
  makeTempDir,
  nixBuild,
  nixCopyTo,
  nixGenerateKey,
  runCli,
  substitute,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const many = await buildMany();
const [debugInfo] = await nixBuild(CLOSURE_NIX, ['debugInfo']);

test.after.always(cleanupTempDirs);

async function copy(from, to, args = []) {
  const r = await runCli(['copy', from, to, ...args, '--json']);
  return { ...r, summary: r.stdout ? JSON.parse(r.stdout) : undefined };
}

/** narinfos, NAR files and nix-cache-info of a cache: what a copy must reproduce. */
async function cacheFiles(dir) {
  const all = await contentSnapshot(dir);
  return new Map([...all].filter(([f, v]) => v.startsWith('file') && (f === 'nix-cache-info' || f.endsWith('.narinfo') || f.startsWith('nar/'))));
}

test("a copy of nix copy's xz cache is byte-identical and Nix substitutes from it", async (t) => {
  const from = path.join(makeTempDir('narcache-copy-src-'), 'cache');
  await nixCopyTo(from, [fx.root], 'xz');
  const to = path.join(makeTempDir('narcache-copy-dst-'), 'cache');
  const r = await copy(from, to);
  t.is(r.code, 0, r.stderr);
  const paths = (await closure([fx.root])).length;
  t.like(r.summary, { paths, copied: paths, skipped: 0, serverSide: 0, problems: [] });
  t.deepEqual(Object.fromEntries(await cacheFiles(to)), Object.fromEntries(await cacheFiles(from)), 'identical files');
  const sub = await substitute(to, fx.root);
  t.is(sub.copy.code, 0, `nix copy --from file://: ${sub.copy.stderr}`);
  t.is(sub.verify.code, 0, `nix store verify: ${sub.verify.stderr}`);
  const again = await copy(from, to);
  t.like(again.summary, { copied: 0, skipped: paths, narFiles: 0 }, 'a second copy skips every path');
});

test('the listings and debug-info links nix copy wrote are copied with their narinfos, byte for byte', async (t) => {
  const from = path.join(makeTempDir('narcache-copy-index-src-'), 'cache');
  await nixCopyTo(from, [fx.root, debugInfo], 'xz', { params: { 'write-nar-listing': 'true', 'index-debug-info': 'true' } });
  const to = path.join(makeTempDir('narcache-copy-index-dst-'), 'cache');
  const r = await copy(from, to);
  t.is(r.code, 0, r.stderr);
  const files = async (dir) => Object.fromEntries([...(await contentSnapshot(dir))].filter(([, v]) => v.startsWith('file')));
  const theirs = await files(from);
  const paths = (await closure([fx.root, debugInfo])).length;
  t.is(Object.keys(theirs).filter((f) => f.endsWith('.ls')).length, paths, 'nix copy wrote a listing per path');
  const links = Object.keys(theirs).filter((f) => f.startsWith('debuginfo/'));
  t.true(links.length > 0, 'nix copy wrote debug-info links');
  t.deepEqual(await files(to), theirs, 'identical files, listings and links included');
  const { code, report } = await verifyJson(to);
  t.is(code, 0, JSON.stringify(report?.problems));
  t.like(report, { ok: true, listings: paths, debugInfoLinks: links.length });
});

test('with a key, each narinfo gains its signature and nothing else changes', async (t) => {
  const keys = makeTempDir('narcache-copy-keys-');
  const key = await nixGenerateKey('copy-test-1', keys);
  const from = makeTempDir('narcache-copy-sign-src-');
  await cliBuild([fx.root2], from);
  const to = makeTempDir('narcache-copy-sign-dst-');
  const r = await copy(from, to, ['--sign-key-file', key.secretKeyFile]);
  t.is(r.code, 0, r.stderr);
  const [before, after] = [await readNarinfos(from), await readNarinfos(to)];
  t.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  for (const [hp, text] of after) {
    t.is(withoutFields(text, new Set(['Sig'])), withoutFields(before.get(hp), new Set(['Sig'])), `${hp}: unchanged but for Sig`);
    t.is(narinfoFields(text).Sig.length, 1, `${hp}: one signature`);
  }
  const sub = await substitute(to, fx.root2, { trustedPublicKey: key.publicKey.trim() });
  t.is(sub.copy.code, 0, `nix copy with signatures enforced: ${sub.copy.stderr}`);
  t.is(sub.verify.code, 0, `nix store verify: ${sub.verify.stderr}`);
});

test('a NAR file that is not what its narinfo says is not copied, nor what refers to it', async (t) => {
  const from = makeTempDir('narcache-copy-bad-src-');
  await cliBuild([many.rootA], from);
  const leaf = many.closureA.find((p) => p.endsWith('-leaf-100'));
  const blob = many.closureA.find((p) => p.endsWith('-blob-3'));
  const narOf = (p) => path.join(from, narinfoFields(fs.readFileSync(path.join(from, `${hashPart(p)}.narinfo`), 'utf8')).URL);
  const flipped = fs.readFileSync(narOf(leaf));
  flipped[flipped.length - 5] ^= 1;
  fs.writeFileSync(narOf(leaf), flipped);
  fs.appendFileSync(narOf(blob), 'x');
  const to = makeTempDir('narcache-copy-bad-dst-');
  const r = await copy(from, to);
  t.is(r.code, 1);
  const problem = (p) => r.summary.problems.find((q) => q.storePath === p)?.problem;
  t.regex(problem(leaf), /^FileHash does not match nar\//);
  t.regex(problem(blob), /is longer than its FileSize/);
  t.is(problem(many.rootA), 'not copied: a path it refers to could not be');
  const { narinfos, report } = await assertSound(t, to, many.db, 'the copy');
  t.false(narinfos.has(leaf));
  t.false(narinfos.has(many.rootA));
  t.true(narinfos.size > 0 && narinfos.size < many.closureA.length);
  // NAR files of paths that waited for the refused ones stay unnamed, as an interrupted build's do.
  const copiedUrls = new Set([...narinfos.values()].map((f) => f.URL));
  const refusedUrls = [leaf, blob].map((p) => path.relative(from, narOf(p)));
  t.true(report.orphans.every((o) => !copiedUrls.has(o) && !refusedUrls.includes(o)), 'no refused NAR file copied');
  t.deepEqual(
    fs.readdirSync(path.join(to, 'nar')).filter((n) => n.startsWith('.tmp-narcache-')),
    [],
    'no temporary file left behind',
  );
});

test('--keep copies the closure of the paths named', async (t) => {
  const from = makeTempDir('narcache-copy-keep-src-');
  await cliBuild([many.rootA, many.rootB], from);
  const leaf = many.closureA.find((p) => p.endsWith('-leaf-60'));
  const to = makeTempDir('narcache-copy-keep-dst-');
  const first = await copy(from, to, ['--keep', leaf]);
  t.is(first.code, 0, first.stderr);
  const leafClosure = await closure([leaf]);
  t.is(first.summary.copied, leafClosure.length);
  const r = await copy(from, to, ['--keep', many.rootB]);
  t.is(r.code, 0, r.stderr);
  t.is(r.summary.copied, many.closureB.length - leafClosure.length);
  t.true(r.summary.skipped > 0 && r.summary.skipped < leafClosure.length, `the closure already there is not walked (${r.summary.skipped} skipped)`);
  const { narinfos } = await assertSound(t, to, many.db, 'the copy');
  t.deepEqual([...narinfos.keys()].sort(), [...new Set([...leafClosure, ...many.closureB])].sort());
  const missing = await runCli(['copy', from, to, '--keep', fx.root]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, new RegExp(`${hashPart(fx.root)}.narinfo: is not in ${from}`));
});

test('SIGKILL at seeded moments of copy leaves the copy sound; a re-run completes it byte for byte', async (t) => {
  const rng = random(0xc09);
  const from = makeTempDir('narcache-copy-kill-src-');
  await cliBuild([many.rootA], from, { compression: 'none' });
  const files = await cacheFiles(from);
  const log = [];
  for (let kill = 0; kill < 8; kill++) {
    // Each into a new destination: a copy of 131 paths takes a fraction of a second.
    const to = makeTempDir('narcache-copy-kill-dst-');
    const kind = rng.pick(['narinfo', 'temp', 'time']);
    const moment =
      kind === 'time' ? { kind, ms: 60 + rng.int(400) } : { kind, n: 1 + rng.int(kind === 'temp' ? 40 : many.closureA.length - 1) };
    const r = await buildAndSignal(['copy', from, to, '--jobs', '2'], to, moment, 'SIGKILL');
    const label = `kill ${kill + 1} (${JSON.stringify(moment)})`;
    const { narinfos, temps } = await assertSound(t, to, many.db, label, { unstarted: true });
    log.push({ ...moment, killed: r.signal === 'SIGKILL', narinfos: narinfos.size, temps: temps.length });
    const again = await copy(from, to);
    t.is(again.code, 0, `${label}: re-run: ${again.stderr}`);
    const copied = await cacheFiles(to);
    for (const [f, v] of files) t.is(copied.get(f), v, `${label}: ${f}`);
  }
  t.log(JSON.stringify(log));
  t.true(log.some((k) => k.killed && k.narinfos > 0 && k.narinfos < many.closureA.length), 'a kill amid the narinfos');
  t.true(log.some((k) => k.killed && k.temps > 0), 'a kill amid a NAR file');
});
