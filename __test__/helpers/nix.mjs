// Helpers that drive the real Nix (2.8+) and the narcache CLI for the end-to-end tests.
//
// Everything runs against the local store (/nix/store, no daemon), with the settings of
// scripts/nix.conf in NIX_CONFIG (no substituters, no sandbox, no build users, the `nix`
// command), which the README's example uses too.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { hashCommandOutput, nix32Encode } from './cache.mjs';

export const REPO = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const FIXTURES_DIR = path.join(REPO, '__test__', 'fixtures');
export const CLOSURE_NIX = path.join(FIXTURES_DIR, 'closure.nix');
export const CLI = path.join(REPO, 'dist', 'cli.js');
export const STORE_DIR = '/nix/store';

export const NIX_CONFIG = fs.readFileSync(path.join(REPO, 'scripts', 'nix.conf'), 'utf8');

export const nixEnv = { ...process.env, NIX_CONFIG };

// ---------------------------------------------------------------------------------------
// processes

/**
 * Run a command; never throws for a non-zero exit.
 * @returns {Promise<{code: number|null, signal: string|null, stdout: string, stderr: string}>}
 */
export function run(cmd, args, { env = nixEnv, cwd = REPO, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    if (input !== undefined) {
      child.stdin.on('error', () => {}); // the child may exit without reading its input
      child.stdin.end(input);
    }
  });
}

function describe(cmd, args) {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a}'`)).join(' ');
}

/** Run a command and throw (with its stderr) unless it exits 0. */
export async function runOk(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(
      `command failed (exit ${r.code}${r.signal ? `, signal ${r.signal}` : ''}): ${describe(cmd, args)}\n` +
        `--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout.slice(0, 4000)}`,
    );
  }
  return r;
}

/**
 * Wrap a command so that it runs in a private mount namespace where `dir` is a real
 * read-only bind mount of itself (chmod does not stop root; a read-only mount does).
 * Needs root (CAP_SYS_ADMIN) and util-linux `unshare`.
 */
export function readOnlyWrap(dir, cmd, args) {
  return [
    'unshare',
    [
      '-m',
      '--',
      'sh',
      '-c',
      'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
      'sh',
      dir,
      cmd,
      ...args,
    ],
  ];
}

/** Run the narcache CLI (`node dist/cli.js …`). `readOnly`: a directory to mount read-only first. */
export function runCli(args, { readOnly, env = nixEnv } = {}) {
  let cmd = process.execPath;
  let argv = [CLI, ...args];
  if (readOnly) [cmd, argv] = readOnlyWrap(readOnly, cmd, argv);
  return run(cmd, argv, { env });
}

/** Run the CLI `build … --json [...args]` and return the parsed summary; throws unless exit 0. */
export async function cliBuild(paths, dest, { compression, level, jobs, args: extra = [] } = {}) {
  const args = ['build', ...paths, '-o', dest, '--json', ...extra];
  if (compression) args.push('--compression', compression);
  if (level !== undefined) args.push('--level', String(level));
  if (jobs !== undefined) args.push('--jobs', String(jobs));
  const r = await runCli(args);
  if (r.code !== 0) {
    throw new Error(`narcache ${describe('build', args.slice(1))} exited ${r.code}\n${r.stderr}`);
  }
  let summary;
  try {
    summary = JSON.parse(r.stdout);
  } catch (e) {
    throw new Error(`narcache --json did not print one JSON object on stdout: ${JSON.stringify(r.stdout)}`);
  }
  return { summary, stderr: r.stderr, stdout: r.stdout };
}

// ---------------------------------------------------------------------------------------
// temporary directories

const tempDirs = new Set();
const KEEP = !!process.env.NARCACHE_KEEP_TMP;

