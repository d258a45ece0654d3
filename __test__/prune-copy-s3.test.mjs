// prune and copy with caches in S3 buckets, against a real Ceph RADOS Gateway
// (helpers/s3.mjs): prune of a bucket keeps the closure and removes the rest in pages of
// deletions, and the bucket verifies sound; copy directory → bucket → bucket (server-side,
// on one endpoint) → directory gives back byte-identical narinfos and NAR files, NAR files
// of several parts included, and one that is not what its narinfo says leaves no object nor
// open upload behind; verify --repair restores a NAR object deleted from a bucket.
import test from 'ava';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import fs from 'node:fs';
import path from 'node:path';

import { buildMany } from './helpers/reliability.mjs';
import { contentSnapshot, hashPart, narinfoFields } from './helpers/cache.mjs';
import { CLI, FIXTURES_DIR, cliBuild, makeTempDir, nixBuild, run } from './helpers/nix.mjs';
import { gatewayForTests } from './helpers/s3.mjs';

// The SDK's notice to whoever packages narcache for Node < 22; the CLI silences it too.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const many = await buildMany();
const [top] = await nixBuild(path.join(FIXTURES_DIR, 's3.nix'), ['top']);
const gw = gatewayForTests(test);

async function cli(args) {
  const r = await run(process.execPath, [CLI, ...args, '--json'], { env: gw.env });
  return { ...r, summary: r.stdout ? JSON.parse(r.stdout) : undefined };
}

async function cacheFiles(dir) {
  const all = await contentSnapshot(dir);
  return Object.fromEntries([...all].filter(([f, v]) => v.startsWith('file') && (f.endsWith('.narinfo') || f.startsWith('nar/'))));
}

test('prune of a bucket keeps the closure, removes the rest, and leaves it sound', async (t) => {
  await gw.bucket('prune');
  const url = gw.url('prune/cache');
  t.is((await cli(['build', many.rootA, many.rootB, '-o', url])).code, 0);
  const r = await cli(['prune', url, '--keep', many.rootA, '--grace', '0']);
  t.is(r.code, 0, r.stderr);
  const extra = many.union.length - many.closureA.length;
  t.like(r.summary, { kept: many.closureA.length, removedNarinfos: extra, removedNarFiles: extra });
  const narinfos = (await gw.keys('prune', 'cache/')).filter((k) => k.endsWith('.narinfo'));
  t.is(narinfos.length, many.closureA.length);
  const v = await cli(['verify', url]);
  t.is(v.code, 0, JSON.stringify(v.summary?.problems));
  t.deepEqual(v.summary.orphans, []);
});

test('copy directory → bucket → bucket (server-side) → directory is byte-identical', async (t) => {
  const from = makeTempDir('narcache-s3copy-src-');
  await cliBuild([many.rootA], from, { compression: 'xz' });
  await gw.bucket('copy-a');
  await gw.bucket('copy-b');
  const [a, b] = [gw.url('copy-a'), gw.url('copy-b/under')];
  const up = await cli(['copy', from, a]);
  t.is(up.code, 0, up.stderr);
  t.like(up.summary, { copied: many.closureA.length, serverSide: 0 });
  const across = await cli(['copy', a, b]);
  t.is(across.code, 0, across.stderr);
  t.is(across.summary.serverSide, across.summary.narFiles, 'every NAR file copied by the service');
  const to = path.join(makeTempDir('narcache-s3copy-dst-'), 'cache');
  const down = await cli(['copy', b, to]);
  t.is(down.code, 0, down.stderr);
  t.deepEqual(await cacheFiles(to), await cacheFiles(from));
  const v = await cli(['verify', b]);
  t.is(v.code, 0, JSON.stringify(v.summary?.problems));
});

test('verify --repair restores a NAR object deleted from a bucket', async (t) => {
  await gw.bucket('repair');
  const url = gw.url('repair');
  t.is((await cli(['build', many.rootA, '-o', url])).code, 0);
  const nars = (await gw.keys('repair', 'nar/')).filter((k) => !k.includes('.tmp-'));
  await gw.client.send(new DeleteObjectCommand({ Bucket: 'repair', Key: nars[3] }));
  t.is((await cli(['verify', url])).code, 1, 'the loss is seen');
  const r = await cli(['verify', url, '--repair']);
  t.is(r.code, 0, JSON.stringify(r.summary?.problems));
  t.is(r.summary.repaired.length, 1);
  t.false(r.summary.repaired[0].narinfoRewritten, 'the same bytes under the same name');
  t.true((await gw.keys('repair', 'nar/')).includes(nars[3]));
  const v = await cli(['verify', url]);
  t.is(v.code, 0, JSON.stringify(v.summary?.problems));
});

test('copy of NAR files of several parts into a bucket; a bad one leaves nothing behind', async (t) => {
  const from = makeTempDir('narcache-s3copy-parts-');
  await cliBuild([top], from, { compression: 'none' });
  await gw.bucket('parts');
  // S3's smallest part: the 12 MiB NAR file goes up in three.
  const url = gw.url('parts', 'buffer-size=5242880');
  const r = await cli(['copy', from, url]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await gw.openUploads('parts'), []);
  const v = await cli(['verify', url]);
  t.is(v.code, 0, JSON.stringify(v.summary?.problems));
  const back = path.join(makeTempDir('narcache-s3copy-back-'), 'cache');
  t.is((await cli(['copy', url, back])).code, 0);
  t.deepEqual(await cacheFiles(back), await cacheFiles(from));

  const nar = narinfoFields(fs.readFileSync(path.join(from, `${hashPart(top)}.narinfo`), 'utf8')).URL;
  const bytes = fs.readFileSync(path.join(from, nar));
  bytes[bytes.length - 100] ^= 1;
  fs.writeFileSync(path.join(from, nar), bytes);
  await gw.bucket('parts-bad');
  const bad = await cli(['copy', from, gw.url('parts-bad', 'buffer-size=5242880')]);
  t.is(bad.code, 1);
  t.true(bad.summary.problems.some((p) => p.storePath === top && p.problem.startsWith('FileHash does not match')), JSON.stringify(bad.summary.problems));
  t.false((await gw.keys('parts-bad')).includes(nar), 'no object under the NAR key');
  t.deepEqual((await gw.keys('parts-bad')).filter((k) => k.includes('.tmp-narcache-')), [], 'no temporary object');
  t.deepEqual(await gw.openUploads('parts-bad'), [], 'no open upload');
});
