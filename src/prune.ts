import * as fs from 'node:fs/promises';
import type { Cache, CacheFile } from './cache';
import type { Narinfo } from './narinfo';
import { forEachDebugInfoLink } from './debug-info';
import { fileError, NarcacheError } from './errors';
import { listingName } from './listing';
import { withCache } from './publish/open';
import { runWithBudget } from './schedule';
import { loadClosure, type ClosureSource } from './sources/load';
import { resolveRoots } from './sources/roots';
import { storeDirOf } from './publish/destination';
import { DEFAULT_STORE_DIR, hashPart } from './store-path';

export interface PruneOptions {
  /** Store paths (or symlinks into the store) whose closures stay in the cache. */
  keep?: string[];
  /** Files of store paths to keep, one a line (`-` for standard input). */
  keepFrom?: string[];
  /**
   * A closure source, as for build (not `nix` nor `scan`): every path it
   * gives stays, with `keep` as its roots if given.
   */
  source?: ClosureSource;
  /** Prune even if a path to keep is not in the cache (by default nothing is removed then). */
  ignoreMissing?: boolean;
  /**
   * NAR files that no narinfo named, and temporary files, younger than this
   * are left alone (default 3600): a writer that holds no lock (Nix, a
   * publish to a bucket) may still be about to name them.
   */
  graceSeconds?: number;
  /** Report what would go, remove nothing. */
  dryRun?: boolean;
  onProgress?: (progress: PruneProgress) => void;
  /** Called for each file removed (or, in a dry run, that would be). */
  onRemove?: (removed: PruneRemoval) => void;
  /** Called if prune has to wait for builds writing into the cache (a directory) to end. */
  onWait?: () => void;
}

export interface PruneProgress {
  narinfosTotal: number;
  narinfosRead: number;
  /** Files to remove, once known, and removed so far. */
  toRemove: number;
  removed: number;
  elapsedSeconds: number;
}

export interface PruneRemoval {
  /** `listing`: a narinfo's `<hash>.ls`; `debug-info`: a `debuginfo/` link into a NAR file removed. */
  kind: 'narinfo' | 'nar' | 'listing' | 'debug-info' | 'temporary';
  /** Relative to the cache. */
  file: string;
  /** The store path a narinfo was for, when it could be read. */
  storePath?: string;
  /** Bytes freed (for a narinfo: its NAR file's are counted with the file). */
  size: number;
}

export interface PruneSummary {
  cache: string;
  dryRun: boolean;
  /** Narinfos before pruning. */
  narinfos: number;
  /** Narinfos kept: the closure of the paths to keep, and any published meanwhile with theirs. */
  kept: number;
  removedNarinfos: number;
  removedNarFiles: number;
  /** NAR listings of the narinfos removed, and debug-info links into the NAR files removed. */
  removedListings: number;
  removedDebugInfoLinks: number;
  removedTemporary: number;
  /** Bytes of the NAR files and temporary files removed. */
  freedBytes: number;
  /** Paths to keep that the cache did not have (only with ignoreMissing). */
  missing: string[];
  seconds: number;
}

/** One narinfo of the cache: what prune needs to know of it. */
interface Entry {
  file: string;
  /** Unset if the narinfo could not be read. */
  storePath?: string;
  url?: string;
  /** Hash parts of the other paths it references. */
  references: string[];
  kept: boolean;
}

const READ_CONCURRENCY = 32;
// Narinfos read and parsed together where the cache reads many at once.
const NARINFOS_AT_ONCE = 2000;
const DEFAULT_GRACE_SECONDS = 3600;
const PROGRESS_INTERVAL_MS = 200;

/**
 * Removes from the cache at `location` (a directory or an `s3://` URL)
 * every narinfo outside the closure of the paths to keep, then every NAR
 * file no remaining narinfo names, then temporary files and unfinished
 * uploads older than the grace age. The cache stays closed under references
 * at every moment: a narinfo goes only after every narinfo that refers to
 * it, and a NAR file only after every narinfo that names it. In a
 * directory, prune holds the cache's lock exclusively, so it waits for
 * builds and copies into it to end and they wait for it (see
 * lockCacheDirectory).
 */
export function pruneCache(location: string | Cache, options: PruneOptions): Promise<PruneSummary> {
  return withCache(location, (cache) => prune(cache, options));
}

