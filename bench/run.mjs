#!/usr/bin/env node
// npm run bench [-- options]       the full benchmark (long: see --help)
// npm run bench:quick              a small closure, every run, < 1 minute
//
// Builds a realistic closure with nix-build (bench/closure.mjs), then, in
// one session with the page cache warm, times narcache against `nix copy
// --to file://`, the algorithm of nixpkgs' mkBinaryCache and the physical
// limits (zstd/xz of all NARs in one stream; reading and hashing every
// file once), checks that narcache's output does not depend on --jobs, and
// writes results.{json,svg} (into bench-out/ unless --out says otherwise).

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { nixEnv, REPO, rmrf, run, runOk } from '../__test__/helpers/nix.mjs';
import { startGateway } from '../__test__/helpers/s3.mjs';
import { buildClosure } from './closure.mjs';
import { syntheticClosure } from './many-paths.mjs';
import { measure, utilisation } from './measure.mjs';
import { formatBytes, formatRuns, formatTargets, sparkline, svgChart } from './report.mjs';

const CLI = path.join(REPO, 'dist', 'cli.js');
const ADDON = path.join(REPO, 'native', 'narcache.linux-x64-gnu.node');
const BENCH = path.join(REPO, 'bench');
const COMPRESSIONS = ['none', 'zstd', 'xz'];

const SIZES = {
  quick: { packages: 16, maxKiB: 128, smallFiles: 500, blobMiB: 2, repeat: 1, manyPaths: 2000, hugePaths: 0 },
  full: { packages: Infinity, maxKiB: 32 * 1024, smallFiles: 30000, blobMiB: 1024, repeat: 3, manyPaths: 25000, hugePaths: 100000 },
};
// The open-file limit of the largest closure's run: far below the paths it has.
const HUGE_OPEN_FILES = 256;
// On a shared virtual machine one pass may run 20-30 % slower than the
// next for no reason of its own: a ratio from single passes is mostly that
// noise. Limits and narcache therefore alternate, and medians are compared.
const REPEAT_MAX_SECONDS = 120;
// Where an S3 run's argv (and setup) name its bucket, as narcache's URL or as plain HTTP.
const BUCKET_URL = '<bucket-url>';
const BUCKET_HTTP = '<bucket-http>';
// Outputs of closures of this many paths or more are removed only at the end (see discard).
const SET_ASIDE_PATHS = 5000;
// ext4 without a journal does not reuse an inode freed in the last minute, or the last six
// while its inode table block is unwritten (RECENTCY_MIN and RECENTCY_DIRTY in the kernel's
// fs/ext4/ialloc.c): every file created meanwhile walks past those inodes. A session started
// right after another had removed its 800,000 files took 2-3 times as long for its first
// many-path runs, so a session waits for the last one's removal to settle.
const REMOVAL_SETTLES_MS = 6 * 60 * 1000;
const REMOVED_AT = 'caches-removed-at';
// statfs f_type of tmpfs and ramfs (linux/magic.h).
const IN_MEMORY_FILE_SYSTEMS = [0x01021994, 0x858458f6];

const HELP = `usage: npm run bench [-- options]   (bench:quick = --quick)

  --quick               small closure (CI smoke run, under a minute)
  --only LIST           only these runs (comma-separated ids or groups)
  --skip LIST           all runs but these
  --jobs N              cores to use: narcache --jobs, xargs -P, zstd/xz -T
                        (default: the CPU count)
  --packages N          Debian packages in the closure   (full: all that fit, quick: 16)
  --max-package-kib N   largest package taken            (full: 32768, quick: 128)
  --small-files N       files in the small-files path    (full: 30000, quick: 500)
  --blob-mib N          size of the one-file path        (full: 1024, quick: 2)
  --many-paths N        paths of the many-paths closure  (full: 25000, quick: 2000)
  --huge-paths N        paths of the largest closure, built under
                        ulimit -n ${HUGE_OPEN_FILES} (full: 100000, quick: none)
  --repeat N            passes of each limit and narcache's runs against it
                        (for zstd also narcache on the NAR stream as one
                        file), alternating (full: 3, quick: 1); the table
                        gives the median. A group whose first passes take
                        over ${REPEAT_MAX_SECONDS} s together runs once (xz: ~10 min each).
  --out DIR             where results, logs and caches go (default bench-out/)
  --keep                keep the caches and the NAR stream in DIR

Groups for --only/--skip: a compression (none, zstd, xz), a tool (narcache,
nix-copy, mkbinarycache, limit), determinism (narcache's extra
--jobs 1 run, and --jobs 2 run if the CPU count is not 2), s3
(publishing to buckets of a local Ceph RADOS Gateway), listing (narcache
zstd with --write-nar-listing), many (the many-paths closure: narcache and
nix copy, none and zstd, and narcache's re-run with every path present; then
zstd into buckets of the local gateway: narcache, nix copy over HTTP PUT, and
narcache's re-run), cold (narcache and nix copy of the many-paths closure, zstd,
each pass after the page cache is dropped and not read again; also in many;
every pass on the many-path closures starts from a dropped page cache, as root),
prune (narcache prune of the many-paths cache to the closure of one path
in the middle, also in many), huge (narcache on the largest closure), copy (narcache-xz's cache copied to
another directory by narcache copy and by nix copy; the cache is built
untimed if narcache-xz does not run), or a run id:
`;

