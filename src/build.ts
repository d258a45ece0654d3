import * as os from 'node:os';
import * as path from 'node:path';
import type { Closure, PathInfo } from './closure';
import { InterruptedError, NarcacheError } from './errors';
import { CancelToken, compressionChunkSize, packProgress, type PackResult } from './native';
import { runWithBudget, threadsForPath } from './schedule';
import { formatNarinfo, narinfoFor } from './narinfo';
import type { Compression } from './pack';
import { plan } from './plan';
import { destinationAt } from './publish/open';
import { PublishOrder } from './publish/order';
import { signNarinfo, type SecretKey } from './signing';
import type { CompanionFile, Destination } from './publish/destination';
import { debugInfoLink } from './debug-info';
import { listingName } from './listing';
import { loadClosure, type ClosureSource } from './sources/load';
import { DEFAULT_STORE_DIR, hashPart } from './store-path';

export interface WriteOptions {
  compression?: Compression;
  level?: number;
  /**
   * Threads for packing (default: the CPU count): that many paths at once
   * (twice as many below 1 MiB), or fewer when a large path uses several
   * compressor threads.
   */
  jobs?: number;
  /** Where the store's files are, if not at the closure's store directory. */
  storeRoot?: string;
  /** Each narinfo written carries one signature per key, besides those the store holds. */
  signKeys?: SecretKey[];
  /** Write `<hash>.ls`, the NAR's listing, beside each narinfo written (Nix's `write-nar-listing`). */
  writeNarListing?: boolean;
  /** Write `debuginfo/<build-id>.debug` links to the debug-info files of the paths written (Nix's `index-debug-info`). */
  indexDebugInfo?: boolean;
  /** `Priority:` of a new cache's `nix-cache-info`; an existing cache must already say so. */
  priority?: number;
  /** `WantMassQuery: 1` in a new cache's `nix-cache-info`; an existing cache must already say so. */
  wantMassQuery?: boolean;
  onProgress?: (progress: BuildProgress) => void;
  /**
   * Aborting stops the build cleanly: packing in progress is abandoned
   * (its temporary files removed), no further narinfo is written, and the
   * promise rejects with an {@link InterruptedError}.
   */
  signal?: AbortSignal;
}

export interface BuildOptions extends WriteOptions {
  /**
   * Store paths, symlinks into the store such as `./result`, or paths below
   * `storeRoot`; may be empty with a file source, which then gives the closure whole.
   */
  paths: string[];
  /** The cache: a directory, or an `s3://BUCKET[/PREFIX]?…` URL. */
  dest: string;
  /** The logical store directory written into narinfos (default `/nix/store`). */
  storeDir?: string;
  /** Where the closure's metadata comes from (default: the local store's database, or the Nix command line). */
  source?: ClosureSource;
}

export interface BuildProgress {
  pathsTotal: number;
  pathsDone: number;
  pathsSkipped: number;
  narBytesTotal: number;
  narBytesDone: number;
  fileBytesDone: number;
  elapsedSeconds: number;
  /** Set on the event that reports a narinfo just written. */
  written?: { path: string; narSize: number; fileSize: number };
}

export interface BuildSummary {
  /** Paths in the closure. */
  paths: number;
  written: number;
  /** Of those written, paths whose narinfo was there but broken (unreadable, or its NAR file missing or short). */
  replaced: number;
  skipped: number;
  narBytes: number;
  fileBytes: number;
  compression: Compression;
  /** `<hash>.ls` files written. */
  listings: number;
  /** Debug-info files found in the paths written, each linked from `debuginfo/` unless a link was there. */
  debugInfo: number;
  seconds: number;
  /** Requests sent to the destination, for a bucket (S3). */
  requests?: number;
}

const PROGRESS_INTERVAL_MS = 200;
/**
 * Packing a path smaller than this is mostly system calls and the hand-over
 * of its result to the JS thread, during which its thread would idle: two
 * such paths (or groups of them, see GROUP_PATHS) run at once per thread
 * (25,000 small paths on 2 cores, one path a call: 6.9 s instead of 8.9 s).
 */
