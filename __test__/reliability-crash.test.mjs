// Crash safety: `narcache build` of a 131-path closure is SIGKILLed at seeded moments —
// during start-up, while NARs are being written (after the n-th was named in nar/), right after a
// narinfo appeared — again and again into the same cache, which is started afresh every
// few kills. After every kill the cache holds no lying entry: `narcache verify --json`
// finds each narinfo valid and the set closed under references, and each narinfo states
// what Nix's database says of its path; leftover temporary files are never referenced.
// A re-run then completes the cache, and real Nix substitutes the closure from it.
import test from 'ava';
import fs from 'node:fs';

import { TEMP_PREFIX, assertSound, buildAndSignal, buildMany, random } from './helpers/reliability.mjs';
import { cleanupTempDirs, cliBuild, makeTempDir, substitute } from './helpers/nix.mjs';

const many = await buildMany();
const total = many.closureA.length;
const KILLS = { zstd: 12, xz: 10 };
// A cache is started afresh after this many kills, so that early moments come back.
const KILLS_PER_CACHE = 4;

test.after.always(cleanupTempDirs);

test('fixture: rootA has a closure of more than 100 paths with references', (t) => {
  t.true(total > 100, `${total} paths`);
  const withRefs = many.closureA.filter((p) => many.db.get(p).references.some((r) => r !== p));
  t.true(withRefs.length > 100, `${withRefs.length} paths reference others`);
});

for (const [compression, kills] of Object.entries(KILLS)) {
  test(`SIGKILL at ${kills} moments of a ${compression} build leaves no lying entry; a re-run completes it`, async (t) => {
    const rng = random(compression === 'zstd' ? 0x2d1 : 0x7a3);
    const log = [];
    const finished = [];
    let dir;
    let killsHere = 0;
    const complete = async () => {
      const r = await cliBuild([many.rootA], dir, { compression });
      t.is(r.summary.paths, total, 'paths');
      t.is(r.summary.written + r.summary.skipped, total, 'written + skipped');
      const { narinfos, temps } = await assertSound(t, dir, many.db, `${dir} after the re-run`);
      t.deepEqual([...narinfos.keys()].sort(), many.closureA, 'every path of the closure');
      finished.push({ dir, leftoverTemps: temps.length });
    };

    let done = 0;
    for (let attempt = 0; done < kills && attempt < kills * 2; attempt++) {
      if (!dir || killsHere === KILLS_PER_CACHE) {
        if (dir) await complete();
        dir = makeTempDir(`narcache-crash-${compression}-`);
        killsHere = 0;
      }
      const before = (await fs.promises.readdir(dir).catch(() => [])).filter((n) => n.endsWith('.narinfo') && !n.startsWith(TEMP_PREFIX)).length;
      const remaining = total - before;
      // The first kill comes as soon as the closure is known: narinfos are published from the
      // first small paths on, so a random moment may never land before the first one.
      const kind = done === 0 ? 'opened' : rng.pick(['time', 'nar', 'narinfo']);
      const moment =
        kind === 'opened'
          ? { kind }
          : kind === 'time'
            ? { kind, ms: 50 + rng.int(1500) }
            : { kind, n: 1 + rng.int(Math.max(1, remaining - 1)) };
      const r = await buildAndSignal(['build', many.rootA, '-o', dir, '--compression', compression], dir, moment, 'SIGKILL');
      const label = `kill ${done + 1} (${JSON.stringify(moment)}, cache had ${before} narinfos)`;
      if (r.signal !== 'SIGKILL') {
        // The build got to the end first: a complete cache, started afresh below.
        t.is(r.code, 0, `${label}: build ended by itself with exit ${r.code}: ${r.stderr}`);
        await assertSound(t, dir, many.db, `${label}, not killed`);
        killsHere = KILLS_PER_CACHE;
        continue;
      }
      done++;
      killsHere++;
      const { narinfos, temps } = await assertSound(t, dir, many.db, label, { unstarted: true });
      log.push({ ...moment, atMs: Math.round(r.atMs), before, after: narinfos.size, temps: temps.length });
    }
    await complete();

    t.log(`${compression}: ${JSON.stringify(log)}`);
    t.log(`${compression}: caches completed ${JSON.stringify(finished.map((f) => f.leftoverTemps))} (temporary files left by kills, unreferenced)`);
    t.is(done, kills, 'kills');
    // The kills landed where it matters: before any narinfo, amid them, and mid-write (a
    // batch of narinfos under temporary names; NAR files being written are unnamed).
    t.true(log.some((k) => k.after === k.before), 'a kill before a new narinfo appeared');
    t.true(log.some((k) => k.after > k.before && k.after < total), 'a kill amid the narinfos');
    t.true(log.some((k) => k.kind === 'nar' && k.after < total), 'a kill while NAR files were being written');

    const sub = await substitute(dir, many.rootA);
    t.is(sub.copy.code, 0, `nix copy --from file://: ${sub.copy.stderr}`);
    t.is(sub.verify.code, 0, `nix store verify: ${sub.verify.stderr}`);
  });
}