function parseOptions() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      only: { type: 'string' },
      skip: { type: 'string' },
      jobs: { type: 'string' },
      packages: { type: 'string' },
      'max-package-kib': { type: 'string' },
      'small-files': { type: 'string' },
      'blob-mib': { type: 'string' },
      'many-paths': { type: 'string' },
      'huge-paths': { type: 'string' },
      repeat: { type: 'string' },
      out: { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const mode = values.quick ? 'quick' : 'full';
  const number = (name, fallback) => {
    const v = values[name];
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`--${name} takes a positive integer, not ${v}`);
    return Number(v);
  };
  const size = SIZES[mode];
  return {
    mode,
    help: values.help,
    only: values.only?.split(',').filter(Boolean),
    skip: values.skip?.split(',').filter(Boolean) ?? [],
    cores: number('jobs', os.availableParallelism()),
    packages: number('packages', size.packages),
    maxKiB: number('max-package-kib', size.maxKiB),
    smallFiles: number('small-files', size.smallFiles),
    blobBytes: number('blob-mib', size.blobMiB) * 1024 * 1024,
    manyPaths: number('many-paths', size.manyPaths),
    hugePaths: values['huge-paths'] === undefined ? size.hugePaths : number('huge-paths', 0),
    repeat: number('repeat', size.repeat),
    out: path.resolve(values.out ?? path.join(REPO, 'bench-out')),
    keep: values.keep ?? false,
  };
}

class UsageError extends Error {}

const passFigures = (m) => ({ wallSeconds: m.wallSeconds, cpuSeconds: m.cpuSeconds, peakRssMiB: m.peakRssMiB, diskReadMiB: m.diskReadMiB });

/** A run's figures from its passes: median wall and CPU time, the highest peak RSS and disk reads. */
function medianOf(passes) {
  const median = (xs) => {
    const sorted = [...xs].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  };
  const wallSeconds = median(passes.map((p) => p.wallSeconds));
  const cpuSeconds = median(passes.map((p) => p.cpuSeconds));
  const most = (key) => Math.max(...passes.map((p) => p[key]));
  return { wallSeconds, cpuSeconds, coresBusy: cpuSeconds / wallSeconds, peakRssMiB: most('peakRssMiB'), diskReadMiB: most('diskReadMiB') };
}

/**
 * Every run, in the order they execute: per compression the limit, narcache,
 * narcache's determinism twins, then the peers (slowest last).
 * `groups`: the names --only/--skip select it by.
 */
