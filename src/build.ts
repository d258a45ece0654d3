import * as os from 'node:os';
import * as path from 'node:path';
import type { Closure, PathInfo } from './closure';
import { NarcacheError } from './errors';
import { compressionChunkSize, packProgress } from './native';
import { runWithBudget } from './schedule';
import { formatNarinfo, narinfoFor } from './narinfo';
import { packPath, type Compression } from './pack';
import { plan } from './plan';
import { DirectoryDestination } from './publish/directory';
import { signNarinfo, type SecretKey } from './signing';
import type { Destination } from './publish/destination';
import { closureFromNix } from './sources/nix';
import { DEFAULT_STORE_DIR, hashPart } from './store-path';

export interface WriteOptions {
  compression?: Compression;
  level?: number;
  /**
   * Threads for packing (default: the CPU count): that many paths at once,
   * or fewer when a large path uses several compressor threads.
   */
  jobs?: number;
  /** Where the store's files are, if not at the closure's store directory. */
  storeRoot?: string;
  /** Each narinfo written carries one signature per key, besides those the store holds. */
  signKeys?: SecretKey[];
  onProgress?: (progress: BuildProgress) => void;
}

export interface BuildOptions extends WriteOptions {
  /** Store paths, or symlinks into the store such as `./result`. */
  paths: string[];
  /** The cache directory. */
  dest: string;
  storeDir?: string;
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
  skipped: number;
  narBytes: number;
  fileBytes: number;
  compression: Compression;
  seconds: number;
}

const PROGRESS_INTERVAL_MS = 200;

/** Builds (or completes) a flat-file binary cache of the closure of `paths`. */
export async function buildCache(options: BuildOptions): Promise<BuildSummary> {
  const closure = await closureFromNix(options.paths, options.storeDir ?? DEFAULT_STORE_DIR);
  return writeCache(closure, new DirectoryDestination(options.dest), options);
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

  await dest.open(closure.storeDir);
  const { todo, present } = await plan(closure, dest);

  const published = new Set(present);
  const waiting = new Map<string, { info: PathInfo; text: string; fileSize: number }>();
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
  const report = (written?: BuildProgress['written']) => {
    const now = packProgress();
    progress.narBytesDone = now.narBytes - baseline.narBytes;
    progress.fileBytesDone = now.fileBytes - baseline.fileBytes;
    progress.elapsedSeconds = (performance.now() - started) / 1000;
    options.onProgress?.({ ...progress, ...(written ? { written } : {}) });
  };

  // Publishing runs as one chain, so narinfos are written one at a time in
  // an order where every reference comes first.
  let publishing = Promise.resolve();
  const publishReady = async () => {
    for (let progressed = true; progressed; ) {
      progressed = false;
      for (const [storePath, entry] of waiting) {
        if (!entry.info.references.every((r) => r === storePath || published.has(r))) continue;
        await dest.writeNarinfo(hashPart(storePath), entry.text);
        waiting.delete(storePath);
        published.add(storePath);
        progressed = true;
        progress.pathsDone++;
        report({ path: storePath, narSize: entry.info.narSize, fileSize: entry.fileSize });
      }
    }
  };

  let failure: unknown;
  const chunk = compressionChunkSize(compression);
  // A path can keep as many compressor threads busy as it has chunks.
  const weightOf = (info: PathInfo) => (chunk ? Math.ceil(info.narSize / chunk) : 1);
  const packOne = async (info: PathInfo, threads: number) => {
    try {
      const source = path.join(storeRoot, path.posix.relative(closure.storeDir, info.path));
      const file = await packPath(source, dest.packRoot, {
        compression,
        level: options.level,
        threads,
        expected: { narHash: info.narHash, narSize: info.narSize },
      });
      fileBytes += file.fileSize;
      waiting.set(info.path, { info, text: formatNarinfo(signNarinfo(narinfoFor(info, file), options.signKeys ?? [])), fileSize: file.fileSize });
      publishing = publishing.then(publishReady);
      await publishing;
    } catch (e) {
      failure ??= e;
    }
  };
  const timer = options.onProgress ? setInterval(() => report(), PROGRESS_INTERVAL_MS) : undefined;
  try {
    await runWithBudget(todo, jobs, weightOf, packOne, () => failure !== undefined);
  } finally {
    clearInterval(timer);
  }
  if (failure !== undefined) throw failure;
  report();
  return {
    paths: closure.paths.length,
    written: progress.pathsDone,
    skipped: present.size,
    narBytes: progress.narBytesTotal,
    fileBytes,
    compression,
    seconds: (performance.now() - started) / 1000,
  };
}
