// The benchmark's quick mode as a smoke test: the whole harness (nix-build
// of the closure, nix copy, the mkBinaryCache algorithm, the limits, S3,
// passes compared by their medians) runs, and narcache's caches are complete
// and identical for --jobs 1 and --jobs 2. The speed targets are for the
// full run on a quiet machine and are not asserted here.
import fsp from 'node:fs/promises';
import path from 'node:path';

import test from 'ava';

import { nixEnv, REPO, run, tempDir } from './helpers/nix.mjs';

test('npm run bench:quick runs every comparison; narcache is deterministic', async (t) => {
  const out = tempDir(t, 'narcache-bench-');
  const r = await run(process.execPath, [path.join(REPO, 'bench', 'run.mjs'), '--quick', '--repeat', '2', '--out', out], { env: nixEnv });
  t.is(r.code, 0, `${r.stderr}\n${r.stdout.slice(-4000)}`);

  const results = JSON.parse(await fsp.readFile(path.join(out, 'results.json'), 'utf8'));
  const byId = new Map(results.runs.map((x) => [x.id, x]));
  for (const id of [
    'limit-read-hash', 'narcache-none', 'nix-copy-none',
    'limit-zstd', 'narcache-zstd', 'narcache-zstd-listing', 'narcache-zstd-one-stream', 'narcache-zstd-s3', 'mkbinarycache-zstd', 'nix-copy-zstd',
    'limit-xz', 'narcache-xz', 'nix-copy-xz-parallel', 'nix-copy-xz',
    'narcache-many-none', 'nix-copy-many-none', 'narcache-many-zstd', 'nix-copy-many-zstd', 'narcache-many-rerun',
    'narcache-many-prune', 'narcache-many-s3', 'nix-copy-many-http', 'narcache-many-s3-rerun',
  ]) {
    t.true(byId.has(id), `run ${id}`);
    t.is(byId.get(id)?.error, undefined, `run ${id} failed`);
  }
  for (const c of ['none', 'zstd', 'xz']) {
    const ours = byId.get(`narcache-${c}`);
    const limit = byId.get(c === 'none' ? 'limit-read-hash' : `limit-${c}`);
    t.is(ours.passes.length, 2, `narcache-${c} passes`);
    t.is(limit.passes.length, 2, `${limit.id} passes`);
    const walls = ours.passes.map((p) => p.wallSeconds);
    t.is(ours.wallSeconds, (walls[0] + walls[1]) / 2, `narcache-${c}: the median of its passes`);
    t.is(ours.summary.paths, results.closure.paths);
  }
  // The many-paths closure: its own size, and a re-run that finds every path present.
  for (const c of ['none', 'zstd']) {
    const ours = byId.get(`narcache-many-${c}`);
    t.is(ours.passes.length, 2, `narcache-many-${c} alternates with nix-copy-many-${c}`);
    t.is(ours.summary.written, ours.paths);
    t.true(ours.paths > results.closure.paths, 'more paths than the big-path closure');
  }
  t.like(byId.get('narcache-many-rerun').summary, { written: 0, skipped: byId.get('narcache-many-zstd').paths });
  // Cold runs read the closure's files from the disk, which hold about its NAR bytes; with
  // the store in memory (the test sandbox's tmpfs), they are left out, saying why.
  const cold = ['narcache-many-zstd-cold', 'nix-copy-many-zstd-cold'];
  const storeFs = (await run('stat', ['-f', '-c', '%T', '/nix/store'])).stdout.trim();
  if (['tmpfs', 'ramfs'].includes(storeFs)) {
    t.deepEqual(results.leftOut.map((l) => l.runs), [cold]);
    t.regex(r.stdout, /left out narcache-many-zstd-cold, nix-copy-many-zstd-cold: \/nix\/store is in memory/);
    for (const id of cold) t.false(byId.has(id), id);
  } else {
    t.deepEqual(results.leftOut, []);
    for (const id of cold) {
      t.is(byId.get(id)?.error, undefined, `run ${id} failed`);
      t.true(byId.get(id).diskReadMiB * 2 ** 20 >= byId.get('narcache-many-zstd').summary.narBytes / 2, `${id} read ${byId.get(id).diskReadMiB} MiB from disk`);
    }
  }
  const paths = byId.get('narcache-many-zstd').paths;
  const pruned = byId.get('narcache-many-prune').summary;
  t.like(pruned, { narinfos: paths, removedNarinfos: paths - pruned.kept });
  t.true(pruned.kept > 0 && pruned.kept < paths, `kept ${pruned.kept} of ${paths}`);
  // Into a bucket: every path written, then found present by listings, not one request per path.
  t.like(byId.get('narcache-many-s3').summary, { written: paths });
  const again = byId.get('narcache-many-s3-rerun').summary;
  t.like(again, { written: 0, skipped: paths });
  t.true(again.requests <= 3 + Math.ceil((paths + 1) / 1000), `${again.requests} requests`);
  const listing = byId.get('narcache-zstd-listing');
  t.is(listing.passes.length, 2, 'narcache-zstd-listing alternates with narcache-zstd');
  t.is(listing.summary.listings, results.closure.paths, 'a listing per path');
  const oneStream = byId.get('narcache-zstd-one-stream');
  t.is(oneStream.passes.length, 2, 'narcache-zstd-one-stream passes');
  // A NAR of one regular file: 112 bytes of framing around the contents (NARs are padded to 8).
  t.is(oneStream.summary.narSize, results.closure.narSize + 112, 'one file holding every NAR');
  t.deepEqual(
    results.determinism.map((d) => [d.compression, d.identical]),
    [['none', true], ['zstd', true], ['xz', true]],
  );
  t.true(results.checks.filter((c) => !c.informational).every((c) => c.ok === true));
  t.true(results.targets.length >= 10);
});
