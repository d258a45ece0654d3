// A real S3 server for the tests: Ceph's RADOS Gateway from Debian's packages (ceph-mon,
// ceph-osd, radosgw, ceph-common), as a single-node cluster on loopback — one monitor, one
// OSD that keeps its data in memory, one gateway — with every file in a temporary
// directory, started in about 1.5 s and stopped by the pids it started.
// Settings and pitfalls: ../../../shared/S3.md (cephx off, ms_mon_client_mode = crc, pool
// size 1, memstore, a short paxos interval).

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

import {
  CreateBucketCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutBucketPolicyCommand,
  S3Client,
} from '@aws-sdk/client-s3';

import { cleanupTempDirs, makeTempDir, nixEnv, removeTempDir, run, runOk } from './nix.mjs';

const ACCESS_KEY = 'NARCACHETESTACCESSKEY';
const SECRET_KEY = 'narcache-test-secret-key-0123456789abcdef';
const READY_TIMEOUT_MS = 30_000;

/** A TCP port nothing listens on at the moment. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts a gateway. Returns { endpoint, host, env, client, bucket(), url(), stop() }:
 * `env` holds the credentials (and nothing from the caller's AWS configuration) for
 * running the CLI; `client` is an S3Client to look at buckets independently of narcache.
 * `memoryBytes`: what the OSD may hold, in RAM (deleted data is freed only later).
 * `storageClasses`: storage classes besides STANDARD that the gateway offers (RGW knows
 * only those of its placement, read when it starts).
 */
