// Closures of many paths under a small open-file limit (`ulimit -n 256`, a quarter of a common
// default): a synthetic store of 20,000 paths (helpers/synthetic-store.mjs), given to narcache
// by its registration, builds, re-runs, verifies and signs, and real Nix substitutes a part of
// it with signatures enforced; a publish of 2,000 paths to S3 (the local Ceph gateway) does the
// same, and its re-run learns what is present from listings, in a handful of requests.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';

import narcache from '../dist/index.js';
import build from '../dist/build.js';
import { CLI, cleanupTempDirs, makeTempDir, run, substitute } from './helpers/nix.mjs';
import { startGateway } from './helpers/s3.mjs';
import { writeSyntheticStore } from './helpers/synthetic-store.mjs';

// The SDK's notice to whoever packages narcache for Node < 22 (the gateway's client here).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const OPEN_FILES = 256;
const COUNT = 20000;
const S3_COUNT = 2000;

const work = makeTempDir('narcache-scale-');
const storeRoot = path.join(work, 'nix', 'store');
fs.mkdirSync(storeRoot, { recursive: true });
const big = writeSyntheticStore(storeRoot, COUNT);
// Shares all but its root with the big one: written once.
const small = writeSyntheticStore(storeRoot, S3_COUNT);
const registration = (store, name) => {
  const file = path.join(work, name);
  fs.writeFileSync(file, store.registration);
  return file;
};
const source = (store, name) => ['--from-registration', registration(store, name), '--store-root', storeRoot];

test.after.always(cleanupTempDirs);

/** The CLI under the open-file limit; `--json` output parsed. */
async function limited(args, env) {
  const r = await run('sh', ['-c', `ulimit -n ${OPEN_FILES} && exec "$@"`, 'sh', process.execPath, CLI, ...args], env ? { env } : {});
  let json;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    /* not JSON: the assertions on the exit code say why */
  }
  return { ...r, json };
}

test.serial(`${COUNT} paths under ulimit -n ${OPEN_FILES}: build, re-run, verify, sign; Nix substitutes with signatures enforced`, async (t) => {
  const cache = path.join(work, 'cache');
  const args = ['build', ...source(big, 'registration'), '-o', cache, '--json'];

  const first = await limited(args);
  t.is(first.code, 0, first.stderr);
  t.like(first.json, { paths: COUNT, written: COUNT, skipped: 0 });
  t.is(fs.readdirSync(cache).filter((n) => n.endsWith('.narinfo')).length, COUNT);

  const again = await limited(args);
  t.is(again.code, 0, again.stderr);
  t.like(again.json, { paths: COUNT, written: 0, skipped: COUNT });
  t.log(`build ${first.json.seconds.toFixed(1)} s, re-run ${again.json.seconds.toFixed(2)} s`);

  const keys = path.join(work, 'keys');
  fs.mkdirSync(keys);
  const [secret, pub] = [path.join(keys, 'secret'), path.join(keys, 'public')];
  const keygen = await limited(['keygen', 'scale-1', '--secret-key-file', secret, '--public-key-file', pub]);
  t.is(keygen.code, 0, keygen.stderr);
  const publicKey = fs.readFileSync(pub, 'utf8').trim();
  const signed = await limited(['sign', cache, '--sign-key-file', secret, '--json']);
  t.is(signed.code, 0, signed.stderr);
  t.like(signed.json, { narinfos: COUNT, signed: COUNT });

  const verified = await limited(['verify', cache, '--trusted-public-key', publicKey, '--json']);
  t.is(verified.code, 0, verified.stderr);
  t.like(verified.json, { ok: true, narinfos: COUNT, valid: COUNT });
  t.deepEqual(verified.json.problems, []);

  // A part of the closure with a few hundred paths, into a fresh store.
  const sub = await substitute(cache, big.paths[1500], { trustedPublicKey: publicKey });
  t.is(sub.copy.code, 0, sub.copy.stderr);
  t.is(sub.verify.code, 0, sub.verify.stderr);
});