const SMALL_NAR = 1 << 20;
const SLOTS_PER_THREAD = 2;
// Consecutive small paths go this many to a call into the Rust core, or fewer NAR bytes
// than SMALL_NAR, where the destination packs many at once (writeNars).
const GROUP_PATHS = 32;
/**
 * Narinfos whose NAR is written that may wait to be published (about
 * 1 KiB each): beyond, packing waits until publishing catches up, so that a
 * disk whose syncs take seconds, or a slow bucket, cannot make them pile up
 * by the tens of thousands.
 */
export const MAX_UNPUBLISHED = 2048;

/**
 * The paths to pack, in order, in groups: each path of SMALL_NAR or more
 * alone; those below it, with `grouping`, in runs of consecutive ones.
 */
function groupsOf(todo: PathInfo[], grouping: boolean): PathInfo[][] {
  const groups: PathInfo[][] = [];
  let group: PathInfo[] = [];
  let bytes = 0;
  for (const info of todo) {
    const small = grouping && info.narSize < SMALL_NAR;
    if (group.length && (!small || group.length === GROUP_PATHS || bytes + info.narSize > SMALL_NAR)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    if (!small) {
      groups.push([info]);
      continue;
    }
    group.push(info);
    bytes += info.narSize;
  }
  if (group.length) groups.push(group);
  return groups;
}

/** Builds (or completes) a flat-file binary cache of the closure of `paths`. */
export async function buildCache(options: BuildOptions): Promise<BuildSummary> {
  // The destination first: a bad URL is told before the closure is computed.
  const dest = destinationAt(options.dest);
  try {
    const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
    const closure = await loadClosure(options.source ?? { kind: 'local' }, options.paths, { ...options, storeDir });
    return await writeCache(closure, dest, options);
  } finally {
    dest.close();
  }
}

/**
 * Writes every path of `closure` that `dest` lacks: NARs packed in
 * parallel, largest first, large ones on several threads; each narinfo published only once its NAR is
 * complete and the narinfos of all its references are there, so that the
 * narinfos present always form a closed set, even after an interruption.
 */
export async function writeCache(closure: Closure, dest: Destination, options: WriteOptions = {}): Promise<BuildSummary> {
  const started = performance.now();
  const compression = options.compression ?? 'zstd';
  const jobs = options.jobs ?? os.availableParallelism();
  if (!Number.isInteger(jobs) || jobs < 1) throw new NarcacheError(`--jobs must be a positive integer, not ${jobs}`);
  const storeRoot = options.storeRoot ?? closure.storeDir;
  const requestsBefore = dest.requests;
  const { priority } = options;
  if (priority !== undefined && !Number.isInteger(priority)) throw new NarcacheError(`--priority must be an integer, not ${priority}`);

  await dest.open({ storeDir: closure.storeDir, priority, wantMassQuery: options.wantMassQuery }, storeRoot);
  const sourceOf = (info: PathInfo) => path.join(storeRoot, path.posix.relative(closure.storeDir, info.path));
  const { todo, present, broken } = await plan(closure, dest, sourceOf);

  type Waiting = { info: PathInfo; text: string; fileSize: number; companions: CompanionFile[] };
  const order = new PublishOrder<Waiting>(todo);
  const baseline = packProgress();
  const progress: BuildProgress = {
    pathsTotal: todo.length,
    pathsDone: 0,
    pathsSkipped: present.size,
    narBytesTotal: todo.reduce((sum, p) => sum + p.narSize, 0),
    narBytesDone: 0,
    fileBytesDone: 0,
    elapsedSeconds: 0,
  };
  let fileBytes = 0;
  let listings = 0;
  let debugInfo = 0;
  const report = (written?: BuildProgress['written']) => {
    const now = packProgress();
    progress.narBytesDone = now.narBytes - baseline.narBytes;
    progress.fileBytesDone = now.fileBytes - baseline.fileBytes;
    progress.elapsedSeconds = (performance.now() - started) / 1000;
    options.onProgress?.({ ...progress, ...(written ? { written } : {}) });
  };

  // Publishing runs as one chain of batches: each takes every narinfo whose
  // references are published or earlier in the batch, in that order, so
  // the narinfos present always form a closed set. While one batch waits
  // for the disk, the paths packed meanwhile gather into the next.
  let publishing = Promise.resolve();
  const publishReady = async () => {
    if (options.signal?.aborted) return;
    const batch = order.take();
    if (!batch.length) return;
    await dest.writeNarinfos(
      batch.map(([storePath, entry]) => ({
        hashPart: hashPart(storePath),
        text: entry.text,
        references: entry.info.references.filter((r) => r !== storePath).map(hashPart),
        companions: entry.companions,
      })),
    );
    for (const [storePath, entry] of batch) {
      progress.pathsDone++;
      report({ path: storePath, narSize: entry.info.narSize, fileSize: entry.fileSize });
    }
  };

  let failure: unknown;
  const cancel = new CancelToken();
  const onAbort = () => cancel.cancel();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const stopped = () => failure !== undefined || options.signal?.aborted === true;
  const chunk = compressionChunkSize(compression);
  // NAR bytes of the paths not yet packed, those being packed included.
  let unpacked = progress.narBytesTotal;
  // Counted in halves of a thread: a group of small paths takes one, so two run per thread (see SMALL_NAR).
  const slotsOf = (group: PathInfo[]) =>
    group[0].narSize < SMALL_NAR ? 1 : SLOTS_PER_THREAD * threadsForPath(group[0].narSize, unpacked, jobs, chunk);
  const toPack = (info: PathInfo, threads: number) => ({
    source: sourceOf(info),
    options: {
      compression,
      level: options.level,
      threads,
      expected: { narHash: info.narHash, narSize: info.narSize },
      cancel,
      listing: options.writeNarListing,
      debugInfo: options.indexDebugInfo,
    },
  });
  const narWritten = (info: PathInfo, file: PackResult) => {
    fileBytes += file.fileSize;
    if (file.listing) listings++;
    debugInfo += file.debugInfo?.length ?? 0;
    const companions = [
      ...(file.listing ? [{ name: listingName(hashPart(info.path)), data: file.listing }] : []),
      ...(file.debugInfo ?? []).map((member) => debugInfoLink(member, file.url)),
    ];
    const text = formatNarinfo(signNarinfo(narinfoFor(info, file), options.signKeys ?? []));
    order.add(info.path, { info, text, fileSize: file.fileSize, companions });
  };
  const packGroup = async (group: PathInfo[], slots: number) => {
    const threads = Math.max(1, Math.floor(slots / SLOTS_PER_THREAD));
    try {
      // Only while publishing can take some: what waits for paths not yet
      // packed must not stop their packing.
      while (order.waitingCount >= MAX_UNPUBLISHED && order.anyReady && !stopped()) await (publishing = publishing.then(publishReady));
      const sources = group.map((info) => toPack(info, threads));
      const files =
        dest.writeNars && group.length > 1
          ? await dest.writeNars(sources)
          : [await dest.writeNar(sources[0].source, sources[0].options)];
      group.forEach((info, i) => narWritten(info, files[i]));
      // Not awaited: the group's threads go back to the budget while its
      // narinfos wait for those of their references. A failed batch ends
      // publishing (and, through `stopped`, packing).
      publishing = publishing.then(publishReady);
      publishing.catch((e: unknown) => {
        failure ??= e;
      });
    } catch (e) {
      failure ??= e;
    } finally {
      for (const info of group) unpacked -= info.narSize;
    }
  };
  const timer = options.onProgress ? setInterval(() => report(), PROGRESS_INTERVAL_MS) : undefined;
  try {
    await runWithBudget(groupsOf(todo, dest.writeNars !== undefined), jobs * SLOTS_PER_THREAD, slotsOf, packGroup, stopped);
    await publishing;
    if (!stopped() && progress.pathsDone) await dest.flush();
  } finally {
    clearInterval(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
  if (options.signal?.aborted) throw new InterruptedError(progress.pathsDone);
  if (failure !== undefined) throw failure;
  report();
  return {
    paths: closure.paths.length,
    written: progress.pathsDone,
    replaced: broken.size,
    skipped: present.size,
    narBytes: progress.narBytesTotal,
    fileBytes,
    compression,
    listings,
    debugInfo,
    seconds: (performance.now() - started) / 1000,
    ...(requestsBefore !== undefined ? { requests: dest.requests! - requestsBefore } : {}),
  };
}
