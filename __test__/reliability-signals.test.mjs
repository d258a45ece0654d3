// SIGINT and SIGTERM stop a build cleanly: sent at seeded moments (once the cache is
// opened, while a NAR is being written, right after a narinfo appeared), the build exits within
// a few seconds with 130 or 143 and one line saying that re-running resumes, leaves no
// temporary file in the cache or its nar/, and the cache is sound; re-running completes
// it. A second signal ends the process at once, and even then the cache holds no lie.
import os from 'node:os';

import test from 'ava';

import { assertSound, buildAndSignal, buildMany, messageLines, random } from './helpers/reliability.mjs';
import { cleanupTempDirs, cliBuild, makeTempDir } from './helpers/nix.mjs';

const many = await buildMany();
const total = many.closureA.length;
const EXIT = { SIGINT: 130, SIGTERM: 143 };
const STOP_WITHIN_MS = 5000;

test.after.always(cleanupTempDirs);

const cases = [
  { signal: 'SIGINT', compression: 'zstd', kind: 'nar' },
  { signal: 'SIGTERM', compression: 'zstd', kind: 'narinfo' },
  { signal: 'SIGINT', compression: 'xz', kind: 'narinfo' },
  { signal: 'SIGTERM', compression: 'xz', kind: 'nar' },
  { signal: 'SIGINT', compression: 'zstd', kind: 'opened' },
  { signal: 'SIGTERM', compression: 'zstd', kind: 'nar', again: true },
];

for (const [i, c] of cases.entries()) {
  const what = `${c.again ? 'two ' : ''}${c.signal}${c.again ? 's' : ''} (${c.compression}, ${c.kind})`;
  test(`${what}: a clean stop, exit ${EXIT[c.signal]}, no temporary file, a sound cache; a re-run completes it`, async (t) => {
    const rng = random(0x51 + i);
    let moment = c.kind === 'opened' ? { kind: 'opened' } : { kind: c.kind, n: 1 + rng.int(total / 2) };
    let dir;
    let r;
    for (;;) {
      dir = makeTempDir(`narcache-signal-${c.signal}-`);
      const args = ['build', many.rootA, '-o', dir, '--compression', c.compression];
      r = await buildAndSignal(args, dir, moment, c.signal, { again: c.again });
      // Small paths are packed 32 to a call and their narinfos published in batches: the n-th
      // may have come in the last one, and the build ended before the signal was handled.
      // Then again into a new cache, at an earlier narinfo.
      const finished = messageLines(r.stderr).some((l) => / written.*, \d+ already present, into /.test(l));
      if (!finished || moment.kind !== 'narinfo' || moment.n === 1) break;
      t.log(`${JSON.stringify(moment)}: the build had finished; again at an earlier narinfo`);
      moment = { ...moment, n: Math.ceil(moment.n / 2) };
    }
    t.true(r.signalled, `the build ended before the ${c.signal} (${JSON.stringify(moment)})`);
    const said = messageLines(r.stderr);
    t.log(`${JSON.stringify(moment)}: signalled after ${Math.round(r.atMs)} ms, exited ${Math.round(r.exitMs)} ms later with ${r.code}, saying ${JSON.stringify(said)}`);
    if (c.again) {
      // The second signal may find the process already on its way out, past its handlers:
      // it then dies of the signal, which a shell reports as the same status.
      t.is(r.code ?? 128 + os.constants.signals[r.signal], EXIT[c.signal], `exit status; stderr: ${r.stderr}`);
    } else {
      t.is(r.code, EXIT[c.signal], `exit code; stderr: ${r.stderr}`);
    }
    t.true(r.exitMs < STOP_WITHIN_MS, `stopped ${r.exitMs} ms after the signal`);
    const { temps } = await assertSound(t, dir, many.db, `after ${what}`, { unstarted: true });
    if (!c.again) {
      t.is(said.length, 1, 'one line besides progress');
      t.regex(said[0] ?? '', /^narcache: interrupted .*running the same command again resumes$/);
      t.deepEqual(temps, [], 'no temporary file left');
    }
    const rerun = await cliBuild([many.rootA], dir, { compression: c.compression });
    t.is(rerun.summary.written + rerun.summary.skipped, total);
    const { narinfos } = await assertSound(t, dir, many.db, `after the re-run`);
    t.deepEqual([...narinfos.keys()].sort(), many.closureA, 'every path of the closure');
  });
}
