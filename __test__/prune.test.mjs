// `narcache prune` on directory caches, against real Nix: after a prune the cache holds
// exactly the closure of what was kept, verifies sound and Nix substitutes from it; a NAR
// file that a kept narinfo also names stays; unnamed NAR files and temporary files go only
// once older than the grace age; a dry run removes nothing and predicts what a prune frees;
// a path to keep that the cache lacks stops it. SIGKILL at seeded moments never leaves a
// narinfo whose NAR or references are gone, and a build into the same cache at the same
// time completes and leaves it sound (the cache lock makes the one wait for the other).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';

import { assertSound, buildAndSignal, buildMany, random, startCli, verifyJson } from './helpers/reliability.mjs';
import { contentSnapshot, hashPart, readNarinfos, narinfoFields } from './helpers/cache.mjs';
import { CLOSURE_NIX, cleanupTempDirs, cliBuild, closure, makeTempDir, nixBuild, runCli, substitute } from './helpers/nix.mjs';

const many = await buildMany();
const [dupA, dupB, debugInfo] = await nixBuild(CLOSURE_NIX, ['dupA', 'dupB', 'debugInfo']);
// A leaf deep in the chain: its closure is a fraction of rootA's, reached through many levels.
const leaf = many.closureA.find((p) => p.endsWith('-leaf-40'));
const leafClosure = await closure([leaf]);

test.after.always(cleanupTempDirs);

/** A cache holding the closures of rootA and rootB. */
async function unionCache(label) {
  const dir = makeTempDir(`narcache-prune-${label}-`);
  await cliBuild([many.rootA, many.rootB], dir);
  return dir;
}

async function prune(dir, args) {
  const r = await runCli(['prune', dir, ...args, '--json']);
  return { ...r, summary: r.code === 0 ? JSON.parse(r.stdout) : undefined };
}

const storePaths = async (dir) => [...(await readNarinfos(dir)).values()].map((t) => narinfoFields(t).StorePath).sort();

test('prune keeps exactly the closure, removes the rest with its NAR files; Nix substitutes the kept closure', async (t) => {
  const dir = await unionCache('keep');
  const before = await verifyJson(dir);
  const r = await prune(dir, ['--keep', many.rootA]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await storePaths(dir), many.closureA, 'narinfos: the closure of rootA');
  const extra = many.union.length - many.closureA.length;
  t.like(r.summary, { narinfos: many.union.length, kept: many.closureA.length, removedNarinfos: extra, removedNarFiles: extra, missing: [] });
  const { report } = await assertSound(t, dir, many.db, 'after prune');
  t.deepEqual(report.orphans, [], 'no NAR file left that no narinfo names');
  t.is(report.fileBytes + r.summary.freedBytes, before.report.fileBytes, 'freed bytes: those of the removed NAR files');
  const sub = await substitute(dir, many.rootA);
  t.is(sub.copy.code, 0, `nix copy --from file://: ${sub.copy.stderr}`);
  t.is(sub.verify.code, 0, `nix store verify: ${sub.verify.stderr}`);

  const again = await prune(dir, ['--keep', many.rootA]);
  t.like(again.summary, { removedNarinfos: 0, removedNarFiles: 0, kept: many.closureA.length }, 'a second prune has nothing to do');
});

test('prune takes the listings of the narinfos it removes and the debug-info links into their NAR files', async (t) => {
  const dir = makeTempDir('narcache-prune-index-');
  await cliBuild([dupA, debugInfo], dir, { args: ['--write-nar-listing', '--index-debug-info'] });
  const listings = () => fs.readdirSync(dir).filter((f) => f.endsWith('.ls')).sort();
  const links = () => fs.readdirSync(path.join(dir, 'debuginfo'));
  const linksBefore = links().length;
  t.true(linksBefore > 0, 'the build wrote debug-info links');
  const kept = await closure([dupA]);
  const gone = (await closure([debugInfo])).filter((p) => !kept.includes(p));
  const r = await prune(dir, ['--keep', dupA]);
  t.is(r.code, 0, r.stderr);
  t.like(r.summary, { removedNarinfos: gone.length, removedListings: gone.length, removedDebugInfoLinks: linksBefore });
  t.deepEqual(listings(), kept.map((p) => `${hashPart(p)}.ls`).sort(), 'the listings of the kept paths, and only those');
  t.deepEqual(links(), [], 'no link into a removed NAR file');
  const { code, report } = await verifyJson(dir);
  t.is(code, 0, JSON.stringify(report?.problems));
  t.like(report, { ok: true, listings: kept.length, debugInfoLinks: 0, orphans: [] });
});

