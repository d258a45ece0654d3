// Publishing to S3-compatible object storage, against a real Ceph RADOS Gateway started on
// loopback (helpers/s3.mjs): Nix substitutes from the bucket over HTTP, `narcache verify` and
// `narcache sign` work on it, a publish killed midway leaves the cache true and the next run
// completes it and aborts the uploads left open, and bad credentials, a missing bucket or an
// unreachable endpoint are one clear line each.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';

import { narinfoFields } from './helpers/cache.mjs';
import {
  CLI,
  FIXTURES_DIR,
  buildFixtures,
  closure,
  dumpDb,
  makeTempDir,
  nixBuild,
  nixGenerateKey,
  run,
  substitute,
} from './helpers/nix.mjs';
import { freePort, gatewayForTests } from './helpers/s3.mjs';

const lib = (await import('../dist/index.js')).default;
// The SDK's notice to whoever packages narcache for Node < 22; the CLI silences it too.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const fx = await buildFixtures();
const [top, large] = await nixBuild(path.join(FIXTURES_DIR, 's3.nix'), ['top', 'large']);
// S3's smallest part, so that the incompressible fixtures take several.
const PARTS = 'buffer-size=5242880';
const TEMP_PREFIX = '.tmp-narcache-';

// After the awaits above: ava wants the hooks and tests declared at once.
// COLD: a storage class besides STANDARD, for storage-class=.
const gw = gatewayForTests(test, { storageClasses: ['COLD'] });

function cli(args, env = gw.env) {
  return run(process.execPath, [CLI, ...args], { env });
}

