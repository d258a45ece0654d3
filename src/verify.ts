import * as os from 'node:os';
import type { Cache, NarFile } from './cache';
import { NarcacheError } from './errors';
import { parseHash } from './hash';
import { DEBUG_INFO_DIR, forEachDebugInfoLink } from './debug-info';
import { listingMismatch, listingName, MAX_LISTING_BYTES } from './listing';
import { narCompressionSupport, verifyProgress, type IndexOptions, type NarCheck } from './native';
import { narUrl, type Narinfo } from './narinfo';
import { storeDirOf } from './publish/destination';
import { withCache } from './publish/open';
import { runWithBudget } from './schedule';
import { fingerprint, parseSignature, verifySignature, type PublicKey } from './signing';
import { DEFAULT_STORE_DIR, hashPart, isStorePath } from './store-path';

export interface VerifyOptions {
  /**
   * Keys of which at least one must have made a valid signature of every
   * narinfo. Without keys, signatures are only checked to be well formed.
   */
  trustedPublicKeys?: PublicKey[];
  /** NAR files checked at once (default: the CPU count). */
  jobs?: number;
  onProgress?: (progress: VerifyProgress) => void;
}

export interface VerifyProgress {
  narinfosTotal: number;
  narinfosDone: number;
  /** Compressed bytes of the NAR files the narinfos name, as their FileSize says. */
  fileBytesTotal: number;
  fileBytesDone: number;
  problems: number;
  elapsedSeconds: number;
}

/** One thing wrong with a cache. */
export interface VerifyProblem {
  /** The file at fault, relative to the cache: `<hash>.narinfo`, `<hash>.ls`, `debuginfo/<id>.debug`, `nix-cache-info`. */
  file: string;
  /** The store path its narinfo describes, when it could be read. */
  storePath?: string;
  problem: string;
  /**
   * Set when the NAR file is at fault (missing, unreadable, not what the
   * narinfo says, or not named as it should be), not the narinfo's own
   * statements: writing the NAR again from a store repairs it.
   */
  nar?: true;
}

/** A NAR file compressed in a way Nix writes but narcache does not read: neither sound nor broken. */
export interface UncheckedNar {
  /** The narinfo that names it. */
  file: string;
  storePath: string;
  url: string;
  compression: string;
}

export interface VerifyReport {
  /**
   * Whether every narinfo and the NAR it names were checked and are sound.
   * Orphans and leftovers do not count against it.
   */
  ok: boolean;
  cache: string;
  narinfos: number;
  /** Narinfos with no problem. */
  valid: number;
  /** Distinct NAR files checked. */
  narFiles: number;
  /** NAR listings (`<hash>.ls`) checked against their NARs. */
  listings: number;
  /** Debug-info links (`debuginfo/<build-id>.debug`) checked. */
  debugInfoLinks: number;
  fileBytes: number;
  narBytes: number;
  problems: VerifyProblem[];
  /** NAR files not checked, as narcache does not read their compression (lz4, lzip, …). */
  unchecked: UncheckedNar[];
  /**
   * Files in `nar/` that no narinfo names (relative to the cache). They are
   * garbage, not damage: an interrupted build leaves NARs whose narinfos
   * were never published.
   */
  orphans: string[];
  /**
   * Temporary files that writers left when they died (relative to the
   * cache): garbage too, removed by the next build or sign.
   */
  leftovers: string[];
  seconds: number;
}

// Reading narinfos waits on the disk, not the CPU.
const INDEX_CONCURRENCY = 32;
const PROGRESS_INTERVAL_MS = 200;

type NarOutcome = NarCheck | { error: string };

/** A debug-info link, read, waiting for the check of the NAR it points into. */
interface PendingLink {
  file: string;
  member: string;
}

/**
 * Checks that a flat-file binary cache (a directory, or an `s3://` URL) is
 * true, in two passes over its narinfos: the first learns which store path
 * each describes (for the references and for orphans), the second checks
 * each narinfo in full, streaming the NAR it names through the Rust core.
 */