function allRuns({ cores, root, files, cacheDir, many, huge }) {
  const runs = [];
  const add = (r) => runs.push({ ...r, groups: [r.id, r.tool, r.compression, ...(r.groups ?? [])] });
  const nixCopy = (compression, id, query = '') =>
    add({
      id,
      tool: 'nix-copy',
      compression,
      kind: 'cache',
      sampled: true,
      argv: ['nix', 'copy', '--to', `file://${path.join(cacheDir, id)}?compression=${compression}${query}`, root],
    });
  const narcache = (compression, jobs, id, groups, limitGroup, flags = []) =>
    add({
      id,
      limitGroup,
      tool: 'narcache',
      compression,
      jobs,
      kind: 'cache',
      sampled: true,
      captureStdout: true,
      groups,
      argv: [process.execPath, CLI, 'build', root, '-o', path.join(cacheDir, id), '--compression', compression, '--jobs', String(jobs), '--json', ...flags],
    });
  for (const c of COMPRESSIONS) {
    if (c === 'none') {
      add({
        id: 'limit-read-hash',
        tool: 'limit',
        compression: c,
        limitGroup: c,
        argv: ['sh', '-c', 'tar -cf - --files-from "$1" | openssl dgst -sha256', 'sh', files.list],
      });
    } else {
      const out = path.join(cacheDir, `all.nar.${c}`);
      add({
        id: `limit-${c}`,
        tool: 'limit',
        compression: c,
        limitGroup: c,
        kind: 'file',
        sampled: true,
        output: out,
        argv: c === 'zstd' ? ['zstd', '-3', `-T${cores}`, '-q', '-f', files.allNar, '-o', out] : ['xz', '-6', `-T${cores}`, '-c', files.allNar],
        stdoutFile: c === 'xz' ? out : undefined,
      });
    }
    narcache(c, cores, `narcache-${c}`, [], c);
    if (c === 'zstd') {
      // What the NAR listings cost, made in the same pass: alternating with
      // narcache-zstd over the passes, for a comparison of medians.
      narcache(c, cores, 'narcache-zstd-listing', ['listing'], c, ['--write-nar-listing']);
      // narcache's own pipeline with none of a closure's costs (per path,
      // per file, scheduling, narinfos): the closure's NAR stream packed as
      // one file. Its ratio to the limit is what hashing and writing cost.
      const oneStream = path.join(cacheDir, 'one-stream');
      add({
        id: 'narcache-zstd-one-stream',
        tool: 'narcache',
        compression: c,
        kind: 'file',
        limitGroup: c,
        captureStdout: true,
        output: oneStream,
        argv: [process.execPath, path.join(BENCH, 'one-stream.mjs'), files.allNar, oneStream, String(cores)],
      });
      // The same publish into a bucket of a local Ceph RADOS Gateway, which shares the cores
      // (its CPU shows as other processes'); the gateway and bucket are made, untimed, before.
      add({
        id: 'narcache-zstd-s3',
        tool: 'narcache',
        compression: c,
        jobs: cores,
        kind: 's3',
        bucket: 'bench',
        sampled: true,
        captureStdout: true,
        groups: ['s3'],
        argv: [process.execPath, CLI, 'build', root, '-o', BUCKET_URL, '--compression', c, '--jobs', String(cores), '--json'],
      });
    }
    for (const jobs of cores === 2 ? [1] : [1, 2]) narcache(c, jobs, `narcache-${c}-jobs${jobs}`, ['determinism']);
    if (c === 'zstd') {
      add({
        id: 'mkbinarycache-zstd',
        tool: 'mkbinarycache',
        compression: c,
        kind: 'cache',
        argv: [
          'sh',
          '-c',
          'mkdir -p "$1/nar" && printf "StoreDir: /nix/store\\n" >"$1/nix-cache-info" && xargs -P "$4" -n 1 sh "$5" "$1" "$2" <"$3"',
          'sh',
          path.join(cacheDir, 'mkbinarycache-zstd'),
          files.narinfoTails,
          files.list,
          String(cores),
          path.join(BENCH, 'mkbinarycache-path.sh'),
        ],
      });
    }
    if (c === 'xz') nixCopy(c, 'nix-copy-xz-parallel', '&parallel-compression=true');
    nixCopy(c, `nix-copy-${c}`);
  }
  // An xz cache copied to another directory: narcache copy, which never recompresses,
  // against nix copy between the same two file:// caches. The source is narcache-xz's
  // cache, built untimed first if that run is left out.
  const copySource = path.join(cacheDir, 'narcache-xz');
  const copyTo = (id) => path.join(cacheDir, id);
  add({
    id: 'narcache-xz-copy',
    tool: 'narcache',
    compression: 'xz-copy',
    kind: 'cache',
    sampled: true,
    captureStdout: true,
    groups: ['copy'],
    source: copySource,
    argv: [process.execPath, CLI, 'copy', copySource, copyTo('narcache-xz-copy'), '--json'],
  });
  add({
    id: 'nix-copy-xz-copy',
    tool: 'nix-copy',
    compression: 'xz-copy',
    kind: 'cache',
    sampled: true,
    groups: ['copy'],
    source: copySource,
    argv: ['nix', 'copy', '--no-check-sigs', '--from', `file://${copySource}`, '--to', `file://${copyTo('nix-copy-xz-copy')}?compression=xz`, root],
  });
  // Many small paths: what each path costs. narcache and nix copy alternate
  // over the passes, as a limit and narcache do.
  const build = (id, compression) => [process.execPath, CLI, 'build', many.root, '-o', path.join(cacheDir, id), '--compression', compression, '--jobs', String(cores), '--json'];
  if (many) {
    for (const c of ['none', 'zstd']) {
      const on = { compression: c, closure: 'many', limitGroup: `many-${c}`, kind: 'cache', sampled: true, groups: ['many'] };
      add({ ...on, id: `narcache-many-${c}`, tool: 'narcache', jobs: cores, captureStdout: true, argv: build(`narcache-many-${c}`, c) });
      add({ ...on, id: `nix-copy-many-${c}`, tool: 'nix-copy', argv: ['nix', 'copy', '--to', `file://${path.join(cacheDir, `nix-copy-many-${c}`)}?compression=${c}`, many.root] });
    }
    // From a cold page cache, as after a reboot or for a closure larger than the memory: each
    // pass starts with the page cache dropped (untimed; root only, as for every pass on these
    // closures, see pass) and not read again, which shows what order the paths are read in costs.
    const cold = { compression: 'zstd', closure: 'many', variant: 'cold', limitGroup: 'many-zstd-cold', kind: 'cache', cold: true, sampled: true, groups: ['many', 'cold'] };
    add({ ...cold, id: 'narcache-many-zstd-cold', tool: 'narcache', jobs: cores, captureStdout: true, argv: build('narcache-many-zstd-cold', 'zstd') });
    add({ ...cold, id: 'nix-copy-many-zstd-cold', tool: 'nix-copy', argv: ['nix', 'copy', '--to', `file://${path.join(cacheDir, 'nix-copy-many-zstd-cold')}?compression=zstd`, many.root] });
    // Into a cache that holds every path already (made, untimed, by the same command).
    const id = 'narcache-many-rerun';
    add({ id, tool: 'narcache', compression: 'zstd', closure: 'many', jobs: cores, kind: 'cache', captureStdout: true, groups: ['many'], setup: build(id, 'zstd'), argv: build(id, 'zstd') });
  }
  // Before prune, which removes some 40,000 files: on ext4 without a journal
  // each file created in the minutes after skips the inodes they freed (see
  // discard), and this run creates 200,000.
  if (huge) {
    const id = 'narcache-huge-zstd';
    add({
      id,
      tool: 'narcache',
      compression: 'zstd',
      closure: 'huge',
      jobs: cores,
      kind: 'cache',
      sampled: true,
      captureStdout: true,
      groups: ['huge'],
      argv: ['sh', '-c', `ulimit -n ${HUGE_OPEN_FILES} && exec "$@"`, 'sh', process.execPath, CLI, 'build', huge.root, '-o', path.join(cacheDir, id), '--compression', 'zstd', '--jobs', String(cores), '--json'],
    });
  }
  if (many) {
    // A cache of the whole closure pruned to the closure of one path halfway through.
    add({
      id: 'narcache-many-prune',
      tool: 'narcache',
      compression: 'zstd',
      closure: 'many',
      kind: 'prune',
      captureStdout: true,
      groups: ['many', 'prune'],
      output: path.join(cacheDir, 'narcache-many-prune'),
      setup: build('narcache-many-prune', 'zstd'),
      argv: [process.execPath, CLI, 'prune', path.join(cacheDir, 'narcache-many-prune'), '--keep', many.middle, '--grace', '0', '--json'],
    });
    // Into buckets of the local gateway: narcache, Nix's HTTP PUTs into a
    // bucket anyone may write to, and narcache again once every path is there.
    const s3 = { compression: 'zstd', closure: 'many', kind: 's3', groups: ['many', 's3'] };
    const publish = [process.execPath, CLI, 'build', many.root, '-o', BUCKET_URL, '--compression', 'zstd', '--jobs', String(cores), '--json'];
    add({ ...s3, id: 'narcache-many-s3', tool: 'narcache', bucket: 'many', jobs: cores, sampled: true, captureStdout: true, argv: publish });
    add({ ...s3, id: 'nix-copy-many-http', tool: 'nix-copy', bucket: 'many-http', anyoneWrites: true, sampled: true, argv: ['nix', 'copy', '--to', `${BUCKET_HTTP}?compression=zstd`, many.root] });
    add({ ...s3, id: 'narcache-many-s3-rerun', tool: 'narcache', bucket: 'many-rerun', jobs: cores, captureStdout: true, setup: publish, argv: publish });
  }
  for (const r of runs) if (r.kind === 'cache') r.output = path.join(cacheDir, r.id);
  return runs;
}

