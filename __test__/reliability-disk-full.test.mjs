// A full disk: the cache is on a small tmpfs (in a private mount namespace, as root) that
// the closure does not fit, by bytes or by inodes, so that space runs out at different
// points: the first NAR, a NAR amid the others, a narinfo. narcache stops with one line on
// stderr that says there is no space left, exits non-zero and leaves no temporary file;
// `narcache verify` on the same mount finds no broken entry; once the filesystem is
// enlarged, a re-run completes the cache.
import test from 'ava';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { buildMany, independentCheck, messageLines } from './helpers/reliability.mjs';
import { CLI, cleanupTempDirs, makeTempDir, run } from './helpers/nix.mjs';

const many = await buildMany();

test.after.always(cleanupTempDirs);

const scenarios = [
  { options: 'size=256k', compression: 'zstd', jobs: 2 },
  { options: 'size=1m', compression: 'zstd', jobs: 2 },
  { options: 'size=1536k', compression: 'none', jobs: 1 },
  // Inodes: the NARs of the leaves first take them all, then a narinfo finds none.
  { options: 'nr_inodes=40', compression: 'zstd', jobs: 2 },
  { options: 'nr_inodes=150', compression: 'xz', jobs: 1 },
];

// Runs inside `unshare -m`: mounts the tmpfs, builds, verifies, enlarges, builds again.
const SCRIPT = `
set -u
mnt=$1 out=$2 opts=$3 root=$4 compression=$5 jobs=$6
mount -t tmpfs -o "$opts" tmpfs "$mnt" || exit 99
node=${JSON.stringify(process.execPath)} cli=${JSON.stringify(CLI)}
"$node" "$cli" build "$root" -o "$mnt/cache" -c "$compression" -j "$jobs" 2>"$out/build.err" >/dev/null
echo $? >"$out/build.code"
ls -a "$mnt/cache" "$mnt/cache/nar" >"$out/listing" 2>&1
cp -a "$mnt/cache" "$out/partial"
"$node" "$cli" verify "$mnt/cache" --json >"$out/verify.json" 2>"$out/verify.err"
echo $? >"$out/verify.code"
mount -o remount,size=64m,nr_inodes=10000 "$mnt" || exit 98
"$node" "$cli" build "$root" -o "$mnt/cache" -c "$compression" --json >"$out/rebuild.json" 2>"$out/rebuild.err"
echo $? >"$out/rebuild.code"
"$node" "$cli" verify "$mnt/cache" --json >"$out/reverify.json" 2>/dev/null
echo $? >"$out/reverify.code"
`;

for (const s of scenarios) {
  test(`disk full (tmpfs ${s.options}, ${s.compression}): one clear line, no broken entry, a re-run completes`, async (t) => {
    const work = makeTempDir('narcache-diskfull-');
    const mnt = path.join(work, 'mnt');
    const out = path.join(work, 'out');
    await Promise.all([fsp.mkdir(mnt), fsp.mkdir(out)]);
    const r = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', SCRIPT, 'sh', mnt, out, s.options, many.rootA, s.compression, String(s.jobs)]);
    t.is(r.code, 0, `namespace script: ${r.stderr}`);
    const read = (f) => fsp.readFile(path.join(out, f), 'utf8');

    const buildCode = Number(await read('build.code'));
    const lines = messageLines(await read('build.err'));
    t.not(buildCode, 0, 'the build fails');
    t.is(lines.length, 1, `one line besides progress: ${JSON.stringify(lines)}`);
    t.regex(lines[0] ?? '', /^narcache: .*no space left on device/i);
    const listing = await read('listing');
    t.false(listing.includes('.tmp-narcache-'), `no temporary file left:\n${listing}`);

    const report = JSON.parse(await read('verify.json'));
    t.is(Number(await read('verify.code')), 0, `verify: ${JSON.stringify(report.problems)}`);
    t.deepEqual(report.problems, []);
    t.is(report.valid, report.narinfos);
    t.true(report.narinfos < many.closureA.length, 'the cache is incomplete');
    const independent = await independentCheck(path.join(out, 'partial'), many.db);
    t.deepEqual(independent.problems, [], 'independent check of the partial cache');
    t.log(`${lines[0]}  → ${report.narinfos} narinfos valid, ${report.orphans.length} orphan NARs`);

    t.is(Number(await read('rebuild.code')), 0, `re-run: ${await read('rebuild.err')}`);
    const summary = JSON.parse(await read('rebuild.json'));
    t.is(summary.skipped, report.narinfos, 're-run skips what was there');
    t.is(summary.written + summary.skipped, many.closureA.length);
    const final = JSON.parse(await read('reverify.json'));
    t.true(final.ok, JSON.stringify(final.problems));
    t.is(final.valid, many.closureA.length);
  });
}