test.serial(`packing waits for a destination that does not answer: at most ${build.MAX_UNPUBLISHED} narinfos wait`, async (t) => {
  const { MAX_UNPUBLISHED } = build;
  const closure = await narcache.loadClosure({ kind: 'registration', file: registration(big, 'registration-lib') }, [], { storeDir: '/nix/store', storeRoot });
  let nars = 0;
  let taken = 0;
  let mostWaiting = 0;
  let lastNar = Date.now();
  let held = false;
  const counted = (packed) => {
    nars += packed.length;
    mostWaiting = Math.max(mostWaiting, nars - taken);
    lastNar = Date.now();
    return packed;
  };
  // Its first batch of narinfos waits until no NAR has been written for half a second: without
  // the bound, packing would have gone through every path by then.
  // (DirectoryDestination's writeNar packs through writeNars.)
  class Stalled extends narcache.DirectoryDestination {
    async writeNars(paths) {
      return counted(await super.writeNars(paths));
    }
    async writeNarinfos(narinfos) {
      taken += narinfos.length;
      if (!held) {
        held = true;
        while (Date.now() - lastNar < 500) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return super.writeNarinfos(narinfos);
    }
  }
  const cache = path.join(work, 'cache-stalled');
  const summary = await narcache.writeCache(closure, new Stalled(cache), { storeRoot, jobs: 2 });
  t.like(summary, { paths: COUNT, written: COUNT });
  t.is(fs.readdirSync(cache).filter((n) => n.endsWith('.narinfo')).length, COUNT);
  // Past the bound by what was being packed when it was reached, and by the paths whose references were not yet published.
  t.true(mostWaiting >= MAX_UNPUBLISHED, `packing stopped early, at ${mostWaiting} paths ahead`);
  t.true(mostWaiting <= MAX_UNPUBLISHED + 512, `${mostWaiting} paths packed and not yet published`);
});

test.serial(`${S3_COUNT} paths to S3 under ulimit -n ${OPEN_FILES}: build, re-run from listings, verify, sign`, async (t) => {
  const gw = await startGateway();
  try {
    await gw.bucket('scale');
    const url = gw.url('scale');
    const args = ['build', ...source(small, 'registration-s3'), '-o', url, '--json'];

    const first = await limited(args, gw.env);
    t.is(first.code, 0, first.stderr);
    t.like(first.json, { paths: S3_COUNT, written: S3_COUNT, skipped: 0 });
    const narinfos = (await gw.keys('scale')).filter((k) => k.endsWith('.narinfo'));
    t.is(narinfos.length, S3_COUNT);

    // nix-cache-info, the clean-up's two listings, and the narinfos listed 1,000 a page
    // (with nix-cache-info beside them): no request per path.
    const again = await limited(args, gw.env);
    t.is(again.code, 0, again.stderr);
    t.like(again.json, { paths: S3_COUNT, written: 0, skipped: S3_COUNT });
    t.true(again.json.requests <= 3 + Math.ceil((S3_COUNT + 1) / 1000), `${again.json.requests} requests`);
    t.log(`publish ${first.json.seconds.toFixed(1)} s in ${first.json.requests} requests; re-run ${again.json.requests} requests`);

    const keys = makeTempDir('narcache-scale-keys-');
    const [secret, pub] = [path.join(keys, 'secret'), path.join(keys, 'public')];
    t.is((await limited(['keygen', 'scale-s3-1', '--secret-key-file', secret, '--public-key-file', pub])).code, 0);
    const signed = await limited(['sign', url, '--sign-key-file', secret, '--json'], gw.env);
    t.is(signed.code, 0, signed.stderr);
    t.like(signed.json, { narinfos: S3_COUNT, signed: S3_COUNT });
    // Checks of small NARs over the network wait on round trips, not on the cores.
    const verified = await limited(['verify', url, '--jobs', '16', '--trusted-public-key', fs.readFileSync(pub, 'utf8').trim(), '--json'], gw.env);
    t.is(verified.code, 0, verified.stderr);
    t.like(verified.json, { ok: true, narinfos: S3_COUNT, valid: S3_COUNT });
    t.log(`sign ${signed.json.seconds.toFixed(1)} s, verify ${verified.json.seconds.toFixed(1)} s`);
  } finally {
    await gw.stop();
  }
});