/** `narcache build … --json` into `url`; fails the test unless it exits 0. */
async function publish(t, roots, url, extra = []) {
  const r = await cli(['build', ...roots, '-o', url, '--json', ...extra]);
  t.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function verify(url, extra = []) {
  const r = await cli(['verify', url, '--json', ...extra]);
  return { code: r.code, stderr: r.stderr, report: JSON.parse(r.stdout) };
}

const hashPartOf = (p) => path.basename(p).slice(0, 32);

async function head(bucket, key) {
  return gw.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
}

async function getText(bucket, key) {
  const { Body } = await gw.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Body.transformToString();
}

/** Every narinfo of the cache under `prefix` must name a NAR object that is there, with its FileSize. */
async function checkEveryNarinfoHasItsNar(t, bucket, prefix = '') {
  const narinfos = (await gw.keys(bucket, prefix)).filter((k) => k.endsWith('.narinfo'));
  for (const key of narinfos) {
    const f = narinfoFields(await getText(bucket, key));
    const nar = await head(bucket, prefix + f.URL).catch((e) => e);
    t.is(nar.ContentLength, Number(f.FileSize), `${key}: ${f.URL} is there, whole`);
  }
  return narinfos;
}

test.serial('publish to a bucket: Nix substitutes it over HTTP, verify passes and catches an overwritten NAR', async (t) => {
  const bucket = 'substitute';
  const prefix = 'caches/main/';
  await gw.bucket(bucket, { anonymousRead: true });
  const url = gw.url(`${bucket}/${prefix.slice(0, -1)}`, PARTS);
  const roots = [fx.root, top];
  const paths = await closure(roots);

  const summary = await publish(t, roots, url);
  t.is(summary.written, paths.length);
  t.is(summary.skipped, 0);

  // The layout Nix reads, with the content types Nix's own stores give.
  const keys = await gw.keys(bucket);
  t.deepEqual(
    keys.filter((k) => k.endsWith('.narinfo')),
    paths.map((p) => `${prefix}${hashPartOf(p)}.narinfo`).sort(),
    'one narinfo per path of the closure, under the prefix',
  );
  t.deepEqual(keys.filter((k) => !k.startsWith(prefix)), [], 'nothing outside the prefix');
  t.deepEqual(keys.filter((k) => k.includes(TEMP_PREFIX)), [], 'no temporary object left');
  t.deepEqual(await gw.openUploads(bucket), [], 'no upload left open');
  t.is(await getText(bucket, `${prefix}nix-cache-info`), 'StoreDir: /nix/store\n');
  t.is((await head(bucket, `${prefix}nix-cache-info`)).ContentType, 'text/x-nix-cache-info');
  t.is((await head(bucket, `${prefix}${hashPartOf(top)}.narinfo`)).ContentType, 'text/x-nix-narinfo');
  const nars = keys.filter((k) => k.startsWith(`${prefix}nar/`));
  const heads = await Promise.all(nars.map((k) => head(bucket, k)));
  t.deepEqual([...new Set(heads.map((h) => h.ContentType))], ['application/x-nix-nar']);
  // The 12 MiB that do not compress went up as a multipart upload of 5 MiB parts.
  t.true(heads.some((h) => /-3"$/.test(h.ETag)), `one NAR in 3 parts: ${heads.map((h) => h.ETag)}`);
  await checkEveryNarinfoHasItsNar(t, bucket, prefix);

  // Real Nix, reading the bucket as an HTTP binary cache.
  const res = await substitute(`${gw.endpoint}/${bucket}/${prefix.slice(0, -1)}`, roots);
  t.is(res.copy.code, 0, `nix copy --from the bucket failed:\n${res.copy.stderr}`);
  t.is(res.verify.code, 0, `nix store verify failed:\n${res.verify.stderr}`);
  const local = await dumpDb(paths);
  const got = await dumpDb(paths, { store: res.store });
  for (const p of paths) t.deepEqual(got.get(p), local.get(p), `${p} registered as in the local store`);

  const good = await verify(url);
  t.is(good.code, 0, good.stderr);
  t.true(good.report.ok);
  t.is(good.report.cache, `s3://${bucket}/${prefix.slice(0, -1)}`);
  t.is(good.report.narinfos, paths.length);
  t.is(good.report.valid, paths.length);
  t.deepEqual(good.report.orphans, []);

  // Present narinfos are skipped: a re-run writes nothing.
  const again = await publish(t, roots, url);
  t.is(again.written, 0);
  t.is(again.skipped, paths.length);

  // Another NAR's bytes (a well-formed stream) over the NAR of `top`: the smallest other one,
  // since one longer than top's NarSize is refused before its FileHash is known, and the
  // incompressible path's random bytes give its NAR another name, so another place in the
  // listing, on every build.
  const topInfo = narinfoFields(await getText(bucket, `${prefix}${hashPartOf(top)}.narinfo`));
  const others = nars.map((k, i) => ({ k, size: heads[i].ContentLength })).filter(({ k }) => k !== prefix + topInfo.URL);
  const other = others.reduce((a, b) => (b.size < a.size ? b : a)).k;
  const { Body } = await gw.client.send(new GetObjectCommand({ Bucket: bucket, Key: other }));
  await gw.client.send(new PutObjectCommand({ Bucket: bucket, Key: prefix + topInfo.URL, Body: Buffer.from(await Body.transformToByteArray()) }));
  const bad = await verify(url);
  t.is(bad.code, 1);
  t.false(bad.report.ok);
  t.deepEqual([...new Set(bad.report.problems.map((p) => p.storePath))], [top], JSON.stringify(bad.report.problems));
  t.true(bad.report.problems.some((p) => p.problem.startsWith(`FileHash does not match ${topInfo.URL}`)), JSON.stringify(bad.report.problems));
});

test.serial('a signed publish substitutes with signatures enforced; narcache sign signs a bucket', async (t) => {
  const keys = await nixGenerateKey('narcache-s3-test-1', makeTempDir('narcache-s3-keys-'));
  const wrong = await nixGenerateKey('narcache-s3-other-1', makeTempDir('narcache-s3-keys-'));
  const trusted = keys.publicKey.trim();

  await gw.bucket('signed', { anonymousRead: true });
  await publish(t, [fx.root], gw.url('signed'), ['--sign-key-file', keys.secretKeyFile]);
  const signed = await substitute(`${gw.endpoint}/signed`, fx.root, { trustedPublicKey: trusted });
  t.is(signed.copy.code, 0, signed.copy.stderr);
  t.is(signed.verify.code, 0, signed.verify.stderr);
  // The same with another key trusted fails: the signatures are really checked.
  const refused = await substitute(`${gw.endpoint}/signed`, fx.root, { trustedPublicKey: wrong.publicKey.trim() });
  t.not(refused.copy.code, 0, 'Nix refuses paths signed by a key it does not trust');

  await gw.bucket('signed-later', { anonymousRead: true });
  const url = gw.url('signed-later');
  await publish(t, [fx.root], url);
  const unsigned = await substitute(`${gw.endpoint}/signed-later`, fx.root, { trustedPublicKey: trusted });
  t.not(unsigned.copy.code, 0, 'unsigned paths are refused');
  const sign = await cli(['sign', url, '--sign-key-file', keys.secretKeyFile, '--json']);
  t.is(sign.code, 0, sign.stderr);
  const paths = await closure([fx.root]);
  t.like(JSON.parse(sign.stdout), { cache: 's3://signed-later', narinfos: paths.length, signed: paths.length });
  t.is((await head('signed-later', `${hashPartOf(fx.root)}.narinfo`)).ContentType, 'text/x-nix-narinfo');
  const later = await substitute(`${gw.endpoint}/signed-later`, fx.root, { trustedPublicKey: trusted });
  t.is(later.copy.code, 0, later.copy.stderr);
  t.is(later.verify.code, 0, later.verify.stderr);
  const checked = await verify(url, ['--trusted-public-key', trusted]);
  t.is(checked.code, 0, JSON.stringify(checked.report.problems));
});

/** The bytes an object holds, its Content-Encoding undone as an HTTP client undoes it. */
async function decoded(bucket, key) {
  const { Body, ContentEncoding } = await gw.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = Buffer.from(await Body.transformToByteArray());
  if (!ContentEncoding) return bytes;
  if (ContentEncoding === 'br') return zlib.brotliDecompressSync(bytes);
  const file = path.join(makeTempDir('narcache-s3-enc-'), 'object');
  fs.writeFileSync(file, bytes);
  const r = await run('sh', ['-c', `${ContentEncoding} -dc < "$1" | base64 -w0`, 'sh', file]);
  return Buffer.from(r.stdout, 'base64');
}

test.serial('narinfo-compression, ls-compression, storage-class: Nix reads the bucket, verify and sign read and rewrite it', async (t) => {
  const [debugInfo] = await nixBuild(path.join(FIXTURES_DIR, 'closure.nix'), 'debugInfo');
  const roots = [fx.extra, debugInfo, large];
  const paths = await closure(roots);
  // What the same build writes into a directory: the files the bucket must hold, decompressed.
  const dir = makeTempDir('narcache-s3-plain-');
  const plain = await cli(['build', ...roots, '-o', dir, '--write-nar-listing', '--index-debug-info']);
  t.is(plain.code, 0, plain.stderr);
  const keys = await nixGenerateKey('narcache-s3-enc-1', makeTempDir('narcache-s3-keys-'));
  for (const encoding of ['xz', 'zstd', 'br']) {
    const bucket = `encoded-${encoding}`;
    await gw.bucket(bucket, { anonymousRead: true });
    const url = gw.url(bucket, `${PARTS}&narinfo-compression=${encoding}&ls-compression=${encoding}&storage-class=COLD`);
    const summary = await publish(t, roots, url, ['--write-nar-listing', '--index-debug-info']);
    t.like(summary, { written: paths.length, listings: paths.length, debugInfo: 2 });
    for (const key of await gw.keys(bucket)) {
      const h = await head(bucket, key);
      t.is(h.StorageClass, 'COLD', `${bucket}/${key}: storage class`);
      const compressed = key.endsWith('.narinfo') || key.endsWith('.ls');
      t.is(h.ContentEncoding, compressed ? encoding : undefined, `${bucket}/${key}: Content-Encoding`);
      if (compressed || key.startsWith('debuginfo/')) {
        t.true((await decoded(bucket, key)).equals(fs.readFileSync(path.join(dir, key))), `${bucket}/${key} holds what the directory holds`);
      }
    }

    // Nix decompresses the narinfos as an HTTP client; verify and sign read them too.
    const res = await substitute(`${gw.endpoint}/${bucket}`, roots);
    t.is(res.copy.code, 0, `nix copy --from the bucket failed:\n${res.copy.stderr}`);
    t.is(res.verify.code, 0, res.verify.stderr);
    const checked = await verify(url);
    t.is(checked.code, 0, JSON.stringify(checked.report.problems));
    t.like(checked.report, { narinfos: paths.length, listings: paths.length, debugInfoLinks: 2 });
    const sign = await cli(['sign', url, '--sign-key-file', keys.secretKeyFile, '--json']);
    t.is(sign.code, 0, sign.stderr);
    t.like(JSON.parse(sign.stdout), { signed: paths.length });
    const rewritten = await head(bucket, `${hashPartOf(fx.extra)}.narinfo`);
    t.like(rewritten, { ContentEncoding: encoding, StorageClass: 'COLD' });
    const signed = await substitute(`${gw.endpoint}/${bucket}`, roots, { trustedPublicKey: keys.publicKey.trim() });
    t.is(signed.copy.code, 0, signed.copy.stderr);
  }
  // A listing that says otherwise than its NAR, stored compressed: verify decompresses and reports it.
  const listing = `${hashPartOf(debugInfo)}.ls`;
  const tampered = fs.readFileSync(path.join(dir, listing), 'latin1').replace('"size":3,"executable":true', '"size":2,"executable":true');
  await gw.client.send(
    new PutObjectCommand({ Bucket: 'encoded-br', Key: listing, Body: zlib.brotliCompressSync(Buffer.from(tampered, 'latin1')), ContentEncoding: 'br' }),
  );
  const bad = await verify(gw.url('encoded-br'));
  t.is(bad.code, 1);
  t.deepEqual(
    bad.report.problems.map((p) => [p.file, p.problem]),
    [[listing, 'does not agree with the NAR: entry "bin/hi": size is 2 in the listing, 3 in the NAR']],
  );
});

test.serial('SIGKILL mid-publish leaves the cache true; a re-run completes it and aborts the uploads left open', async (t) => {
  const bucket = 'killed';
  await gw.bucket(bucket);
  const url = gw.url(bucket, PARTS);
  const paths = await closure([large]);

  const child = spawn(process.execPath, [CLI, 'build', large, '-o', url], { env: gw.env, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 60_000;
  while (!(await gw.openUploads(bucket)).length && child.exitCode === null && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  t.is((await exited).signal, 'SIGKILL', 'killed before it finished');
  const left = await gw.openUploads(bucket);
  t.true(left.length > 0, 'the killed run left an upload open');
  t.true(left.every((k) => k.startsWith(`nar/${TEMP_PREFIX}`)), `uploads only under temporary keys: ${left}`);

  const present = await checkEveryNarinfoHasItsNar(t, bucket);
  t.false(present.includes(`${hashPartOf(large)}.narinfo`), 'the root, whose reference was being uploaded, is not published');
  const midway = await verify(url);
  t.is(midway.code, 0, `what the killed run published is sound and closed:\n${JSON.stringify(midway.report.problems)}`);

  const summary = await publish(t, [large], url);
  t.is(summary.written + summary.skipped, paths.length);
  t.is(summary.skipped, present.length);
  t.deepEqual(await gw.openUploads(bucket), [], 'the uploads left open are aborted');
  t.deepEqual((await gw.keys(bucket)).filter((k) => k.includes(TEMP_PREFIX)), [], 'no temporary object left');
  const done = await verify(url);
  t.is(done.code, 0, JSON.stringify(done.report.problems));
  t.is(done.report.narinfos, paths.length);
});

test.serial('a NAR file larger than the service copies at once is copied in parts (library)', async (t) => {
  const bucket = 'copy-in-parts';
  await gw.bucket(bucket);
  const url = gw.url(bucket, PARTS);
  // The library reads credentials from the process environment.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: gw.accessKey, AWS_SECRET_ACCESS_KEY: gw.secretKey });
  const dest = new lib.S3Destination(lib.parseS3Url(url), { maxCopySize: 7 << 20, partsInFlight: 2 });
  try {
    const summary = await lib.writeCache(await lib.closureFromNix([top]), dest, { compression: 'zstd' });
    t.is(summary.written, (await closure([top])).length);
  } finally {
    dest.close();
  }
  const nars = (await gw.keys(bucket, 'nar/')).map((k) => head(bucket, k));
  // Uploaded in 3 parts of 5 MiB, then copied in 2 ranges of 7 MiB: the object's ETag counts the latter.
  t.true((await Promise.all(nars)).some((h) => /-2"$/.test(h.ETag)), 'one NAR copied in two parts');
  const report = await lib.verifyCache(url);
  t.true(report.ok, JSON.stringify(report.problems));
});

test.serial('credentials from a profile named in the URL', async (t) => {
  await gw.bucket('profiled');
  const credentials = path.join(makeTempDir('narcache-s3-aws-'), 'credentials');
  fs.writeFileSync(credentials, `[narcache-ci]\naws_access_key_id = ${gw.accessKey}\naws_secret_access_key = ${gw.secretKey}\n`);
  const { AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...env } = gw.env;
  const r = await cli(['build', fx.root, '-o', gw.url('profiled', 'profile=narcache-ci'), '--json'], {
    ...env,
    AWS_SHARED_CREDENTIALS_FILE: credentials,
  });
  t.is(r.code, 0, r.stderr);
  t.is(JSON.parse(r.stdout).written, (await closure([fx.root])).length);
});

test.serial('bad credentials, a missing bucket, an unreachable endpoint: one clear line each', async (t) => {
  await gw.bucket('errors');
  const key = await nixGenerateKey('narcache-s3-errors-1', makeTempDir('narcache-s3-keys-'));
  const closedPort = await freePort();
  const { AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...noKeys } = gw.env;
  const where = (bucket, endpoint = gw.endpoint) => `s3://${bucket} \\(${endpoint.replace(/\./g, '\\.')}\\)`;
  const cases = [
    {
      what: 'wrong secret key',
      env: { ...gw.env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' },
      url: gw.url('errors'),
      line: new RegExp(`^narcache: ${where('errors')}: the AWS secret access key does not match the access key ID`),
    },
    {
      what: 'unknown access key',
      env: { ...gw.env, AWS_ACCESS_KEY_ID: 'NOSUCHACCESSKEY' },
      url: gw.url('errors'),
      line: new RegExp(`^narcache: ${where('errors')}: the service does not know the AWS access key ID given$`),
    },
    {
      what: 'no credentials at all',
      env: { ...noKeys, AWS_EC2_METADATA_DISABLED: 'true' },
      url: gw.url('errors'),
      line: new RegExp(`^narcache: ${where('errors')}: no AWS credentials found`),
    },
    {
      what: 'missing bucket',
      url: gw.url('no-such-bucket'),
      line: new RegExp(`^narcache: ${where('no-such-bucket')}: bucket no-such-bucket does not exist$`),
    },
    {
      what: 'unreachable endpoint',
      url: `s3://errors?endpoint=127.0.0.1:${closedPort}&scheme=http`,
      line: new RegExp(
        `^narcache: ${where('errors', `http://127.0.0.1:${closedPort}`)}: cannot reach http://127\\.0\\.0\\.1:${closedPort}: connection refused$`,
      ),
    },
    {
      what: 'a misspelt parameter',
      url: 's3://errors?endpont=127.0.0.1:9',
      line: /^narcache: s3:\/\/errors\?endpont=127\.0\.0\.1:9: unknown parameter "endpont" \(narcache takes endpoint, scheme, region, profile, buffer-size, narinfo-compression, ls-compression, storage-class\)$/,
    },
    {
      what: 'a compression of small files that narcache does not write',
      url: 's3://errors?narinfo-compression=gzip',
      line: /^narcache: s3:\/\/errors\?narinfo-compression=gzip: narinfo-compression must be xz, zstd, br or none, not "gzip"$/,
    },
    {
      what: "a parameter of Nix's that narcache takes as an option",
      url: 's3://errors?compression=xz',
      line: /^narcache: s3:\/\/errors\?compression=xz: give compression with --compression, not in the URL$/,
    },
    {
      what: "Nix's write-nar-listing, an option of narcache's",
      url: 's3://errors?write-nar-listing=true',
      line: /^narcache: s3:\/\/errors\?write-nar-listing=true: give write-nar-listing with --write-nar-listing, not in the URL$/,
    },
  ];
  for (const c of cases) {
    for (const command of [['build', fx.root, '-o', c.url], ['verify', c.url], ['sign', c.url, '--sign-key-file', key.secretKeyFile]]) {
      const r = await cli(command, c.env);
      t.is(r.code, 1, `${c.what}, ${command[0]}: exit 1`);
      const lines = r.stderr.split('\n');
      t.deepEqual(lines.slice(1), [''], `${c.what}, ${command[0]}: one line: ${JSON.stringify(r.stderr)}`);
      t.regex(lines[0], c.line, `${c.what}, ${command[0]}`);
    }
  }
  t.deepEqual(await gw.keys('errors'), [], 'nothing written with bad credentials');
});
