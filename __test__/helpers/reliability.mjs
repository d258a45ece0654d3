// Shared pieces of the reliability campaigns (__test__/reliability-*.test.mjs): the
// closure of fixtures/many.nix, a seeded random generator, a build signalled at a chosen
// moment, and a check of a cache directory that does not trust narcache: what real Nix's
// database says about each path against what the narinfos present say, plus
// `narcache verify --json`.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { hashPart, narinfoFields, readNarinfos } from './cache.mjs';
import { CLI, FIXTURES_DIR, closure, dumpDb, makeTempDir, nixBuild, nixEnv, run } from './nix.mjs';

export const MANY_NIX = path.join(FIXTURES_DIR, 'many.nix');
/** Names of files being written, as narcache's TEMP_PREFIX; never referenced by a narinfo. */
export const TEMP_PREFIX = '.tmp-narcache-';

/**
 * Builds fixtures/many.nix. Returns { rootA, rootB, closureA, closureB, union, db }:
 * the roots, their closures (sorted store paths) and Nix's database records of the union.
 */
export async function buildMany() {
  const outs = await nixBuild(MANY_NIX, ['rootA', 'rootB']);
  const [rootA, rootB] = ['rootA', 'rootB'].map((n) => outs.find((o) => o.endsWith(`-${n}`)));
  const closureA = await closure([rootA]);
  const closureB = await closure([rootB]);
  const union = [...new Set([...closureA, ...closureB])].sort();
  return { rootA, rootB, closureA, closureB, union, db: await dumpDb(union) };
}

/** mulberry32: a small seeded generator; `next()` in [0, 1), `int(n)` in [0, n). */
export function random(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (n) => Math.floor(next() * n);
  return { next, int, pick: (list) => list[int(list.length)] };
}

/** Starts `node dist/cli.js ARGS` with stdout and stderr piped; the caller kills or awaits it. */
export function startCli(args, { env = nixEnv } = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = [];
  const err = [];
  child.stdout.on('data', (b) => out.push(b));
  child.stderr.on('data', (b) => err.push(b));
  child.done = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
  });
  return child;
}

/**
 * Runs the CLI with `args` (a build into `dir`) and sends it `signal` at `moment`:
 *   { kind: 'time', ms }     ms after the start
 *   { kind: 'opened' }       once dir/nix-cache-info exists (the closure is known)
 *   { kind: 'temp', n }      once the n-th temporary NAR file is seen in dir/nar (copy
 *                            writes them; build writes NAR files unnamed)
 *   { kind: 'nar', n }       once the n-th new NAR file is named in dir/nar (packing under way)
 *   { kind: 'narinfo', n }   once n narinfos are in dir (narinfos appear in batches: this
 *                            lands amid a batch's renames as often as after one)
 *   { kind: 'fewer', n }     once fewer than n narinfos are in dir (a prune removing them)
 * and, with `again`, the same signal once more 1 ms later. Resolves to { signalled,
 * atMs, exitMs (from the signal to the exit), code, signal, stderr, stdout }; signalled
 * is false if the process ended first.
 */
export function buildAndSignal(args, dir, moment, signal, { again = false } = {}) {
  // A build makes its narinfos durable by syncing the whole file system: its first sync would
  // also wait for what earlier work left unwritten (a store Nix just filled), and the rest
  // of the closure would then appear in one late batch, the moment of its n-th narinfo being
  // the very end of the build. Written out first, the narinfos appear as the build goes.
  execFileSync('sync');
  /** The names in dir/sub, or undefined while it does not exist. */
  const namesIn = (sub) => {
    try {
      return fs.readdirSync(path.join(dir, sub));
    } catch {
      return undefined;
    }
  };
  const startedWith = new Set(moment.kind === 'nar' ? (namesIn('nar') ?? []) : []);
  const child = startCli(args);
  const started = performance.now();
  let atMs;
  const send = () => {
    if (atMs !== undefined || child.exitCode !== null) return;
    atMs = performance.now() - started;
    child.kill(signal);
    // Later than at once, or the kernel merges the two into one pending signal.
    if (again) setTimeout(() => child.exitCode === null && child.kill(signal), 1);
  };
  const timers = [];
  if (moment.kind === 'time') timers.push(setTimeout(send, moment.ms));
  if (moment.kind === 'opened') timers.push(setInterval(() => fs.existsSync(path.join(dir, 'nix-cache-info')) && send(), 2));
  if (moment.kind === 'fewer') {
    const count = () => fs.readdirSync(dir).filter((n) => n.endsWith('.narinfo') && !n.startsWith(TEMP_PREFIX)).length;
    timers.push(setInterval(() => count() < moment.n && send(), 1));
  }
  const watchers = [];
  const watch = (sub, counts) => {
    const seen = new Set();
    const note = (names) => {
      for (const n of names) if (counts(n)) seen.add(n);
      if (seen.size >= moment.n) send();
    };
    timers.push(
      setInterval(() => {
        const names = namesIn(sub);
        if (!names) return;
        // Polling sees what is there; the watch also sees the files that
        // come and go between two polls (a small path's temporary NAR).
        if (!watchers.length) watchers.push(fs.watch(path.join(dir, sub), (_, name) => name && note([String(name)])));
        note(names);
      }, 1),
    );
  };
  if (moment.kind === 'temp') watch('nar', (n) => n.startsWith(TEMP_PREFIX));
  if (moment.kind === 'nar') watch('nar', (n) => !n.startsWith(TEMP_PREFIX) && !startedWith.has(n));
  if (moment.kind === 'narinfo') watch('', (n) => n.endsWith('.narinfo') && !n.startsWith(TEMP_PREFIX));
  return child.done.then((r) => {
    timers.forEach((tm) => clearInterval(tm));
    watchers.forEach((w) => w.close());
    const exitMs = atMs === undefined ? undefined : performance.now() - started - atMs;
    return { ...r, signalled: atMs !== undefined, atMs, exitMs };
  });
}