function select(runs, { only, skip }) {
  const known = new Set(runs.flatMap((r) => r.groups));
  for (const token of [...(only ?? []), ...skip]) {
    if (!known.has(token)) throw new UsageError(`unknown run or group: ${token} (see --help)`);
  }
  return runs.filter((r) => (!only || r.groups.some((g) => only.includes(g))) && !r.groups.some((g) => skip.includes(g)));
}

function sh(script, ...args) {
  return runOk('sh', ['-c', script, 'sh', ...args]);
}

/** Bytes in the files under `p` (or of the file `p`); unlike du, not the directories, whose size depends on their history. */
async function fileBytes(p) {
  const { stdout } = await runOk('find', [p, '-type', 'f', '-printf', '%s\n']);
  return stdout.split('\n').filter(Boolean).reduce((n, s) => n + Number(s), 0);
}

/** `sha256sum` of every file under `dir`, sorted by path: the bytes of a cache, comparable. */
async function listing(dir) {
  const { stdout } = await sh('cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum', dir);
  return stdout;
}

/** What mkBinaryCache knows before it starts (from exportReferencesGraph): per path its narinfo's last lines. */
async function writeNarinfoTails(dir, closure) {
  await fsp.mkdir(dir, { recursive: true });
  for (const info of closure.pathInfos.values()) {
    const base = (p) => path.basename(p);
    const text = `NarHash: ${info.narHash}\nNarSize: ${info.narSize}\nReferences: ${info.references.map(base).sort().join(' ')}\n`;
    await fsp.writeFile(path.join(dir, base(info.path).split('-')[0]), text);
  }
}