export function verifyCache(location: string | Cache, options: VerifyOptions = {}): Promise<VerifyReport> {
  return withCache(location, (cache) => verify(cache, options));
}

async function verify(cache: Cache, options: VerifyOptions): Promise<VerifyReport> {
  const started = performance.now();
  const jobs = options.jobs ?? os.availableParallelism();
  if (!Number.isInteger(jobs) || jobs < 1) throw new NarcacheError(`--jobs must be a positive integer, not ${jobs}`);
  const trusted = options.trustedPublicKeys ?? [];
  const narinfoFiles = await cache.narinfoFiles();
  const problems: VerifyProblem[] = [];
  const storeDir = await readStoreDir(cache, problems);

  const listings = new Set(await cache.files('', '.ls'));
  const links = await readDebugInfoLinks(cache, problems);
  const linksTotal = [...links.values()].reduce((sum, l) => sum + l.length, 0);
  const linked = new Set(links.keys());

  // Pass 1: store path per narinfo file stem (undefined: unreadable), the NAR files named,
  // how many narinfos name each, and which need a listing made of them.
  const storePaths = new Map<string, string | undefined>();
  const named = new Map<string, number>();
  const namings = new Map<string, number>();
  const listed = new Set<string>();
  await runWithBudget(narinfoFiles, INDEX_CONCURRENCY, () => 1, async (file) => {
    const n = await cache.readNarinfo(file).catch(() => undefined);
    const stem = file.slice(0, -'.narinfo'.length);
    storePaths.set(stem, n?.storePath);
    const url = n && narUrl(n.url);
    if (url && typeof url === 'string') {
      named.set(url, n.fileSize ?? 0);
      namings.set(url, (namings.get(url) ?? 0) + 1);
      if (listings.has(listingName(stem))) listed.add(url);
    }
  }, () => false);

  const progress: VerifyProgress = {
    narinfosTotal: narinfoFiles.length,
    narinfosDone: 0,
    fileBytesTotal: [...named.values()].reduce((a, b) => a + b, 0),
    fileBytesDone: 0,
    problems: 0,
    elapsedSeconds: 0,
  };
  const baseline = verifyProgress().fileBytes;
  const report = () => {
    progress.fileBytesDone = verifyProgress().fileBytes - baseline;
    progress.problems = problems.length;
    progress.elapsedSeconds = (performance.now() - started) / 1000;
    options.onProgress?.({ ...progress });
  };

  // Several narinfos may name one file (identical NARs); it is read once.
  const narChecks = new Map<string, Promise<NarOutcome>>();
  let narBytes = 0;
  let fileBytes = 0;
  const checkNar = (file: NarFile, compression: string, narSize: number, index: IndexOptions): Promise<NarOutcome> => {
    const key = `${compression}\0${narSize}\0${index.listing}\0${index.debugInfo}\0${file.id}`;
    let check = narChecks.get(key);
    if (!check) {
      check = file.check(compression, narSize, index).then(
        (r) => {
          narBytes += r.narSize;
          fileBytes += r.fileSize;
          return r;
        },
        (e: unknown) => ({ error: (e instanceof Error ? e.message : String(e)).split('\n')[0] }),
      );
      narChecks.set(key, check);
    }
    return check;
  };

  let listingsChecked = 0;
  const unchecked: UncheckedNar[] = [];
  const context: CheckContext = {
    cache,
    storeDir,
    storePaths,
    trusted,
    checkNar,
    unchecked,
    indexFor: (url) => ({ listing: listed.has(url), debugInfo: linked.has(url) }),
    checkIndex: async (stem, url, nar) => {
      const found: VerifyProblem[] = [];
      // A NAR that could not be read is the narinfo's problem, not its links'.
      if (!nar) {
        links.delete(url);
        return found;
      }
      const listing = listingName(stem);
      if (nar.listing && listings.has(listing)) {
        listingsChecked++;
        const mismatch = await checkListing(cache, listing, nar.listing);
        if (mismatch) found.push({ file: listing, problem: mismatch });
      }
      for (const link of links.get(url) ?? []) {
        if (!nar.debugInfo?.includes(link.member)) {
          found.push({ file: link.file, problem: `its archive ../${url} has no debug-info file ${link.member}` });
        }
      }
      links.delete(url);
      // The last narinfo that names this NAR is done with what was made of it.
      const left = (namings.get(url) ?? 1) - 1;
      namings.set(url, left);
      if (!left) {
        nar.listing = undefined;
        nar.debugInfo = undefined;
      }
      return found;
    },
  };
  let valid = 0;
  const timer = options.onProgress ? setInterval(report, PROGRESS_INTERVAL_MS) : undefined;
  try {
    await runWithBudget(narinfoFiles, jobs, () => 1, async (file) => {
      // A file that vanishes or turns unreadable midway is a problem too.
      const found = await checkNarinfo(context, file).catch((e: Error) => [{ file, problem: e.message }]);
      problems.push(...found);
      if (!found.length) valid++;
      progress.narinfosDone++;
    }, () => false);
  } finally {
    clearInterval(timer);
  }
  report();

  // Links into a NAR that no narinfo names: missing, or an orphan (which an
  // interrupted build leaves with its links), read as its name says it is compressed.
  for (const [url, waiting] of links) {
    const found = await checkOrphanArchive(cache, url);
    for (const link of waiting) {
      const problem = typeof found === 'string' ? found : found.includes(link.member) ? undefined : `has no debug-info file ${link.member}`;
      if (problem) problems.push({ file: link.file, problem: `its archive ../${url} ${problem}` });
    }
  }

  const orphans = (await cache.narFiles()).map((f) => f.file).filter((f) => !named.has(f));
  const leftovers = await cache.leftovers();
  problems.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  unchecked.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return {
    ok: problems.length === 0 && unchecked.length === 0,
    cache: cache.location,
    narinfos: narinfoFiles.length,
    valid,
    narFiles: narChecks.size,
    listings: listingsChecked,
    debugInfoLinks: linksTotal,
    fileBytes,
    narBytes,
    problems,
    unchecked,
    orphans,
    leftovers,
    seconds: (performance.now() - started) / 1000,
  };
}