/** `narcache verify DIR --json`: { code, report } (report undefined if stdout is not JSON). */
export async function verifyJson(dir) {
  const r = await run(process.execPath, [CLI, 'verify', dir, '--json']);
  let report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    report = undefined;
  }
  return { code: r.code, report, stderr: r.stderr };
}

/** `.tmp-narcache-*` files in DIR and DIR/nar (relative to DIR). */
export async function tempFiles(dir) {
  const found = [];
  for (const sub of ['', 'nar']) {
    const names = await fsp.readdir(path.join(dir, sub)).catch(() => []);
    found.push(...names.filter((n) => n.startsWith(TEMP_PREFIX)).map((n) => path.posix.join(sub, n)));
  }
  return found;
}

/**
 * Everything wrong with the cache in `dir`, judged apart from narcache against Nix's
 * database `db` (from buildMany): each narinfo names a path of `db` and states its NarHash,
 * NarSize and references; its URL names an existing file in nar/ that is not a temporary
 * file; every reference has a narinfo (the cache is closed). Returns
 * { problems: [string], narinfos: Map(storePath → fields) }.
 */
export async function independentCheck(dir, db) {
  const problems = [];
  const narinfos = new Map();
  for (const [hp, text] of await readNarinfos(dir)) {
    if (hp.startsWith(TEMP_PREFIX)) continue; // a narinfo being written when the build died
    let f;
    try {
      f = narinfoFields(text);
    } catch (e) {
      problems.push(`${hp}.narinfo: ${e.message}`);
      continue;
    }
    narinfos.set(f.StorePath, f);
    const record = db.get(f.StorePath);
    if (!record) {
      problems.push(`${hp}.narinfo names ${f.StorePath}, not a path of the closure`);
      continue;
    }
    if (hashPart(f.StorePath) !== hp) problems.push(`${hp}.narinfo is for ${f.StorePath}`);
    if (f.NarHash !== record.narHash) problems.push(`${f.StorePath}: NarHash ${f.NarHash}, Nix says ${record.narHash}`);
    if (Number(f.NarSize) !== record.narSize) problems.push(`${f.StorePath}: NarSize ${f.NarSize}, Nix says ${record.narSize}`);
    const refs = f.References ? f.References.split(' ').sort() : [];
    const expected = record.references.map((r) => path.basename(r)).sort();
    if (refs.join(' ') !== expected.join(' ')) problems.push(`${f.StorePath}: References differ from Nix's`);
    if (!/^nar\/[0-9a-z]{52}\.nar(\.xz|\.zst)?$/.test(f.URL) || f.URL.includes(TEMP_PREFIX)) {
      problems.push(`${f.StorePath}: URL ${f.URL}`);
    } else {
      const stat = await fsp.stat(path.join(dir, f.URL)).catch(() => undefined);
      if (!stat?.isFile()) problems.push(`${f.StorePath}: ${f.URL} is missing`);
      else if (stat.size !== Number(f.FileSize)) problems.push(`${f.StorePath}: ${f.URL} has ${stat.size} bytes, FileSize ${f.FileSize}`);
    }
  }
  for (const [storePath, f] of narinfos) {
    for (const ref of f.References ? f.References.split(' ') : []) {
      if (!narinfos.has(`/nix/store/${ref}`)) problems.push(`${storePath}: reference ${ref} has no narinfo`);
    }
  }
  return { problems, narinfos };
}

/**
 * Asserts, in ava test `t`, that the cache in `dir` has no lying entry: `narcache verify
 * --json` exits 0 and finds every narinfo valid, and the independent check finds nothing.
 * With `unstarted`, a directory that is not a cache yet (no nix-cache-info, no narinfo:
 * a build stopped before it wrote anything) passes too. Returns { report, narinfos, temps }.
 */
export async function assertSound(t, dir, db, label, { unstarted = false } = {}) {
  const { code, report, stderr } = await verifyJson(dir);
  t.truthy(report, `${label}: verify --json printed no JSON (exit ${code}): ${stderr}`);
  const notYetACache =
    report?.narinfos === 0 && report.problems.length === 1 && report.problems[0].file === 'nix-cache-info';
  if (!(unstarted && notYetACache)) {
    t.is(code, 0, `${label}: verify exit code; problems ${JSON.stringify(report?.problems)}`);
    t.deepEqual(report?.problems, [], `${label}: verify problems`);
  }
  t.is(report?.valid, report?.narinfos, `${label}: every narinfo valid`);
  const { problems, narinfos } = await independentCheck(dir, db);
  t.deepEqual(problems, [], `${label}: independent check`);
  t.is(report?.narinfos, narinfos.size, `${label}: verify saw every narinfo`);
  return { report, narinfos, temps: await tempFiles(dir) };
}

/** Lines of a build's stderr other than the per-path progress lines. */
export function messageLines(stderr) {
  return stderr.split('\n').filter((l) => l !== '' && !l.startsWith('narcache: wrote '));
}

const memoryDirs = [];
process.on('exit', () => memoryDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/**
 * A directory for many small, short-lived files: in memory (/dev/shm) where there is
 * one, where creating and removing files costs a quarter of what it does on disk.
 */
export function scratchDir(prefix) {
  if (!fs.existsSync('/dev/shm')) return makeTempDir(prefix);
  const dir = fs.mkdtempSync(path.join('/dev/shm', prefix));
  memoryDirs.push(dir);
  return dir;
}