export async function startGateway({ memoryBytes = 2 * 1024 ** 3, storageClasses = [] } = {}) {
  const dir = makeTempDir('narcache-rgw-');
  const [monV2, monV1, rgwPort] = [await freePort(), await freePort(), await freePort()];
  const monAddr = `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`;
  const conf = path.join(dir, 'ceph.conf');
  for (const sub of ['run', 'log', 'crash', 'mon', 'osd/osd.0', 'rgw']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  fs.writeFileSync(
    conf,
    `[global]
fsid = ${randomUUID()}
mon_host = ${monAddr}
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_data_avail_crit = 0
run_dir = ${dir}/run
admin_socket = ${dir}/run/$name.asok
log_file = ${dir}/log/$name.log
mon_cluster_log_file = ${dir}/log/cluster.log
crash_dir = ${dir}/crash
keyring = ${dir}/keyring
[mon]
mon_data = ${dir}/mon/$name
paxos_propose_interval = 0.05
[osd]
osd_data = ${dir}/osd/$name
osd_objectstore = memstore
memstore_device_bytes = ${memoryBytes}
[client.rgw]
rgw_data = ${dir}/rgw
rgw_frontends = beast endpoint=127.0.0.1:${rgwPort}
`,
  );
  const cephEnv = { ...process.env, CEPH_CONF: conf, CEPH_ARGS: `--conf ${conf}` };
  const fsid = /fsid = (.*)/.exec(fs.readFileSync(conf, 'utf8'))[1];
  const children = [];
  const daemon = (cmd, args) => {
    const log = fs.openSync(path.join(dir, 'log', `${cmd}.out`), 'a');
    const child = spawn(cmd, args, { env: cephEnv, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    children.push(child);
    return child;
  };
  const ceph = (cmd, args) => runOk(cmd, args, { env: cephEnv });

  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const gateway = {
    endpoint,
    host: `127.0.0.1:${rgwPort}`,
    dir,
    /** Environment for the CLI: the tests' Nix settings, these credentials, no shared AWS files of the machine. */
    env: {
      ...nixEnv,
      AWS_ACCESS_KEY_ID: ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: SECRET_KEY,
      AWS_CONFIG_FILE: path.join(dir, 'no-aws-config'),
      AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'no-aws-credentials'),
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
    accessKey: ACCESS_KEY,
    secretKey: SECRET_KEY,
    client: undefined,
    /** The cache URL of a bucket (and prefix) on this gateway, with extra parameters. */
    url(bucketAndPrefix, params = '') {
      return `s3://${bucketAndPrefix}?endpoint=${this.host}&scheme=http${params ? `&${params}` : ''}`;
    },
    /**
     * Creates a bucket; with anonymousRead, anyone may GET its objects and list it (a 404 for a
     * missing key, as Nix needs); with anyoneWrites, also PUT them (how Nix publishes over HTTP).
     */
    async bucket(name, { anonymousRead = false, anyoneWrites = false } = {}) {
      await this.client.send(new CreateBucketCommand({ Bucket: name }));
      if (!anonymousRead && !anyoneWrites) return;
      const policy = {
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Principal: '*', Action: ['s3:GetObject', ...(anyoneWrites ? ['s3:PutObject'] : [])], Resource: [`arn:aws:s3:::${name}/*`] },
          { Effect: 'Allow', Principal: '*', Action: ['s3:ListBucket'], Resource: [`arn:aws:s3:::${name}`] },
        ],
      };
      await this.client.send(new PutBucketPolicyCommand({ Bucket: name, Policy: JSON.stringify(policy) }));
    },
    /** Every key of a bucket under a prefix, sorted. */
    async keys(bucket, prefix = '') {
      const keys = [];
      for (let token; ; ) {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        keys.push(...(page.Contents ?? []).map((c) => c.Key));
        if (!page.IsTruncated) break;
        token = page.NextContinuationToken;
      }
      return keys.sort();
    },
    /** Multipart uploads not completed nor aborted in a bucket. */
    async openUploads(bucket) {
      const page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      return (page.Uploads ?? []).map((u) => u.Key);
    },
    async stop() {
      this.client?.destroy();
      await Promise.all(
        children.map(
          (child) =>
            new Promise((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once('exit', resolve);
              child.kill('SIGTERM');
              setTimeout(() => child.kill('SIGKILL'), 3000).unref();
            }),
        ),
      );
      await removeTempDir(dir);
    },
  };
  // Daemons outlive a test process that dies without stop(): not these.
  process.on('exit', () => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));

  try {
    await ceph('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', monAddr, path.join(dir, 'monmap')]);
    await ceph('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap')]);
    daemon('ceph-mon', ['-f', '-i', 'a']);
    const osdUuid = randomUUID();
    await ceph('ceph', ['osd', 'new', osdUuid]);
    await ceph('ceph-osd', ['-i', '0', '--mkfs', '--osd-uuid', osdUuid]);
    daemon('ceph-osd', ['-f', '-i', '0']);
    const startRgw = async () => {
      const rgw = daemon('radosgw', ['-f', '-n', 'client.rgw']);
      const deadline = Date.now() + READY_TIMEOUT_MS;
      for (;;) {
        const ok = await fetch(`${endpoint}/`).then((r) => r.status === 200, () => false);
        if (ok) return rgw;
        const dead = children.find((c) => c.exitCode !== null);
        if (dead || Date.now() > deadline) {
          const logs = await fsp.readFile(path.join(dir, 'log', 'radosgw.out'), 'utf8').catch(() => '');
          throw new Error(`the RADOS gateway did not come up${dead ? ` (${dead.spawnfile} exited)` : ''}:\n${logs.slice(-3000)}`);
        }
        await sleep(100);
      }
    };
    const rgw = await startRgw();
    await ceph('radosgw-admin', [
      'user', 'create', '--uid=narcache-test', '--display-name=narcache test',
      `--access-key=${ACCESS_KEY}`, `--secret-key=${SECRET_KEY}`,
    ]);
    if (storageClasses.length) {
      // The zone exists once the gateway has run; the gateway reads its placement when it starts.
      for (const storageClass of storageClasses) {
        const placement = ['--placement-id', 'default-placement', '--storage-class', storageClass];
        await ceph('radosgw-admin', ['zonegroup', 'placement', 'add', '--rgw-zonegroup', 'default', ...placement]);
        const pool = `default.rgw.${storageClass.toLowerCase()}.data`;
        await ceph('radosgw-admin', ['zone', 'placement', 'add', '--rgw-zone', 'default', ...placement, '--data-pool', pool]);
      }
      const exited = new Promise((resolve) => rgw.once('exit', resolve));
      rgw.kill('SIGTERM');
      await exited;
      children.splice(children.indexOf(rgw), 1);
      await startRgw();
    }
  } catch (e) {
    await gateway.stop();
    throw e;
  }
  gateway.client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return gateway;
}

/** Whether the Ceph programs the gateway needs are installed; the message says what to install if not. */
export async function cephMissing() {
  const missing = [];
  for (const cmd of ['monmaptool', 'ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph']) {
    if ((await run('sh', ['-c', `command -v ${cmd}`])).code !== 0) missing.push(cmd);
  }
  return missing.length
    ? `${missing.join(', ')} not found: apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common`
    : undefined;
}

/**
 * For an ava test file (call it after the file's top-level awaits, where its tests are
 * declared: ava wants hooks and tests declared at once):
 * before the file's tests, fails if Ceph is missing, else starts a gateway (`options`: those of
 * startGateway); after them,
 * stops it and removes the temporary directories. Returns an object that is the gateway
 * (see startGateway) while the tests run.
 */
export function gatewayForTests(test, options = {}) {
  const gw = {};
  test.before(async () => {
    const missing = await cephMissing();
    if (missing) throw new Error(`the S3 tests need Ceph's RADOS Gateway: ${missing}`);
    Object.assign(gw, await startGateway(options));
  });
  test.after.always(async () => {
    await gw.stop?.();
    await cleanupTempDirs();
  });
  return gw;
}