interface CheckContext {
  cache: Cache;
  storeDir: string;
  storePaths: Map<string, string | undefined>;
  trusted: PublicKey[];
  checkNar: (file: NarFile, compression: string, narSize: number, index: IndexOptions) => Promise<NarOutcome>;
  unchecked: UncheckedNar[];
  /** What to make of the NAR at `url` besides its hashes: a listing, its debug-info files. */
  indexFor: (url: string) => IndexOptions;
  /** Problems with the listing of the narinfo `<stem>.narinfo` and the debug-info links into its NAR at `url`. */
  checkIndex: (stem: string, url: string, nar: NarCheck | undefined) => Promise<VerifyProblem[]>;
}

/** Everything wrong with one narinfo and the NAR file it names. */
async function checkNarinfo(c: CheckContext, file: string): Promise<VerifyProblem[]> {
  let n: Narinfo;
  try {
    n = await c.cache.readNarinfo(file);
  } catch (e) {
    return [{ file, problem: (e as Error).message }];
  }
  const problems: string[] = [];
  const storePath = n.storePath;

  if (!isStorePath(storePath, c.storeDir)) problems.push(`StorePath is not a store path in ${c.storeDir}`);
  else if (file !== `${hashPart(storePath)}.narinfo`) {
    problems.push(`the file should be named ${hashPart(storePath)}.narinfo after its StorePath`);
  }

  const narHash = checkHashField(n.narHash, 'NarHash', problems);
  const fileHash = n.fileHash === undefined ? undefined : checkHashField(n.fileHash, 'FileHash', problems);
  const narProblems: string[] = [];
  if (n.fileHash === undefined) narProblems.push('FileHash is missing');
  if (n.fileSize === undefined) narProblems.push('FileSize is missing');

  for (const reference of n.references) {
    const full = `${c.storeDir}/${reference}`;
    const stem = hashPart(full);
    if (!c.storePaths.has(stem)) problems.push(`reference ${reference} has no narinfo in the cache`);
    else if (c.storePaths.get(stem) !== full) {
      const other = c.storePaths.get(stem);
      problems.push(`reference ${reference}: ${stem}.narinfo ${other ? `is for ${other}` : 'is unreadable'}`);
    }
  }

  problems.push(...checkSignatures(n, narHash !== undefined, c.trusted));

  const url = narUrl(n.url);
  let index: VerifyProblem[] = [];
  if (typeof url !== 'string') narProblems.push(`URL ${JSON.stringify(n.url)} ${url.outside}`);
  else {
    const checked = await checkNarFile(c, file, n, url, { fileHash, narHash });
    narProblems.push(...checked.problems);
    index = await c.checkIndex(file.slice(0, -'.narinfo'.length), url, checked.nar);
  }
  return [
    ...problems.map((problem) => ({ file, storePath, problem })),
    ...narProblems.map((problem) => ({ file, storePath, problem, nar: true as const })),
    ...index.map((p) => ({ ...p, storePath })),
  ];
}