async function prune(cache: Cache, options: PruneOptions): Promise<PruneSummary> {
  const started = performance.now();
  const dryRun = options.dryRun ?? false;
  const graceMs = (options.graceSeconds ?? DEFAULT_GRACE_SECONDS) * 1000;
  if (!(graceMs >= 0)) throw new NarcacheError(`the grace age must be a number of seconds ≥ 0, not ${options.graceSeconds}`);
  const cacheInfo = await cache.readCacheInfo();
  if (cacheInfo === undefined) throw new NarcacheError(`${cache.location}: not a binary cache (no nix-cache-info)`);
  const storeDir = storeDirOf(cacheInfo) ?? DEFAULT_STORE_DIR;
  const roots = await rootsToKeep(options, storeDir);
  if (!roots.length) throw new NarcacheError('nothing to keep given: name the paths to keep (--keep, --keep-from or a closure source)');

  const release = dryRun ? () => undefined : await cache.lock('exclusive', options.onWait);
  const progress: PruneProgress = { narinfosTotal: 0, narinfosRead: 0, toRemove: 0, removed: 0, elapsedSeconds: 0 };
  const report = () => {
    progress.elapsedSeconds = (performance.now() - started) / 1000;
    options.onProgress?.({ ...progress });
  };
  const timer = options.onProgress ? setInterval(report, PROGRESS_INTERVAL_MS) : undefined;
  try {
    const entries = new Map<string, Entry>();
    const files = await cache.narinfoFiles();
    progress.narinfosTotal = files.length;
    await readEntries(cache, files, entries, () => progress.narinfosRead++);

    const missing = roots.filter((r) => entries.get(hashPart(r))?.storePath !== r);
    if (missing.length && !options.ignoreMissing) {
      throw new NarcacheError(
        `${missing[0]} is not in ${cache.location}${missing.length > 1 ? ` (nor are ${missing.length - 1} other paths to keep)` : ''}: ` +
          'nothing was removed (pass --ignore-missing to prune anyway)',
      );
    }
    keepClosure(entries, roots.map(hashPart));

    const removal = { narinfos: 0, narFiles: 0, listings: 0, links: 0, temporary: 0, bytes: 0 };
    const removed = (r: PruneRemoval) => {
      removal.bytes += r.size;
      progress.removed++;
      options.onRemove?.(r);
    };
    // Narinfos published since the listing are kept, with what they refer to.
    if (!dryRun) await keepNewcomers(cache, entries);
    const doomed = [...entries.values()].filter((e) => !e.kept);
    // NAR files the removed narinfos named go whatever their age; the grace is for the unnamed.
    const freed = new Set<string>();
    progress.toRemove = doomed.length;
    // A wave is removed only once the one before is gone: a reader, or a SIGKILL, never
    // finds a narinfo whose reference is gone. Across a power loss the order holds too on
    // the file systems that journal metadata in order (ext4, xfs, btrfs), which commit
    // completed removals as a prefix; a sync per wave would cost a journal commit per
    // level of the graph (a chain of 12,500 levels: 22 s of 36).
    for (const wave of referrersFirst(doomed)) {
      if (!dryRun) await cache.remove(wave.map((e) => e.file));
      for (const e of wave) {
        entries.delete(e.file.slice(0, -'.narinfo'.length));
        if (e.url !== undefined) freed.add(e.url);
        removal.narinfos++;
        removed({ kind: 'narinfo', file: e.file, storePath: e.storePath, size: 0 });
      }
    }

    // A listing describes its narinfo's path, and is optional: it goes once the narinfo has.
    const listings = new Set(await cache.files('', '.ls'));
    const staleListings = doomed.map((e) => listingName(e.file.slice(0, -'.narinfo'.length))).filter((l) => listings.has(l));
    progress.toRemove += staleListings.length;
    if (!dryRun) await cache.remove(staleListings);
    for (const file of staleListings) {
      removal.listings++;
      removed({ kind: 'listing', file, size: 0 });
    }

    if (!dryRun) await keepNewcomers(cache, entries);
    const named = new Set<string>();
    for (const e of entries.values()) if (e.url !== undefined) named.add(e.url);
    const now = Date.now();
    const old = (f: CacheFile) => now - f.modified >= graceMs;
    const narFiles = (await cache.narFiles()).filter((f) => !named.has(f.file) && (freed.has(f.file) || old(f)));
    const temporary = (await cache.temporaryFiles()).filter(old);
    // Links into a NAR file go before it, so that no link ever points to a missing file.
    const links = await linksInto(cache, new Set(narFiles.map((f) => f.file)));
    progress.toRemove += links.length + narFiles.length + temporary.length;
    if (!dryRun) await cache.remove(links);
    for (const file of links) {
      removal.links++;
      removed({ kind: 'debug-info', file, size: 0 });
    }
    if (!dryRun) await cache.remove(narFiles);
    for (const f of narFiles) {
      removal.narFiles++;
      removed({ kind: 'nar', file: f.file, size: f.size });
    }
    if (!dryRun) await cache.remove(temporary);
    for (const f of temporary) {
      removal.temporary++;
      removed({ kind: 'temporary', file: f.file, size: f.size });
    }
    if (!dryRun) await cache.flush();
    report();
    return {
      cache: cache.location,
      dryRun,
      narinfos: files.length,
      kept: entries.size,
      removedNarinfos: removal.narinfos,
      removedNarFiles: removal.narFiles,
      removedListings: removal.listings,
      removedDebugInfoLinks: removal.links,
      removedTemporary: removal.temporary,
      freedBytes: removal.bytes,
      missing,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    clearInterval(timer);
    release();
  }
}

/**
 * The debug-info links (`debuginfo/<build-id>.debug`) whose archive is one
 * of `narFiles`; one that does not parse is not prune's to judge (verify
 * reports it), and stays.
 */
async function linksInto(cache: Cache, narFiles: Set<string>): Promise<string[]> {
  if (!narFiles.size) return [];
  const found: string[] = [];
  await forEachDebugInfoLink(cache, (file, { archive }) => {
    if (archive.startsWith('../') && narFiles.has(archive.slice(3))) found.push(file);
  });
  return found.sort();
}

/** The store paths whose closures are kept, from every option that names some. */
async function rootsToKeep(options: PruneOptions, storeDir: string): Promise<string[]> {
  const named = [...(options.keep ?? [])];
  for (const file of options.keepFrom ?? []) {
    const text = file === '-' ? await readStdin() : await fs.readFile(file, 'utf8').catch((e: unknown) => {
      throw fileError(file, e);
    });
    named.push(...text.split('\n').map((l) => l.trim()).filter(Boolean));
  }
  const roots = new Set(resolveRoots(named, storeDir));
  if (options.source) {
    const { kind } = options.source;
    if (kind === 'local' || kind === 'nix' || kind === 'scan') throw new NarcacheError(`prune takes its closure from the cache, not from ${kind}`);
    const closure = await loadClosure(options.source, [...roots], { storeDir });
    for (const info of closure.paths) roots.add(info.path);
  }
  return [...roots];
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads the narinfos `files` into `entries`, by hash part; one that cannot be read is an entry without a store path. */
async function readEntries(cache: Cache, files: string[], entries: Map<string, Entry>, onRead = () => {}): Promise<Entry[]> {
  const read: Entry[] = [];
  const add = (file: string, n: Narinfo | undefined) => {
    const stem = file.slice(0, -'.narinfo'.length);
    const entry: Entry = n
      ? {
          file,
          storePath: detached(n.storePath),
          url: detached(n.url),
          references: n.references.map((r) => detached(hashPart(r))).filter((r) => r !== stem),
          kept: false,
        }
      : { file, references: [], kept: false };
    entries.set(stem, entry);
    read.push(entry);
    onRead();
  };
  const { readNarinfos } = cache;
  if (!readNarinfos) {
    await runWithBudget(files, READ_CONCURRENCY, () => 1, async (file) => add(file, await cache.readNarinfo(file).catch(() => undefined)), () => false);
    return read;
  }
  // A slice at a time: only its parsed narinfos are held at once.
  for (let start = 0; start < files.length; start += NARINFOS_AT_ONCE) {
    const slice = files.slice(start, start + NARINFOS_AT_ONCE);
    const narinfos = await readNarinfos.call(cache, slice);
    slice.forEach((file, i) => add(file, narinfos[i] instanceof Error ? undefined : (narinfos[i] as Narinfo)));
  }
  return read;
}

/**
 * A copy of `s` that holds nothing else: V8 keeps a slice of a string (a field of a
 * narinfo) as a view of the whole text, so that every entry kept its narinfo, 2 KiB a
 * path at 100,000 paths.
 */
function detached(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}

/**
 * Marks the entries of `stems` and everything they reach as kept. A kept
 * narinfo that cannot be read stops prune: what it refers to is unknown.
 */
function keepClosure(entries: Map<string, Entry>, stems: string[]): void {
  const queue = [...stems];
  while (queue.length) {
    const entry = entries.get(queue.pop()!);
    if (!entry || entry.kept) continue;
    if (entry.storePath === undefined) {
      throw new NarcacheError(`${entry.file} is to be kept but cannot be read, so what it refers to is unknown: nothing was removed`);
    }
    entry.kept = true;
    queue.push(...entry.references);
  }
}

/** Reads the narinfos that appeared since `entries` were read, and keeps them and their closures. */
async function keepNewcomers(cache: Cache, entries: Map<string, Entry>): Promise<void> {
  const files = (await cache.narinfoFiles()).filter((f) => !entries.has(f.slice(0, -'.narinfo'.length)));
  const newcomers = await readEntries(cache, files, entries);
  keepClosure(entries, newcomers.filter((e) => e.storePath !== undefined).map((e) => e.file.slice(0, -'.narinfo'.length)));
}

/**
 * The entries in waves: each wave holds those that no entry of a later
 * wave refers to, so removing wave after wave never leaves a narinfo whose
 * reference is gone. Linear in the entries and their references.
 */
function referrersFirst(doomed: Entry[]): Entry[][] {
  const stems = new Map(doomed.map((e) => [e.file.slice(0, -'.narinfo'.length), e]));
  const referrers = new Map<Entry, number>(doomed.map((e) => [e, 0]));
  for (const e of doomed) for (const r of e.references) {
    const target = stems.get(r);
    if (target) referrers.set(target, referrers.get(target)! + 1);
  }
  const waves: Entry[][] = [];
  let wave = doomed.filter((e) => referrers.get(e) === 0);
  while (wave.length) {
    waves.push(wave);
    const next: Entry[] = [];
    for (const e of wave) for (const r of e.references) {
      const target = stems.get(r);
      if (!target) continue;
      const left = referrers.get(target)! - 1;
      referrers.set(target, left);
      if (left === 0) next.push(target);
    }
    wave = next;
  }
  return waves;
}
