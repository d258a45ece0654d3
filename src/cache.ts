import { createHash } from 'node:crypto';
import { NarcacheError } from './errors';
import { limiter } from './limit';
import type { IndexOptions, NarCheck } from './native';
import { parseNarinfo, type Narinfo } from './narinfo';
import type { Destination } from './publish/destination';
import type { S3Location } from './publish/s3-location';

// Nix sets no bound: a narinfo grows with its references (a store path of
// 20,000 has one of 1.4 MB; closureInfo's output or a system profile get
// there). This one is 64 times that, a million references of usual
// length; a larger file is refused unread, as a hostile cache's would be.
export const MAX_NARINFO_BYTES = 64 << 20;
// Narinfos larger than this are read one at a time, so that reading many
// at once stays within a few tens of MiB.
export const LARGE_NARINFO_BYTES = 1 << 20;
const oneLargeAtATime = limiter(1);

/**
 * Reads the text of a narinfo of `size` bytes with `read`, unless it is
 * too large to be one; the error says what is wrong, without the file name.
 */
export function readNarinfoText(size: number, read: () => Promise<string>): Promise<string> {
  if (size > MAX_NARINFO_BYTES) throw new NarcacheError(`is ${size} bytes, too large for a narinfo`);
  return size > LARGE_NARINFO_BYTES ? oneLargeAtATime(read) : read();
}

/** Parses the text of the narinfo `file`; the error says what is wrong, without the file name. */
export function parseNarinfoFile(text: string, file: string): Narinfo {
  try {
    return parseNarinfo(text, file);
  } catch (e) {
    // parseNarinfo names its origin: strip it, the caller names the file.
    throw new NarcacheError(`does not parse: ${(e as Error).message.replace(`${file}: `, '')}`);
  }
}

/** A NAR file of a cache, found where a narinfo's URL says. */
export interface NarFile {
  /** The same for every URL that leads to this file, so that it is checked once. */
  id: string;
  size: number;
  /**
   * Streams the file once through the Rust core, no further than
   * `narSize` bytes of NAR; rejects with a one-line reason that does not
   * name the file.
   */
  check(compression: string, narSize: number, index?: IndexOptions): Promise<NarCheck>;
  /** The file's bytes, streamed in pieces of about a MiB. */
  read(): AsyncIterable<Buffer>;
  /** Where it lies, if in a bucket: another bucket of the same service copies it without downloading it. */
  object?: { location: S3Location; key: string };
}

/** A file of a cache, relative to it, as a listing gives it. */
export interface CacheFile {
  file: string;
  size: number;
  /** Last modification (for S3: upload, or start of an unfinished upload), in ms since the epoch. */
  modified: number;
  /** The id of an unfinished multipart upload (S3), which this entry stands for. */
  uploadId?: string;
}

/**
 * A binary cache to read as well as to write, wherever it is stored: what
 * verify and sign need besides a Destination.
 */
export interface Cache extends Destination {
  /** The narinfo files, `<hash>.narinfo`, sorted, without those being written. */
  narinfoFiles(): Promise<string[]>;
  /** Reads and parses one; the error says what is wrong, without the file name. */
  readNarinfo(file: string): Promise<Narinfo>;
  /** readNarinfo of a batch of a few thousand at once, each a Narinfo or its error, where the cache reads them faster so (a directory). */
  readNarinfos?(files: string[]): Promise<(Narinfo | Error)[]>;
  /** The text of one, byte for byte (refused unread if too large for a narinfo). */
  readNarinfoText(file: string): Promise<string>;
  /** The text of `nix-cache-info`, or undefined if it is missing or unreadable. */
  readCacheInfo(): Promise<string | undefined>;
  /**
   * The NAR file that a narinfo URL inside `nar/` names, or what keeps it
   * from being checked, to follow `NAR file <url>`: `is missing`, ….
   */
  narFile(url: string): Promise<NarFile | { problem: string }>;
  /** Every file below `nar/`, relative to the cache, but those being written. */
  narFiles(): Promise<CacheFile[]>;
  /**
   * The files directly in `dir` (`''` for the cache's top, or `debuginfo/`)
   * whose names end in `suffix`, relative to the cache, sorted, without
   * those being written; none if `dir` is missing.
   */
  files(dir: string, suffix: string): Promise<string[]>;
  /**
   * The bytes of a file of the cache (a listing, a debug-info link); throws
   * a one-line error that does not name the file if it is missing,
   * unreadable or larger than `maxBytes`.
   */
  readFile(name: string, maxBytes: number): Promise<Buffer>;
  /**
   * Temporary files that writers left when they died (relative to the
   * cache): garbage, not damage.
   */
  leftovers(): Promise<string[]>;
  /**
   * Readies the cache for its narinfos to be rewritten in place (sign):
   * refuses a cache inside the store `storeDir`, removes leftovers.
   */
  openForUpdate(storeDir: string): Promise<void>;
  /**
   * What writers left behind or are still writing: temporary files (a
   * directory's, beside the narinfos and in `nar/`), temporary objects and
   * unfinished multipart uploads (a bucket's).
   */
  temporaryFiles(): Promise<CacheFile[]>;
  /** Removes these files (narinfos, NAR files, temporary files) at once; one already gone is no error. */
  remove(files: (string | CacheFile)[]): Promise<void>;
  /**
   * Writes the NAR file `from` (of another cache) under `url`, checking
   * while it streams that it has `expected` size and SHA-256, and leaving
   * nothing under `url` if not; like writeNar, durable with the next
   * narinfos. Resolves to whether the bytes went through this process (false: a server-side copy).
   */
  copyNar(url: string, from: NarFile, expected: { fileHash: Buffer; fileSize: number }): Promise<boolean>;
  /**
   * Takes the cache's lock until the function it resolves to is called
   * (see lockCacheDirectory): shared by those that write (build, copy,
   * sign), exclusive for prune, which so waits for the writers to end and
   * keeps new ones out; `onWait` is called if it has to wait. A bucket has
   * no such lock: it resolves at once.
   */
  lock(mode: 'shared' | 'exclusive', onWait?: () => void): Promise<() => void>;
}

/**
 * The bytes of `source` passed on as they come, while their size and
 * SHA-256 are checked against `expected`: the stream fails (naming `url`)
 * as soon as it is longer than stated, or at its end if it differs.
 */
export async function* checkedStream(
  source: AsyncIterable<Buffer>,
  expected: { fileHash: Buffer; fileSize: number },
  url: string,
): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of source) {
    size += chunk.length;
    if (size > expected.fileSize) throw new NarcacheError(`${url} is longer than its FileSize, ${expected.fileSize} bytes`);
    hash.update(chunk);
    yield chunk;
  }
  if (size !== expected.fileSize) throw new NarcacheError(`FileSize is ${expected.fileSize} but ${url} has ${size} bytes`);
  if (!hash.digest().equals(expected.fileHash)) throw new NarcacheError(`FileHash does not match ${url}`);
}