function checkHashField(value: string, field: string, problems: string[]): Buffer | undefined {
  try {
    return parseHash(value);
  } catch {
    problems.push(`${field} is not a SHA-256 hash: ${JSON.stringify(value)}`);
    return undefined;
  }
}

/**
 * Every Sig must be well formed (Nix fails on a malformed signature by a key
 * it trusts); with trusted keys, one must verify.
 */
function checkSignatures(n: Narinfo, hashReadable: boolean, trusted: PublicKey[]): string[] {
  const problems: string[] = [];
  const signers: string[] = [];
  n.sigs.forEach((sig, i) => {
    const parsed = parseSignature(sig);
    if ('malformed' in parsed) problems.push(`Sig ${i + 1} is malformed: ${parsed.malformed}`);
    else signers.push(parsed.keyName);
  });
  if (!trusted.length || !hashReadable) return problems;
  const text = fingerprint(n);
  if (n.sigs.some((sig) => verifySignature(text, sig, trusted))) return problems;
  const trustedNames = new Set(trusted.map((k) => k.name));
  const forged = signers.filter((name) => trustedNames.has(name));
  problems.push(
    forged.length
      ? `no valid signature by a trusted key: the signature by ${forged.join(', ')} does not verify`
      : signers.length
        ? `no signature by a trusted key (signed only by ${signers.join(', ')})`
        : n.sigs.length
          ? 'no valid signature by a trusted key (every signature is malformed)'
          : 'no signature by a trusted key (unsigned)',
  );
  return problems;
}

/**
 * Checks the NAR file against the narinfo. It must be a file the cache can
 * read (for a directory: a regular file that does not lead out of `nar/`),
 * and is streamed once through the Rust core; gives the outcome if the
 * stream was a well-formed NAR.
 */
