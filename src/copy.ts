import type { Cache } from './cache';
import { forEachDebugInfoLink } from './debug-info';
import { NarcacheError } from './errors';
import { parseHash } from './hash';
import { listingName, MAX_LISTING_BYTES } from './listing';
import { formatNarinfo, parseNarinfo } from './narinfo';
import { parseCacheInfo, type CompanionFile, type NarinfoText } from './publish/destination';
import { cacheAt } from './publish/open';
import { PublishOrder } from './publish/order';
import { runWithBudget } from './schedule';
import { signNarinfo, type SecretKey } from './signing';
import { resolveRoots } from './sources/roots';
import { hashPart } from './store-path';
import { narUrl } from './narinfo';

export interface CopyOptions {
  /** Store paths (or symlinks into the store) whose closures are copied; default: the whole cache. */
  keep?: string[];
  /** Each narinfo copied gains a signature by each key that has not signed it. */
  signKeys?: SecretKey[];
  /** NAR files copied at once (default 4). */
  jobs?: number;
  onProgress?: (progress: CopyProgress) => void;
}

export interface CopyProgress {
  pathsTotal: number;
  pathsDone: number;
  pathsSkipped: number;
  fileBytesTotal: number;
  fileBytesDone: number;
  elapsedSeconds: number;
  /** Set on the event that reports a narinfo just copied. */
  copied?: { path: string; fileSize: number };
}

/** A path that was not copied, and why. */
export interface CopyProblem {
  /** The narinfo at fault in the source, `<hash>.narinfo`. */
  file: string;
  storePath?: string;
  problem: string;
}

export interface CopySummary {
  from: string;
  to: string;
  /** Paths selected in the source. */
  paths: number;
  copied: number;
  /** Paths the destination had already. */
  skipped: number;
  /** NAR files copied, and of those, copied by the storage service itself (bucket to bucket). */
  narFiles: number;
  serverSide: number;
  fileBytes: number;
  problems: CopyProblem[];
  seconds: number;
}

/** A narinfo of the source to copy. */
interface Entry {
  file: string;
  text: string;
  /** Hash parts of the other paths it references. */
  references: string[];
  storePath?: string;
  /** Its URL, as the narinfo gives it. */
  url: string;
  fileSize: number;
  /** A reference is in neither cache: it is never published. */
  blocked?: boolean;
}

const READ_CONCURRENCY = 32;
const DEFAULT_JOBS = 4;
const PROGRESS_INTERVAL_MS = 200;

/**
 * Copies the binary cache at `from` to `to` (each a directory or an `s3://`
 * URL, or a Cache), narinfos and NAR files as they are, never recompressing,
 * with the listings and debug-info links that go with them:
 * each NAR file's size and SHA-256 are checked against its narinfo while it
 * streams (bucket to bucket on one service, the service copies it and only
 * the size is checked). The order is build's: a narinfo is written only
 * after its NAR file and the narinfos of its references, paths the
 * destination has are skipped, and a copy interrupted at any moment leaves
 * the destination sound and resumes when run again. A path that cannot be
 * copied (its NAR file missing or not what its narinfo says) is reported,
 * with the paths that refer to it, and the rest is copied.
 */
export async function copyCache(from: string | Cache, to: string | Cache, options: CopyOptions = {}): Promise<CopySummary> {
  const source = typeof from === 'string' ? cacheAt(from) : from;
  try {
    const dest = typeof to === 'string' ? cacheAt(to) : to;
    try {
      return await copy(source, dest, options);
    } finally {
      if (typeof to === 'string') dest.close();
    }
  } finally {
    if (typeof from === 'string') source.close();
  }
}

