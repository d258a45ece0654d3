// Two `narcache build` processes write into the same cache at once, for two roots whose
// closures share 128 of their 131 paths (so both pack and publish the same paths at the
// same time), with the same or different compressions, one started a seeded moment after
// the other. Both succeed, and the cache is sound and holds both closures.
import test from 'ava';

import { assertSound, buildMany, random, startCli } from './helpers/reliability.mjs';
import { cleanupTempDirs, makeTempDir, substitute } from './helpers/nix.mjs';

const many = await buildMany();

test.after.always(cleanupTempDirs);

test('fixture: rootA and rootB share most of their closures', (t) => {
  const shared = many.closureA.filter((p) => many.closureB.includes(p));
  t.true(shared.length >= 100, `${shared.length} shared`);
  t.true(many.union.length > shared.length, 'each root adds paths of its own');
});

const rounds = [
  { a: 'zstd', b: 'zstd' },
  { a: 'xz', b: 'zstd' },
  { a: 'none', b: 'zstd' },
];

for (const [i, { a, b }] of rounds.entries()) {
  test(`two builds at once into one cache (${a} and ${b}) both succeed and leave it sound`, async (t) => {
    const dir = makeTempDir(`narcache-race-${a}-${b}-`);
    const delay = random(0xc0 + i).int(300);
    const first = startCli(['build', many.rootA, '-o', dir, '--compression', a, '--json']);
    await new Promise((r) => setTimeout(r, delay));
    const second = startCli(['build', many.rootB, '-o', dir, '--compression', b, '--json']);
    const [ra, rb] = await Promise.all([first.done, second.done]);
    for (const [name, r, closure] of [
      ['rootA', ra, many.closureA],
      ['rootB', rb, many.closureB],
    ]) {
      t.is(r.code, 0, `${name} build: ${r.stderr}`);
      const summary = JSON.parse(r.stdout);
      t.is(summary.paths, closure.length, `${name}: paths`);
      t.is(summary.written + summary.skipped, closure.length, `${name}: written + skipped`);
    }
    const { narinfos, report } = await assertSound(t, dir, many.db, `after both (second started ${delay} ms later)`);
    t.deepEqual([...narinfos.keys()].sort(), many.union, 'narinfos: both closures');
    t.log(`second started after ${delay} ms; ${report.orphans.length} orphan NAR files (a path packed by both)`);
    if (i === 0) {
      const sub = await substitute(dir, [many.rootA, many.rootB]);
      t.is(sub.copy.code, 0, `nix copy --from file://: ${sub.copy.stderr}`);
      t.is(sub.verify.code, 0, `nix store verify: ${sub.verify.stderr}`);
    }
  });
}