async function checkNarFile(
  c: CheckContext,
  file: string,
  n: Narinfo,
  url: string,
  stated: { fileHash?: Buffer; narHash?: Buffer },
): Promise<{ problems: string[]; nar?: NarCheck }> {
  const found = await c.cache.narFile(url);
  if ('problem' in found) return { problems: [`NAR file ${url} ${found.problem}`] };
  const problems: string[] = [];
  // Checked apart from the stream, which may not get to the end of a damaged file.
  if (n.fileSize !== undefined && found.size !== n.fileSize) {
    problems.push(`FileSize is ${n.fileSize} but ${url} has ${found.size} bytes`);
  }
  if (narCompressionSupport(n.compression) === 'unread') {
    c.unchecked.push({ file, storePath: n.storePath, url, compression: n.compression });
    return { problems };
  }
  // No further than NarSize: a stream that would expand without end
  // costs no more than the NAR it claims to be.
  const nar = await c.checkNar(found, n.compression, n.narSize, c.indexFor(url));
  if ('error' in nar) return { problems: [...problems, `NAR file ${url}: ${nar.error}`] };
  if (stated.fileHash && !stated.fileHash.equals(parseHash(nar.fileHash))) {
    problems.push(`FileHash does not match ${url}, whose hash is ${nar.fileHash}`);
  }
  if (nar.narSize !== n.narSize) problems.push(`NarSize is ${n.narSize} but the NAR in ${url} has ${nar.narSize} bytes`);
  if (stated.narHash && !stated.narHash.equals(parseHash(nar.narHash))) {
    problems.push(`NarHash does not match the NAR in ${url}, whose hash is ${nar.narHash}`);
  }
  return { problems, nar };
}

/** Why the listing `name` does not describe the NAR whose own listing is `expected`, if it does not. */
async function checkListing(cache: Cache, name: string, expected: Buffer): Promise<string | undefined> {
  try {
    return listingMismatch(await cache.readFile(name, MAX_LISTING_BYTES), expected);
  } catch (e) {
    return (e as Error).message;
  }
}

/** The debug-info files of the NAR file at `url` that no narinfo names, or what keeps them from being known. */
async function checkOrphanArchive(cache: Cache, url: string): Promise<string[] | string> {
  const nar = await cache.narFile(url);
  if ('problem' in nar) return nar.problem === 'is missing' ? 'is missing' : `is unusable: ${nar.problem}`;
  const method = url.endsWith('.nar.xz') ? 'xz' : url.endsWith('.nar.zst') ? 'zstd' : url.endsWith('.nar') ? 'none' : undefined;
  if (!method) return 'is named by no narinfo, and its name does not say how it is compressed';
  try {
    return (await nar.check(method, Number.MAX_SAFE_INTEGER, { debugInfo: true })).debugInfo ?? [];
  } catch (e) {
    return `is named by no narinfo and is no ${method} NAR: ${(e as Error).message.split('\n')[0]}`;
  }
}

/**
 * The debug-info links of the cache by the NAR they point into (relative
 * to the cache); a link that does not parse, names a place outside `nar/`
 * or is not named after its member's build ID is a problem.
 */
async function readDebugInfoLinks(cache: Cache, problems: VerifyProblem[]): Promise<Map<string, PendingLink[]>> {
  const links = new Map<string, PendingLink[]>();
  await forEachDebugInfoLink(
    cache,
    (file, link) => {
      const url = link.archive.startsWith('../') ? narUrl(link.archive.slice(3)) : { outside: 'does not start with ../' };
      if (typeof url !== 'string') {
        problems.push({ file, problem: `its archive ${JSON.stringify(link.archive)} ${url.outside}` });
        return;
      }
      const [dir, name] = link.member.split('/').slice(-2);
      if (file !== `${DEBUG_INFO_DIR}${dir}${name}`) {
        problems.push({ file, problem: `is not named after its member ${link.member}` });
        return;
      }
      const into = links.get(url) ?? [];
      into.push({ file, member: link.member });
      links.set(url, into);
    },
    (file, e) => problems.push({ file, problem: `does not parse: ${e.message}` }),
  );
  return links;
}

/** The store directory the cache is for, from `nix-cache-info` (which Nix needs). */
async function readStoreDir(cache: Cache, problems: VerifyProblem[]): Promise<string> {
  const text = await cache.readCacheInfo();
  if (text === undefined) {
    problems.push({ file: 'nix-cache-info', problem: 'missing or unreadable' });
    return DEFAULT_STORE_DIR;
  }
  return storeDirOf(text) ?? DEFAULT_STORE_DIR;
}