async function copy(from: Cache, to: Cache, options: CopyOptions): Promise<CopySummary> {
  const started = performance.now();
  const jobs = options.jobs ?? DEFAULT_JOBS;
  if (!Number.isInteger(jobs) || jobs < 1) throw new NarcacheError(`--jobs must be a positive integer, not ${jobs}`);
  const cacheInfo = await from.readCacheInfo();
  if (cacheInfo === undefined) throw new NarcacheError(`${from.location}: not a binary cache (no nix-cache-info)`);
  const info = parseCacheInfo(cacheInfo);
  const { storeDir } = info;
  // A new cache says what the source says; an existing one need only be for the same store.
  await to.open((await to.readCacheInfo()) === undefined ? info : { storeDir });
  const present = new Set((await to.narinfoFiles()).map(stemOf));
  const problems: CopyProblem[] = [];
  const { entries, skipped } = await select(from, present, options.keep && resolveRoots(options.keep, storeDir).map(hashPart), problems);

  const progress: CopyProgress = {
    pathsTotal: entries.size,
    pathsDone: 0,
    pathsSkipped: skipped,
    fileBytesTotal: [...entries.values()].reduce((sum, e) => sum + e.fileSize, 0),
    fileBytesDone: 0,
    elapsedSeconds: 0,
  };
  const report = (copied?: CopyProgress['copied']) => {
    progress.elapsedSeconds = (performance.now() - started) / 1000;
    options.onProgress?.({ ...progress, ...(copied ? { copied } : {}) });
  };

  // A reference neither among the paths to copy nor in the destination can never be satisfied.
  for (const e of entries.values()) {
    const lost = e.references.find((r) => !entries.has(r) && !present.has(r));
    if (lost === undefined) continue;
    problems.push({ file: e.file, storePath: e.storePath, problem: `its reference ${lost}… has no narinfo in ${from.location}` });
    e.blocked = true;
  }

  // What describes a path besides its narinfo goes with it, before it, as build writes it:
  // its listing, and the debug-info links into its NAR file (a link there already is kept).
  const listings = new Set(await from.files('', '.ls'));
  const links = new Map<string, CompanionFile[]>();
  await forEachDebugInfoLink(from, (file, { archive }, data) => {
    if (!archive.startsWith('../')) return;
    const url = archive.slice('../'.length);
    const into = links.get(url) ?? [];
    into.push({ name: file, data, keepExisting: true });
    links.set(url, into);
  });
  const companionsOf = async (stem: string, e: Entry): Promise<CompanionFile[]> => {
    const listing = listingName(stem);
    return [
      ...(listings.has(listing) ? [{ name: listing, data: await from.readFile(listing, MAX_LISTING_BYTES) }] : []),
      ...(links.get(e.url) ?? []),
    ];
  };

  // Narinfos go in batches as they become ready: their NAR file copied and
  // every reference published or earlier in the batch, which is published
  // in order (a chain of paths whose NAR files are there goes in one batch,
  // with one sync, rather than one batch each). A path that is blocked or
  // whose NAR file fails is never added, so its referrers wait for ever.
  const order = new PublishOrder<Entry>([...entries].map(([path, e]) => ({ path, references: e.references })));
  let publishing = Promise.resolve();
  let failure: unknown;
  let copied = 0;
  const publishReady = async () => {
    const batch = order.take();
    if (!batch.length) return;
    const narinfos: NarinfoText[] = new Array(batch.length);
    await runWithBudget([...batch.keys()], READ_CONCURRENCY, () => 1, async (i) => {
      const [stem, e] = batch[i];
      narinfos[i] = { hashPart: stem, text: signed(e.text, options.signKeys), references: e.references, companions: await companionsOf(stem, e) };
    }, () => false);
    await to.writeNarinfos(narinfos);
    for (const [stem, e] of batch) {
      copied++;
      progress.pathsDone++;
      report({ path: e.storePath!, fileSize: e.fileSize });
      entries.delete(stem);
      e.text = '';
    }
  };

  const narCopies = new Map<string, Promise<boolean>>();
  let fileBytes = 0;
  let serverSide = 0;
  const copyOne = async (e: Entry) => {
    try {
      const throughUs = await copyNarOf(from, to, e, narCopies);
      if (throughUs !== undefined) fileBytes += e.fileSize;
      if (throughUs === false) serverSide++;
      progress.fileBytesDone += e.fileSize;
      if (!e.blocked) {
        order.add(stemOf(e.file), e);
        publishing = publishing.then(publishReady);
        publishing.catch((err: unknown) => {
          failure ??= err;
        });
      }
    } catch (err) {
      if (!(err instanceof NarcacheError)) throw err;
      problems.push({ file: e.file, storePath: e.storePath, problem: err.message });
    }
  };

  const timer = options.onProgress ? setInterval(() => report(), PROGRESS_INTERVAL_MS) : undefined;
  try {
    await runWithBudget(
      referencesFirst(entries),
      jobs,
      () => 1,
      (e) =>
        copyOne(e).catch((err: unknown) => {
          failure ??= err;
        }),
      () => failure !== undefined,
    );
    await publishing;
    if (failure === undefined && copied) await to.flush();
  } finally {
    clearInterval(timer);
  }
  if (failure !== undefined) throw failure;
  // What is left waits, directly or not, for a path that could not be copied.
  const reported = new Set(problems.map((p) => p.file));
  for (const e of entries.values()) {
    if (!reported.has(e.file)) problems.push({ file: e.file, storePath: e.storePath, problem: 'not copied: a path it refers to could not be' });
  }
  report();
  problems.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return {
    from: from.location,
    to: to.location,
    paths: progress.pathsTotal + skipped,
    copied,
    skipped,
    narFiles: narCopies.size,
    serverSide,
    fileBytes,
    problems,
    seconds: (performance.now() - started) / 1000,
  };
}