test('a dry run lists what would go and removes nothing; the prune then frees what it said', async (t) => {
  const dir = await unionCache('dry');
  const snapshot = await contentSnapshot(dir);
  const dry = await runCli(['prune', dir, '--keep', leaf, '--dry-run']);
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(await contentSnapshot(dir), snapshot, 'nothing changed');
  const listed = dry.stdout.split('\n').filter(Boolean);
  const gone = many.union.filter((p) => !leafClosure.includes(p));
  for (const p of gone) t.true(listed.some((l) => l.startsWith(`would remove ${p}`)), `${p} listed`);
  t.true(listed.every((l) => l.startsWith('would remove ')), 'one line per file');
  t.regex(dry.stderr, new RegExp(`would remove ${gone.length} narinfos, ${gone.length} NAR files`));

  const json = await prune(dir, ['--keep', leaf, '--dry-run']);
  const real = await prune(dir, ['--keep', leaf]);
  t.is(real.code, 0, real.stderr);
  t.like(json.summary, { dryRun: true, removedNarinfos: gone.length, removedNarFiles: gone.length });
  t.is(json.stderr, '', 'a dry run with --json says nothing but its summary');
  t.is(json.summary.freedBytes, real.summary.freedBytes, 'the dry run predicted the bytes freed');
  t.deepEqual(await storePaths(dir), leafClosure);
  await assertSound(t, dir, many.db, 'after prune to a leaf');
});

test('a NAR file that a kept narinfo also names stays', async (t) => {
  const dir = makeTempDir('narcache-prune-dup-');
  await cliBuild([dupA, dupB], dir);
  const [a, b] = [dupA, dupB].map((p) => narinfoFields(fs.readFileSync(path.join(dir, `${hashPart(p)}.narinfo`), 'utf8')));
  t.is(a.URL, b.URL, 'fixture: dup-a and dup-b share one NAR file');
  const r = await prune(dir, ['--keep', dupA, '--grace', '0']);
  t.is(r.code, 0, r.stderr);
  t.like(r.summary, { removedNarinfos: 1, removedNarFiles: 0 });
  t.deepEqual(await storePaths(dir), [dupA]);
  t.true(fs.existsSync(path.join(dir, a.URL)), 'the shared NAR file is there');
  const { code } = await verifyJson(dir);
  t.is(code, 0);
});

test('unnamed NAR files and temporary files go only once older than the grace age', async (t) => {
  const dir = await unionCache('grace');
  const hourAgo = new Date(Date.now() - 2 * 3600 * 1000);
  const files = {
    oldOrphan: 'nar/0000000000000000000000000000000000000000000000000000.nar.zst',
    newOrphan: 'nar/1111111111111111111111111111111111111111111111111111.nar.zst',
    oldTemp: 'nar/.tmp-narcache-1-old',
    newTemp: '.tmp-narcache-2-new.narinfo',
  };
  for (const f of Object.values(files)) fs.writeFileSync(path.join(dir, f), 'x');
  for (const f of [files.oldOrphan, files.oldTemp]) fs.utimesSync(path.join(dir, f), hourAgo, hourAgo);
  const r = await prune(dir, ['--keep', many.rootA, '--keep', many.rootB]);
  t.is(r.code, 0, r.stderr);
  t.like(r.summary, { removedNarinfos: 0, removedNarFiles: 1, removedTemporary: 1, freedBytes: 2 });
  t.false(fs.existsSync(path.join(dir, files.oldOrphan)));
  t.false(fs.existsSync(path.join(dir, files.oldTemp)));
  t.true(fs.existsSync(path.join(dir, files.newOrphan)), 'a young unnamed NAR file stays: a build may be about to name it');
  t.true(fs.existsSync(path.join(dir, files.newTemp)), 'a young temporary file stays');
  const zero = await prune(dir, ['--keep', many.rootA, '--keep', many.rootB, '--grace', '0']);
  t.like(zero.summary, { removedNarFiles: 1, removedTemporary: 1 });
});

