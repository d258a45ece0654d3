// What an interrupted writer leaves. SIGINT stops `sign` as it stops `build`: exit 130, one
// line, no temporary narinfo left, every narinfo whole. After a SIGKILL, the temporary
// files of the dead process (its PID is in their names) are listed by `verify` as leftovers,
// not problems, and removed by the next `build` or `sign`; those of a live process are not.
import test from 'ava';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { buildAndSignal, buildMany, messageLines, tempFiles, verifyJson } from './helpers/reliability.mjs';
import { cleanupTempDirs, cliBuild, FIXTURES_DIR, makeTempDir, nixBuild, nixGenerateKey, runCli } from './helpers/nix.mjs';

const many = await buildMany();
const [manyRefs] = await nixBuild(path.join(FIXTURES_DIR, 'many-refs.nix'));
const key = await nixGenerateKey('leftovers-1', makeTempDir('narcache-leftovers-keys-'));

test.after.always(cleanupTempDirs);

/** The PID of a process that has ended. */
async function deadPid() {
  const child = spawn('true');
  await new Promise((resolve) => child.on('close', resolve));
  return child.pid;
}

test('SIGINT stops sign cleanly: exit 130, one line, no temporary narinfo, a re-run completes it', async (t) => {
  const dir = makeTempDir('narcache-leftovers-sign-');
  await cliBuild([manyRefs], dir);
  const args = ['sign', dir, '--sign-key-file', key.secretKeyFile];
  // Signing 5,001 narinfos takes seconds; the first batch is under way by then.
  const r = await buildAndSignal(args, dir, { kind: 'time', ms: 1500 }, 'SIGINT');
  t.true(r.signalled, 'sign ended before the signal');
  t.is(r.code, 130, r.stderr);
  t.is(messageLines(r.stderr).length, 1, r.stderr);
  t.regex(r.stderr, /^narcache: interrupted after signing \d+ narinfos?; .*running the same command again resumes\n$/);
  t.deepEqual(await tempFiles(dir), []);
  const { code, report } = await verifyJson(dir);
  t.is(code, 0, JSON.stringify(report?.problems.slice(0, 3)));
  const again = await runCli([...args, '--json']);
  t.is(again.code, 0, again.stderr);
  const summary = JSON.parse(again.stdout);
  t.is(summary.signed + summary.alreadySigned, 5001);
  t.is((await runCli(['verify', dir, '--trusted-public-key', key.publicKey])).code, 0);
});

test("a dead writer's temporary files: listed by verify, removed by build and by sign; a live one's kept", async (t) => {
  // A real one: SIGKILL while a batch of narinfos waits for its sync, under temporary names
  // (NAR files being written are unnamed and go with the process). A kill may fall between
  // two batches: then again, later, in a new cache.
  let dir;
  for (let n = 3; n < 3 + 8; n++) {
    dir = makeTempDir('narcache-leftovers-kill-');
    const r = await buildAndSignal(['build', many.rootA, '-o', dir], dir, { kind: 'narinfo', n }, 'SIGKILL');
    t.true(r.signalled);
    if ((await tempFiles(dir)).length) break;
  }
  const dead = await deadPid();
  const planted = [`.tmp-narcache-${dead}-abc-${'0'.repeat(32)}.narinfo`, `nar/.tmp-narcache-${dead}-1-2`];
  const live = `nar/.tmp-narcache-${process.pid}-1-2`;
  for (const f of [...planted, live]) await fsp.writeFile(path.join(dir, f), 'partial');
  const left = (await tempFiles(dir)).filter((f) => f !== live).sort();
  t.true(left.length > planted.length, `the killed build left temporary files: ${left}`);

  const text = await runCli(['verify', dir]);
  const { code, report } = await verifyJson(dir);
  t.is(code, 0, 'leftovers are not problems');
  t.deepEqual(report.leftovers, left);
  for (const f of left) t.true(text.stdout.includes(`${f}: leftover of a writer that died`), f);
  t.regex(text.stderr, new RegExp(`; ${left.length} leftover temporary files\\n$`));

  await cliBuild([many.rootA], dir);
  t.deepEqual(await tempFiles(dir), [live], 'build removed those of the dead, kept the live one');
  for (const f of planted) await fsp.writeFile(path.join(dir, f), 'partial');
  const signed = await runCli(['sign', dir, '--sign-key-file', key.secretKeyFile]);
  t.is(signed.code, 0, signed.stderr);
  t.deepEqual(await tempFiles(dir), [live], 'sign removed them too');
});