/** A fresh directory under the OS temp dir; removed by cleanupTempDirs() or at exit. */
export function makeTempDir(prefix = 'narcache-test-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** A temp dir removed when the ava test `t` ends. */
export function tempDir(t, prefix) {
  const dir = makeTempDir(prefix);
  t.teardown(() => removeTempDir(dir));
  return dir;
}

export async function removeTempDir(dir) {
  tempDirs.delete(dir);
  if (KEEP) return;
  await rmrf(dir);
}

export async function cleanupTempDirs() {
  await Promise.all([...tempDirs].map((d) => removeTempDir(d)));
}

/** rm -rf that also copes with read-only trees (chroot stores, chmod a-w caches). */
export async function rmrf(p) {
  try {
    await fsp.rm(p, { recursive: true, force: true });
  } catch {
    await run('chmod', ['-R', 'u+w', p]);
    await fsp.rm(p, { recursive: true, force: true });
  }
}

process.on('exit', () => {
  if (KEEP) return;
  for (const d of tempDirs) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
});

// ---------------------------------------------------------------------------------------
// Nix

/**
 * nix-build FILE [-A attr…] --no-out-link --keep-going → output store paths (in Nix's order).
 * With --keep-going a failing derivation does not kill its siblings; without it Nix
 * SIGKILLs them and reports "signal 9" for innocent derivations.
 */
export async function nixBuild(file = CLOSURE_NIX, attr) {
  const attrs = attr === undefined ? [] : Array.isArray(attr) ? attr : [attr];
  const args = [file, ...attrs.flatMap((a) => ['-A', a]), '--no-out-link', '--keep-going'];
  const r = await runOk('nix-build', args);
  return r.stdout.split('\n').filter(Boolean);
}

/**
 * Build the fixtures of closure.nix. Returns { root, root2, big, extra } (store paths).
 * Nix builds each derivation once; later calls (other test files) are cheap no-ops.
 */
export async function buildFixtures() {
  const names = ['root', 'root2', 'big', 'extra'];
  const outs = await nixBuild(CLOSURE_NIX, names);
  const res = {};
  for (const n of names) {
    const p = outs.find((o) => o.endsWith(`-${n}`));
    if (!p) throw new Error(`nix-build did not output ${n}: ${outs.join(' ')}`);
    res[n] = p;
  }
  return res;
}

/** nix-store --query --requisites: the closure, sorted. */
export async function closure(paths, { store } = {}) {
  const args = [...(store ? ['--store', store] : []), '--query', '--requisites', ...paths];
  const r = await runOk('nix-store', args);
  return [...new Set(r.stdout.split('\n').filter(Boolean))].sort();
}

/**
 * nix-store --dump-db PATHS → Map(path → { path, narHashBase16, narHash ('sha256:'+nix32),
 * narSize, deriver (full path or ''), references (full paths, sorted) }).
 * Block format: path, NarHash base16, NarSize, deriver or empty line, ref count, refs.
 */
export async function dumpDb(paths, { store } = {}) {
  const args = [...(store ? ['--store', store] : []), '--dump-db', ...paths];
  const r = await runOk('nix-store', args);
  return parseDumpDb(r.stdout);
}

export function parseDumpDb(text) {
  const lines = text.split('\n');
  const out = new Map();
  let i = 0;
  while (i < lines.length && lines[i] !== '') {
    const p = lines[i++];
    const hex = lines[i++];
    const narSize = Number(lines[i++]);
    const deriver = lines[i++];
    const n = Number(lines[i++]);
    const references = lines.slice(i, i + n).sort();
    i += n;
    if (!/^[0-9a-f]{64}$/.test(hex) || !Number.isSafeInteger(narSize) || !Number.isInteger(n)) {
      throw new Error(`cannot parse nix-store --dump-db output near ${p}`);
    }
    out.set(p, {
      path: p,
      narHashBase16: hex,
      narHash: 'sha256:' + nix32Encode(Buffer.from(hex, 'hex')),
      narSize,
      deriver,
      references,
    });
  }
  return out;
}

/** `nix path-info --json` of paths (or --all with a store); accepts the 2.8 array and newer object shapes. */
export async function pathInfo(paths, { store, all = false } = {}) {
  const args = ['path-info', '--json', ...(store ? ['--store', store] : []), ...(all ? ['--all'] : paths)];
  const r = await runOk('nix', args);
  const j = JSON.parse(r.stdout);
  const list = Array.isArray(j) ? j : Object.entries(j).map(([p, v]) => ({ path: p, ...v }));
  return new Map(list.map((e) => [e.path, e]));
}

/** sha256 (hex and nix32) and size of `nix-store --dump PATH`, streamed. */
export function nixDumpHash(storePath) {
  return hashCommandOutput('nix-store', ['--dump', storePath], { env: nixEnv });
}

/**
 * nix copy --to 'file://DIR?compression=C' PATHS (copies the closure);
 * with secretKeyFile, Nix signs every narinfo it writes (`&secret-key=F`);
 * `params` adds more of the store URL's parameters (`{ 'write-nar-listing': 'true' }`).
 */
export async function nixCopyTo(cacheDir, paths, compression = 'xz', { secretKeyFile, params = {} } = {}) {
  const query = Object.entries({ compression, ...(secretKeyFile ? { 'secret-key': secretKeyFile } : {}), ...params })
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  await runOk('nix', ['copy', '--to', `file://${cacheDir}?${query}`, ...paths]);
}

/**
 * `nix-store --generate-binary-cache-key NAME SK PK` into `dir`.
 * Returns { secretKeyFile, publicKeyFile, publicKey } (publicKey: the file's text).
 */
export async function nixGenerateKey(name, dir) {
  const secretKeyFile = path.join(dir, `${name}.secret`);
  const publicKeyFile = path.join(dir, `${name}.public`);
  await runOk('nix-store', ['--generate-binary-cache-key', name, secretKeyFile, publicKeyFile]);
  return { secretKeyFile, publicKeyFile, publicKey: await fsp.readFile(publicKeyFile, 'utf8') };
}

/**
 * Substitute `rootPaths` (and their closure) from the flat-file cache `cacheDir` (a
 * directory, or the URL of a cache served over HTTP) into a
 * FRESH chroot store, then `nix store verify --all` on it.
 *   - no trustedPublicKey: copy with --no-check-sigs, verify with --no-trust;
 *   - trustedPublicKey 'name:base64': signatures enforced on copy and on verify.
 *   - readOnly: the cache is a real read-only mount while Nix reads it.
 * Returns { copy: {code, stderr}, verify: {code, stderr}, store } — store is the chroot
 * root (removed with the other temp dirs).
 */
export async function substitute(cacheDir, rootPaths, { trustedPublicKey, readOnly = false } = {}) {
  const roots = Array.isArray(rootPaths) ? rootPaths : [rootPaths];
  const store = path.join(makeTempDir('narcache-chroot-'), 'root');
  const keyArgs = trustedPublicKey ? ['--option', 'trusted-public-keys', trustedPublicKey] : [];
  let cmd = 'nix';
  let args = [
    'copy',
    '--from',
    ...(/^https?:\/\//.test(cacheDir)
      ? // Nix remembers what an HTTP cache had (~/.cache/nix): ask it afresh each time.
        [cacheDir, '--option', 'narinfo-cache-positive-ttl', '0', '--option', 'narinfo-cache-negative-ttl', '0']
      : [`file://${cacheDir}`]),
    '--to',
    store,
    ...(trustedPublicKey ? keyArgs : ['--no-check-sigs']),
    ...roots,
  ];
  if (readOnly) [cmd, args] = readOnlyWrap(cacheDir, cmd, args);
  const c = await run(cmd, args);
  const copy = { code: c.code, stderr: c.stderr };
  let verify = { code: null, stderr: 'not run: copy failed' };
  if (c.code === 0) {
    const v = await run('nix', [
      'store',
      'verify',
      '--store',
      store,
      '--all',
      ...(trustedPublicKey ? keyArgs : ['--no-trust']),
    ]);
    verify = { code: v.code, stderr: v.stderr };
  }
  return { copy, verify, store };
}

// ---------------------------------------------------------------------------------------
// chroot stores and their databases

/** `nix copy` the closure of `paths` from the local store into the chroot store `store` (created if missing). */
export async function nixCopyToStore(store, paths) {
  await runOk('nix', ['copy', '--no-check-sigs', '--to', store, ...paths]);
}

/** Where a chroot store `<store>` keeps its files and its database. */
export function chrootLayout(store) {
  return { storeRoot: path.join(store, 'nix', 'store'), dbDir: path.join(store, 'nix', 'var', 'nix', 'db') };
}

/**
 * Keeps the database of the chroot store `store` open in a running Nix process,
 * `nix-store --serve` (it opens the store, then waits for commands on stdin). While it
 * runs, another Nix process that registers paths is never the last to close the database,
 * so it does not checkpoint: its rows stay in db.sqlite-wal, as a running Nix leaves them.
 * Resolves once the database is open (its -shm file exists); stop() kills the process
 * with SIGKILL, so that it does not checkpoint either.
 */
export async function holdStoreOpen(store) {
  const child = spawn('nix-store', ['--store', store, '--serve'], { env: nixEnv, stdio: ['pipe', 'ignore', 'pipe'] });
  const exited = new Promise((resolve) => child.on('close', resolve));
  const shm = path.join(chrootLayout(store).dbDir, 'db.sqlite-shm');
  for (let waited = 0; !fs.existsSync(shm); waited += 50) {
    if (waited > 20000 || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`nix-store --store ${store} --serve did not open the database`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}