test('a path to keep that the cache lacks stops prune before it removes anything', async (t) => {
  const dir = makeTempDir('narcache-prune-missing-');
  await cliBuild([leaf], dir);
  const snapshot = await contentSnapshot(dir);
  const r = await runCli(['prune', dir, '--keep', many.rootA]);
  t.is(r.code, 1);
  t.is(r.stderr, `narcache: ${many.rootA} is not in ${dir}: nothing was removed (pass --ignore-missing to prune anyway)\n`);
  t.deepEqual(await contentSnapshot(dir), snapshot);
  const none = await runCli(['prune', dir]);
  t.is(none.code, 1);
  t.regex(none.stderr, /^narcache: nothing to keep given/);

  const listFile = path.join(makeTempDir('narcache-prune-list-'), 'keep');
  fs.writeFileSync(listFile, `${many.rootA}\n\n${leaf}\n`);
  const ignored = await prune(dir, ['--keep-from', listFile, '--ignore-missing']);
  t.is(ignored.code, 0, ignored.stderr);
  t.deepEqual(ignored.summary.missing, [many.rootA]);
  t.deepEqual(await storePaths(dir), leafClosure, 'the closure of the path present stays');
});

test('SIGKILL at seeded moments of prune never leaves a narinfo whose NAR or references are gone', async (t) => {
  const rng = random(0x9e1);
  const dir = makeTempDir('narcache-prune-kill-');
  const log = [];
  for (let kill = 0; kill < 8; kill++) {
    await cliBuild([many.rootA, many.rootB], dir);
    // Mostly amid the removals, which go a wave at a time; now and then at a random time.
    const moment = rng.int(4)
      ? { kind: 'fewer', n: leafClosure.length + 1 + rng.int(many.union.length - leafClosure.length) }
      : { kind: 'time', ms: 60 + rng.int(800) };
    const r = await buildAndSignal(['prune', dir, '--keep', leaf, '--grace', '0'], dir, moment, 'SIGKILL');
    const { narinfos } = await assertSound(t, dir, many.db, `kill ${kill + 1} (${JSON.stringify(moment)})`);
    log.push({ ...moment, killed: r.signal === 'SIGKILL', narinfos: narinfos.size });
  }
  t.log(JSON.stringify(log));
  t.true(log.some((k) => k.killed && k.narinfos > leafClosure.length && k.narinfos < many.union.length), 'a kill amid the removals');
  const r = await prune(dir, ['--keep', leaf, '--grace', '0']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await storePaths(dir), leafClosure, 'a re-run completes the prune');
  const { report } = await assertSound(t, dir, many.db, 'after the re-run');
  t.deepEqual(report.orphans, []);
});

test('a build into the cache while prune runs completes, and the cache stays sound', async (t) => {
  const rng = random(0x5c2);
  let waited = 0;
  for (let round = 0; round < 3; round++) {
    // rootB's new paths refer to blobs that the prune removes: a build that found them
    // present would publish narinfos referring to removed paths, but for the lock.
    const dir = makeTempDir('narcache-prune-race-');
    await cliBuild([many.rootA], dir);
    const delay = rng.int(400);
    const build = startCli(['build', many.rootB, '-o', dir, '--compression', 'xz', '--json']);
    await new Promise((r) => setTimeout(r, delay));
    const pruned = startCli(['prune', dir, '--keep', leaf, '--grace', '0', '--json']);
    const [b, p] = await Promise.all([build.done, pruned.done]);
    t.is(b.code, 0, `build: ${b.stderr}`);
    t.is(p.code, 0, `prune: ${p.stderr}`);
    if (p.stderr.includes('waiting for the builds writing into')) waited++;
    const { narinfos } = await assertSound(t, dir, many.db, `round ${round} (prune ${delay} ms after the build)`);
    const present = [...narinfos.keys()];
    t.true(leafClosure.every((q) => present.includes(q)), 'the kept closure is there');
    const buildLast = present.includes(many.rootB);
    if (buildLast) t.true(many.closureB.every((q) => present.includes(q)), 'a build that ended last left its whole closure');
    else t.deepEqual(present.sort(), leafClosure, 'a prune that ended last left the kept closure');
  }
  t.true(waited > 0, 'prune waited for a running build at least once');
});