const stemOf = (file: string) => file.slice(0, -'.narinfo'.length);

/**
 * The narinfos of the source to copy, by hash part: all of them, or with
 * `roots` their closures, read as the references lead (a path the
 * destination has is not followed: its closure is there already).
 */
async function select(
  from: Cache,
  present: Set<string>,
  roots: string[] | undefined,
  problems: CopyProblem[],
): Promise<{ entries: Map<string, Entry>; skipped: number }> {
  const entries = new Map<string, Entry>();
  let skipped = 0;
  const read = async (file: string) => {
    let text: string;
    try {
      text = await from.readNarinfoText(file);
      parseNarinfo(text, file);
    } catch (e) {
      problems.push({ file, problem: (e as Error).message });
      return;
    }
    const n = parseNarinfo(text, file);
    const stem = stemOf(file);
    if (hashPart(n.storePath) !== stem) {
      problems.push({ file, storePath: n.storePath, problem: `is for ${n.storePath}, not a path of that hash` });
      return;
    }
    entries.set(stem, {
      file,
      text,
      references: n.references.map(hashPart).filter((r) => r !== stem),
      storePath: n.storePath,
      url: n.url,
      fileSize: n.fileSize ?? 0,
    });
  };
  if (!roots) {
    const files = await from.narinfoFiles();
    const todo = files.filter((f) => !present.has(stemOf(f)));
    skipped = files.length - todo.length;
    await runWithBudget(todo, READ_CONCURRENCY, () => 1, read, () => false);
    return { entries, skipped };
  }
  const available = new Set((await from.narinfoFiles()).map(stemOf));
  const seen = new Set<string>();
  for (const root of roots) {
    if (!available.has(root) && !present.has(root)) problems.push({ file: `${root}.narinfo`, problem: `is not in ${from.location}` });
  }
  for (let level = roots; level.length; ) {
    const next = level.filter((s) => !seen.has(s) && (present.has(s) || available.has(s)));
    next.forEach((s) => seen.add(s));
    skipped += next.filter((s) => present.has(s)).length;
    await runWithBudget(next.filter((s) => !present.has(s)).map((s) => `${s}.narinfo`), READ_CONCURRENCY, () => 1, read, () => false);
    level = next.flatMap((s) => entries.get(s)?.references ?? []);
  }
  return { entries, skipped };
}

/** The entries, every one after those it refers to (among the entries). Linear. */
function referencesFirst(entries: Map<string, Entry>): Entry[] {
  const order: Entry[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  for (const start of entries.keys()) {
    const stack: [string, number][] = [[start, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [stem, i] = top;
      const e = entries.get(stem)!;
      if (i === 0) {
        if (state.has(stem)) {
          stack.pop();
          continue;
        }
        state.set(stem, 'visiting');
      }
      const next = e.references.slice(i).find((r) => entries.has(r) && !state.has(r));
      if (next !== undefined) {
        top[1] = e.references.indexOf(next) + 1;
        stack.push([next, 0]);
      } else {
        state.set(stem, 'done');
        order.push(e);
        stack.pop();
      }
    }
  }
  return order;
}

/**
 * Copies the NAR file the entry's narinfo names, once per file however many
 * narinfos name it. Resolves to whether it went through this process
 * (false: the service copied it), or undefined if another entry copied it.
 */
async function copyNarOf(from: Cache, to: Cache, e: Entry, copies: Map<string, Promise<boolean>>): Promise<boolean | undefined> {
  const n = parseNarinfo(e.text, e.file);
  const url = narUrl(n.url);
  if (typeof url !== 'string') throw new NarcacheError(`URL ${JSON.stringify(n.url)} ${url.outside}`);
  if (n.fileHash === undefined || n.fileSize === undefined) {
    throw new NarcacheError(`${n.fileHash === undefined ? 'FileHash' : 'FileSize'} is missing, so the NAR file cannot be checked`);
  }
  const expected = { fileHash: parseHash(n.fileHash), fileSize: n.fileSize };
  const known = copies.get(url);
  if (known) {
    await known;
    return undefined;
  }
  const copying = (async () => {
    const file = await from.narFile(url);
    if ('problem' in file) throw new NarcacheError(`NAR file ${url} ${file.problem}`);
    return to.copyNar(url, file, expected);
  })();
  copies.set(url, copying);
  return copying;
}

/** The text with a signature by each key that lacks one, or as it is if none does. */
function signed(text: string, keys: SecretKey[] | undefined): string {
  if (!keys?.length) return text;
  const n = parseNarinfo(text);
  const withSigs = signNarinfo(n, keys);
  return withSigs === n ? text : formatNarinfo(withSigs);
}