async function machine() {
  const first = async (cmd, args) => (await run(cmd, args)).stdout.split('\n')[0].trim();
  const head = await run('git', ['-C', REPO, 'rev-parse', 'HEAD']);
  const dirty = await run('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'crates']);
  return {
    cpu: os.cpus()[0]?.model,
    cores: os.availableParallelism(),
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    kernel: os.release(),
    node: process.version,
    nix: await first('nix', ['--version']),
    zstd: await first('zstd', ['--version']),
    xz: await first('xz', ['--version']),
    git: { head: head.stdout.trim(), srcOrCratesChanged: dirty.stdout.trim() !== '' },
    loadAverageAtStart: os.loadavg(),
  };
}

/**
 * Which narcache a run used: the addon's sha256 (first 12 hex digits) and
 * when the addon and dist/ were built, since both may be rebuilt between runs.
 */
async function narcacheBuild() {
  const mtime = async (f) => (await fsp.stat(f)).mtime.toISOString();
  return {
    addonSha256: createHash('sha256').update(await fsp.readFile(ADDON)).digest('hex').slice(0, 12),
    addonBuilt: await mtime(ADDON),
    cliBuilt: await mtime(CLI),
  };
}

function log(line = '') {
  process.stdout.write(line + '\n');
}

async function main() {
  const options = parseOptions();
  if (options.help) {
    log(HELP + allRuns({ cores: 2, root: '', files: {}, cacheDir: '', many: { root: '', middle: '' }, huge: { root: '' } }).map((r) => r.id).join(', '));
    return 0;
  }
  if (!fs.existsSync(CLI)) throw new UsageError(`${path.relative(REPO, CLI)} is missing: run npm run build first`);
  const { cores, mode } = options;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const logDir = path.join(options.out, 'logs', stamp);
  // A new cache directory every session: Nix remembers what a binary cache
  // URL held (narinfo disk cache) and must not skip a path it wrote before.
  const cacheDir = path.join(options.out, 'caches', stamp);
  await fsp.mkdir(logDir, { recursive: true });
  const removedAt = Number(await fsp.readFile(path.join(options.out, REMOVED_AT), 'utf8').catch(() => 0));
  const settling = removedAt + REMOVAL_SETTLES_MS - Date.now();
  if (settling > 0) {
    log(`waiting ${(settling / 1000).toFixed(0)} s: the last session removed its caches at ${new Date(removedAt).toISOString()}, and new files skip the inodes they freed until then`);
    await new Promise((resolve) => setTimeout(resolve, settling));
  }
  await fsp.mkdir(cacheDir, { recursive: true });
  const env = nixEnv;

  log(`narcache bench (${mode}), ${cores} cores, logs in ${path.relative(REPO, logDir)}`);
  log('building the closure with nix-build …');
  let t = performance.now();
  const closure = await buildClosure({
    mode,
    workDir: options.out,
    logFile: path.join(logDir, 'nix-build.log'),
    packages: options.packages,
    maxKiB: options.maxKiB,
    smallFiles: options.smallFiles,
    blobBytes: options.blobBytes,
    buildJobs: Math.max(4, cores),
  });
  const buildSeconds = (performance.now() - t) / 1000;
  log(
    `closure ${closure.root}: ${closure.paths.length} paths, NAR ${formatBytes(closure.narSize)} (${closure.narSize} bytes); ` +
      `${closure.packages} Debian packages with ${closure.dependencyEdges} dependency references, ` +
      `${closure.smallFiles} small files, one ${formatBytes(closure.blobBytes)} file; ` +
      `largest path ${formatBytes(closure.largest.narSize)}; nix-build ${buildSeconds.toFixed(1)} s`,
  );

  const files = {
    list: path.join(cacheDir, 'paths'),
    allNar: path.join(cacheDir, 'all.nar'),
    narinfoTails: path.join(cacheDir, 'narinfo-tails'),
  };
  // The synthetic closures are written only if a run selected needs them.
  const stub = { root: '', middle: '' };
  const selected = select(
    allRuns({ cores, root: closure.root, files, cacheDir, many: options.manyPaths ? stub : undefined, huge: options.hugePaths ? stub : undefined }),
    options,
  );
  const synthetic = async (kind, count) => {
    if (!selected.some((r) => r.closure === kind)) return undefined;
    log(`writing and registering the ${kind}-paths closure (${count} synthetic paths) …`);
    const started = performance.now();
    const c = await syntheticClosure(count, { env });
    log(`closure ${c.root}: ${c.paths} paths, NAR ${formatBytes(c.narSize)}; ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return c;
  };
  const many = await synthetic('many', options.manyPaths);
  const huge = await synthetic('huge', options.hugePaths);
  let runs = select(allRuns({ cores, root: closure.root, files, cacheDir, many, huge }), options);
  // A store in memory (as in a test sandbox) stays in memory whatever is dropped: nothing to time cold.
  const leftOut = [];
  const storeFs = fs.statfsSync(path.dirname(closure.root)).type;
  if (runs.some((r) => r.cold) && IN_MEMORY_FILE_SYSTEMS.includes(storeFs)) {
    const why = `${path.dirname(closure.root)} is in memory (tmpfs or ramfs), which no page cache drop empties`;
    leftOut.push({ runs: runs.filter((r) => r.cold).map((r) => r.id), why });
    log(`left out ${leftOut[0].runs.join(', ')}: ${why}`);
    runs = runs.filter((r) => !r.cold);
  }
  if (!runs.length) throw new UsageError('--only/--skip leave no run');
  /** The closure a run works on: its number of paths and NAR bytes. */
  const closureOf = (r) => ({ many, huge })[r.closure] ?? { paths: closure.paths.length, narSize: closure.narSize };
  // On ext4 without a journal (this machine's), a new file never gets the
  // inode of one deleted in the last minutes: each creation walks past those,
  // one lookup each, and a run started right after another's 50,000 files
  // were removed took 2-3 times as long. An output of that many files is
  // set aside instead, and removed with the rest at the end.
  const setAside = path.join(cacheDir, 'set-aside');
  const discard = async (r, dir) => {
    if (closureOf(r).paths < SET_ASIDE_PATHS) return rmrf(dir);
    await fsp.mkdir(setAside, { recursive: true });
    await fsp.rename(dir, path.join(setAside, path.basename(dir)));
  };

  log('preparing (untimed): path lists, narinfo tails, NAR stream …');
  t = performance.now();
  await fsp.writeFile(files.list, closure.paths.join('\n') + '\n');
  if (runs.some((r) => r.tool === 'mkbinarycache')) await writeNarinfoTails(files.narinfoTails, closure);
  const readsNarStream = (r) => ['limit-zstd', 'limit-xz', 'narcache-zstd-one-stream'].includes(r.id);
  const needsNarStream = runs.some(readsNarStream);
  if (needsNarStream) {
    await sh('xargs -n 1 nix-store --dump <"$1" >"$2"', files.list, files.allNar);
    const size = (await fsp.stat(files.allNar)).size;
    if (size !== closure.narSize) throw new Error(`the NAR stream has ${size} bytes, the closure's NarSize totals ${closure.narSize}`);
  }
  const syntheticLists = {};
  for (const [kind, synth] of Object.entries({ many, huge })) {
    if (!synth) continue;
    syntheticLists[kind] = path.join(cacheDir, `paths-${synth.paths}`);
    await fsp.writeFile(syntheticLists[kind], synth.storePaths.join('\n') + '\n');
  }
  // Every pass starts with what it reads in the page cache, and with
  // nothing dirty: a closure read cold made the first of three passes on
  // 25,000 paths twice as slow. Once at the start is not enough: DAMON
  // (here, and on other virtual machines) pages out what was not touched
  // for a minute; the 100,000-path closure, idle for five minutes, took
  // 20 s to read instead of 10, and its run came minutes after the start.
  // The store's database too, which every tool reads the closure from: a
  // third of it was out of memory a minute after the 100,000-path run had
  // read it, which had started with both cores idle for 1.5 s.
  const warm = async (r) => {
    await sh('tar -cf - --files-from "$1" 2>/dev/null | cat >/dev/null', r.closure ? syntheticLists[r.closure] : files.list);
    await sh('cat /nix/var/nix/db/db.sqlite >/dev/null');
    if (readsNarStream(r)) await sh('cat "$1" >/dev/null', files.allNar);
    if (r.source) await sh('tar -cf - -C "$1" . | cat >/dev/null', r.source);
  };
  // Written dirty pages first: only clean ones can be dropped.
  const dropPageCache = async () => {
    await runOk('sync', []);
    try {
      await fsp.writeFile('/proc/sys/vm/drop_caches', '3');
    } catch (e) {
      throw new UsageError(`passes on the many-path closures drop the page cache, which needs root (${e.code}): run as root, or --skip many,huge`);
    }
  };
  log(`prepared in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const results = [];
  const listings = new Map();
  let failed = false;
  let gateway;
  /** One timed pass of `r`; with `suffix`, its output goes beside the first pass's and is removed after. */
  const pass = async (r, suffix) => {
    // The output's name wherever it stands (nix copy has it inside its cache URL).
    const moved = (a) => (suffix && r.output && a.includes(r.output) ? a.replace(r.output, r.output + suffix) : a);
    if (r.setup) await runOk(r.setup[0], r.setup.slice(1).map(moved), { env: r.kind === 's3' ? gateway.env : env });
    // A pass on a many-path closure starts from the same memory whatever ran before, holding
    // just its input: the 100,000-path run that followed twelve 25,000-path passes (600,000
    // files of output) took 30.6 s and 53 CPU s, 4.7 × the 25,000-path run; right after a drop
    // of the page cache, 23.9-25.4 s and 42-44 CPU s. A run with a setup works on what the
    // setup wrote, which stays.
    const drop = r.cold || (r.closure && !r.setup);
    if (drop) await dropPageCache(); // which syncs first
    if (!r.cold) await warm(r);
    if (!drop) await runOk('sync', []);
    const m = await measure(r.argv.map(moved), {
      env: r.kind === 's3' ? gateway.env : env,
      cwd: REPO,
      logFile: path.join(logDir, `${r.id}${suffix ?? ''}.log`),
      stdoutFile: r.stdoutFile && moved(r.stdoutFile),
      captureStdout: r.captureStdout,
      onHeartbeat: (s, busy) => log(`    … ${s.toFixed(0)} s` + (r.sampled ? `, ${busy.toFixed(2)} cores busy lately` : '')),
    });
    if (suffix && r.output) await discard(r, moved(r.output));
    return m;
  };
  for (const [i, r] of runs.entries()) {
    if (r.kind === 's3') {
      // Room for every bucket's NARs (RGW frees deleted data only later).
      const memoryBytes = runs.filter((x) => x.kind === 's3').reduce((sum, x) => sum + 2 * closureOf(x).narSize, 2 ** 29);
      gateway ??= await startGateway({ memoryBytes });
      await gateway.bucket(r.bucket, { anyoneWrites: r.anyoneWrites });
      const named = (a) => a.replace(BUCKET_URL, gateway.url(r.bucket)).replace(BUCKET_HTTP, `${gateway.endpoint}/${r.bucket}`);
      if (r.setup) r.setup = r.setup.map(named);
      r.argv = r.argv.map(named);
    }
    if (r.source && !fs.existsSync(r.source)) {
      log(`building ${path.relative(REPO, r.source)} to copy (untimed) …`);
      await runOk(process.execPath, [CLI, 'build', closure.root, '-o', r.source, '--compression', 'xz', '--jobs', String(cores)], { env });
    }
    log(`[${i + 1}/${runs.length}] ${r.id}: ${r.argv.join(' ')}`);
    const build = r.tool === 'narcache' ? await narcacheBuild() : undefined;
    const m = await pass(r);
    const result = {
      id: r.id,
      tool: r.tool,
      compression: r.compression,
      ...(r.closure ? { closure: r.closure, paths: closureOf(r).paths } : {}),
      ...(r.jobs ? { jobs: r.jobs } : {}),
      ...(build ? { build } : {}),
      command: r.argv.join(' '),
      wallSeconds: m.wallSeconds,
      mbPerSecond: closureOf(r).narSize / 1e6 / m.wallSeconds,
      cpuSeconds: m.cpuSeconds,
      coresBusy: m.cpuSeconds / m.wallSeconds,
      otherCpuSeconds: m.otherCpuSeconds,
      peakRssMiB: m.peakRssMiB,
      diskReadMiB: m.diskReadMiB,
      outputBytes: null,
      passes: [passFigures(m)],
    };
    if (m.code !== 0) {
      const tail = (await fsp.readFile(path.join(logDir, `${r.id}.log`), 'utf8')).trim().split('\n').slice(-5).join('\n      ');
      result.error = `exit ${m.code ?? m.signal}: ${tail}`;
    } else {
      if (r.output) result.outputBytes = await fileBytes(r.output);
      if (r.kind === 'cache') {
        const names = await fsp.readdir(r.output);
        const count = (suffix) => names.filter((f) => f.endsWith(suffix)).length;
        const paths = closureOf(r).paths;
        if (count('.narinfo') !== paths) result.error = `${count('.narinfo')} narinfos for ${paths} paths`;
        if (r.argv.includes('--write-nar-listing') && count('.ls') !== paths) {
          result.error = `${count('.ls')} listings for ${paths} paths`;
        }
      }
      if (r.kind === 's3') {
        const narinfos = (await gateway.keys(r.bucket)).filter((k) => k.endsWith('.narinfo')).length;
        if (narinfos !== closureOf(r).paths) result.error = `${narinfos} narinfos for ${closureOf(r).paths} paths`;
      }
      if (r.tool === 'narcache') result.summary = JSON.parse(m.stdout);
      // NAR files only: the bucket's narinfos and nix-cache-info are not counted.
      if (r.kind === 's3') result.outputBytes = result.summary?.fileBytes ?? null;
      if ((r.tool === 'narcache' && r.kind === 'cache') || r.id === 'nix-copy-none' || r.id === 'nix-copy-xz-parallel') {
        const text = await listing(r.output);
        await fsp.writeFile(path.join(logDir, `${r.id}.sha256`), text);
        listings.set(r.id, text);
      }
    }
    if (r.sampled) {
      const u = utilisation(m.samples, cores);
      if (u) Object.assign(result, { underusedSeconds: u.underusedSeconds, coresBusySlices: u.slices, otherCoresBusySlices: u.othersSlices });
      if (r.tool === 'narcache') result.threads = m.threads;
    }
    // The gateway's daemons use CPU and memory even when idle: not while later runs are timed.
    if (r.kind === 's3' && !runs.slice(i + 1).some((later) => later.kind === 's3')) {
      await gateway.stop();
      gateway = undefined;
    }
    // A failed run's output is kept for diagnosis, and a cache a later run copies until then.
    if (r.output && !options.keep && !result.error && !runs.some((later) => later.source === r.output)) await discard(r, r.output);
    failed ||= !!result.error;
    results.push(result);
    log(
      result.error
        ? `    FAILED: ${result.error}`
        : `    ${result.wallSeconds.toFixed(2)} s, ${result.mbPerSecond.toFixed(1)} MB/s, ` +
            `${result.coresBusy.toFixed(2)} cores busy, peak RSS ${result.peakRssMiB.toFixed(0)} MiB, ` +
            `read from disk ${result.diskReadMiB.toFixed(0)} MiB, ` +
            `output ${result.outputBytes ?? '-'} bytes, other processes ${result.otherCpuSeconds.toFixed(1)} CPU s` +
            (result.coresBusySlices
              ? `\n    cores busy over time, this run: ${sparkline(result.coresBusySlices, cores)}` +
                `\n                    other processes: ${sparkline(result.otherCoresBusySlices, cores)}` +
                `\n    ${result.underusedSeconds.toFixed(1)} s with half a core or more idle`
              : ''),
    );
    // A limit and the runs measured against it alternate, pass after pass,
    // once the last of them has run its first.
    if (r.limitGroup && !runs.slice(i + 1).some((later) => later.limitGroup === r.limitGroup)) {
      const members = runs.filter((m) => m.limitGroup === r.limitGroup).map((m) => [m, results.find((x) => x.id === m.id)]);
      const first = members.reduce((sum, [, res]) => sum + res.wallSeconds, 0);
      if (options.repeat > 1 && members.length > 1 && members.every(([, res]) => !res.error)) {
        if (first > REPEAT_MAX_SECONDS) {
          log(`    ${members.map(([m]) => m.id).join(', ')} took over ${REPEAT_MAX_SECONDS} s together: one pass each`);
        } else {
          for (let k = 2; k <= options.repeat; k++) {
            for (const [run, res] of members) {
              const again = await pass(run, `.again${k}`);
              if (again.code !== 0) {
                res.error = `pass ${k}: exit ${again.code ?? again.signal}`;
                failed = true;
              }
              res.passes.push(passFigures(again));
              log(`    pass ${k} of ${run.id}: ${again.wallSeconds.toFixed(2)} s, ${again.cpuSeconds.toFixed(1)} CPU s, read from disk ${again.diskReadMiB.toFixed(0)} MiB`);
            }
          }
          for (const [, res] of members) {
            Object.assign(res, medianOf(res.passes));
            res.mbPerSecond = closureOf(res).narSize / 1e6 / res.wallSeconds;
            log(`    ${res.id}: median of ${res.passes.length} passes ${res.wallSeconds.toFixed(2)} s (${res.passes.map((p) => p.wallSeconds.toFixed(2)).join(', ')})`);
          }
        }
      }
    }
  }

  await gateway?.stop();

  // Ratios: narcache's wall time over each run's with the same compression.
  const byId = new Map(results.map((r) => [r.id, r]));
  for (const r of results) {
    const ours = byId.get(['narcache', r.closure, r.compression, r.variant].filter(Boolean).join('-'));
    if (r !== ours && ours && !ours.error && !r.error) r.narcacheRatio = ours.wallSeconds / r.wallSeconds;
  }

  // Determinism: narcache --jobs 1 and --jobs 2, same bytes.
  const determinism = COMPRESSIONS.map((c) => {
    const ids = [`narcache-${c}-jobs1`, cores === 2 ? `narcache-${c}` : `narcache-${c}-jobs2`];
    const [a, b] = ids.map((id) => listings.get(id));
    const identical = a && b ? a === b : null;
    for (const id of ids) if (byId.has(id)) byId.get(id).identical = identical;
    return { compression: c, runs: ids, identical };
  });
  // The same nar/ files (names and bytes) in two caches. Nix's parallel xz
  // is no standard narcache must meet, so that comparison is only reported.
  const sameNars = (a, b) => {
    const narLines = (text) => text.split('\n').filter((l) => l.includes(' ./nar/')).join('\n');
    return listings.has(a) && listings.has(b) ? narLines(listings.get(a)) === narLines(listings.get(b)) : null;
  };
  const checks = [
    { what: "narcache's none NAR files are nix copy's, byte for byte", ok: sameNars('narcache-none', 'nix-copy-none') },
    {
      what: 'narcache copy gives the narinfos and NAR files of the cache it copies, byte for byte',
      ok: listings.has('narcache-xz') && listings.has('narcache-xz-copy') ? listings.get('narcache-xz') === listings.get('narcache-xz-copy') : null,
    },
    {
      what: "narcache's xz files are nix copy's with parallel-compression, byte for byte (information)",
      ok: sameNars('narcache-xz', 'nix-copy-xz-parallel'),
      informational: true,
    },
  ];
  failed ||= determinism.some((d) => d.identical === false) || checks.some((c) => c.ok === false && !c.informational);

  const ratio = (a, b) => (byId.get(a)?.wallSeconds && byId.get(b)?.wallSeconds ? byId.get(a).wallSeconds / byId.get(b).wallSeconds : null);
  const target = (what, a, b, limit, strict = false) => {
    const measured = ratio(a, b);
    return { what, measured, limit: `${strict ? '<' : '≤'} ${limit}`, met: measured === null ? null : strict ? measured < limit : measured <= limit };
  };
  const absolute = (what, id, figure, limit) => {
    const r = byId.get(id);
    const measured = r && !r.error ? figure(r) : null;
    return { what, measured, limit: `≤ ${limit}`, met: measured === null ? null : measured <= limit };
  };
  const targets = [
    target('zstd: narcache ÷ zstd -3 limit', 'narcache-zstd', 'limit-zstd', 1.15),
    target('zstd: narcache ÷ nix copy', 'narcache-zstd', 'nix-copy-zstd', 1, true),
    target('zstd: narcache ÷ mkBinaryCache', 'narcache-zstd', 'mkbinarycache-zstd', 1, true),
    target('zstd: narcache --write-nar-listing ÷ narcache (what the listings cost)', 'narcache-zstd-listing', 'narcache-zstd', 1.03),
    {
      ...target('zstd: narcache on the NAR stream as one file ÷ zstd -3 limit (information: what hashing and writing cost)', 'narcache-zstd-one-stream', 'limit-zstd', 1.15),
      informational: true,
    },
    target('xz: narcache ÷ xz -6 limit', 'narcache-xz', 'limit-xz', 1.1),
    target('xz: narcache ÷ nix copy, parallel', 'narcache-xz', 'nix-copy-xz-parallel', 1, true),
    target('none: narcache ÷ read-and-hash limit', 'narcache-none', 'limit-read-hash', 2),
    target('none: narcache ÷ nix copy', 'narcache-none', 'nix-copy-none', 0.5),
    target('xz cache copied: narcache copy ÷ nix copy between two file:// caches (issue 21)', 'narcache-xz-copy', 'nix-copy-xz-copy', 0.1),
    target('many paths, zstd: narcache ÷ nix copy', 'narcache-many-zstd', 'nix-copy-many-zstd', 0.5),
    target('many paths, none: narcache ÷ nix copy', 'narcache-many-none', 'nix-copy-many-none', 0.5),
    target('many paths, zstd, cold page cache: narcache ÷ nix copy', 'narcache-many-zstd-cold', 'nix-copy-many-zstd-cold', 1, true),
    target(`${HUGE_OPEN_FILES} open files, ${options.hugePaths} paths: narcache ÷ narcache on ${options.manyPaths} paths (zstd)`, 'narcache-huge-zstd', 'narcache-many-zstd', 4.5),
    absolute('many paths: narcache re-run, everything present, wall s', 'narcache-many-rerun', (r) => r.wallSeconds, 2),
    target('many paths into a bucket: narcache ÷ nix copy over HTTP', 'narcache-many-s3', 'nix-copy-many-http', 0.5),
    absolute('many paths: narcache re-run into a bucket, everything present, requests', 'narcache-many-s3-rerun', (r) => r.summary.requests, 60),
    ...['narcache-many-zstd', 'narcache-many-none'].map((id) => absolute(`${id}: peak RSS MiB`, id, (r) => r.peakRssMiB, 200)),
    absolute('narcache-huge-zstd: peak RSS MiB', 'narcache-huge-zstd', (r) => r.peakRssMiB, 300),
    ...COMPRESSIONS.map((c) => {
      const r = byId.get(`narcache-${c}`);
      const measured = r && !r.error ? r.peakRssMiB : null;
      return { what: `${c}: narcache peak RSS MiB`, measured, limit: '≤ 300', met: measured === null ? null : measured <= 300 };
    }),
  ];

  log('');
  log(`closure: ${closure.paths.length} paths, NAR ${closure.narSize} bytes (${formatBytes(closure.narSize)}), ${cores} cores, ${mode} mode`);
  log(formatRuns(results));
  log('');
  for (const d of determinism) log(`determinism ${d.compression}: ${d.runs.join(' vs ')}: ${d.identical === null ? 'not run' : d.identical ? 'identical' : 'DIFFERENT'}`);
  for (const c of checks) log(`check: ${c.what}: ${c.ok === null ? 'not run' : c.ok ? 'yes' : 'NO'}`);
  log('');
  log(formatTargets(targets));
  if (mode === 'quick') log('(quick mode: a small closure; the targets are meant for the full run)');
  const builds = new Set(results.filter((r) => r.build).map((r) => r.build.addonSha256));
  if (builds.size > 1) log(`WARNING: narcache was rebuilt during the session (addons ${[...builds].join(', ')}); compare with care`);
  for (const r of results.filter((r) => r.threads)) {
    log(`${r.id} threads (CPU s): ${r.threads.map((t) => `${t.name}×${t.threads} ${t.cpuSeconds.toFixed(1)}`).join(', ')}`);
  }

  const { pathInfos, paths, ...closureSummary } = closure;
  const json = {
    mode,
    date: new Date().toISOString(),
    machine: await machine(),
    closure: { ...closureSummary, paths: paths.length, buildSeconds },
    cores,
    runs: results,
    determinism,
    checks,
    targets,
    leftOut,
  };
  // results.json is the latest session's; the log directory keeps every session's.
  for (const dir of [options.out, logDir]) await fsp.writeFile(path.join(dir, 'results.json'), JSON.stringify(json, null, 2) + '\n');
  await fsp.writeFile(
    path.join(options.out, 'results.svg'),
    svgChart(results, `narcache bench (${mode}): ${closure.paths.length} paths, NAR ${formatBytes(closure.narSize)}, ${cores} cores — wall seconds`),
  );
  log(`\nwrote ${path.join(options.out, 'results.json')} and results.svg`);
  if (!options.keep && !failed) {
    await rmrf(cacheDir);
    await fsp.writeFile(path.join(options.out, REMOVED_AT), `${Date.now()}\n`);
  }
  else log(`kept ${path.relative(REPO, cacheDir)}`);
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`bench: ${e instanceof UsageError ? e.message : e.stack}\n`);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  },
);
