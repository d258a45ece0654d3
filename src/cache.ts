import { NarcacheError } from './errors';
import { limiter } from './limit';
import type { IndexOptions, NarCheck } from './native';
import { parseNarinfo, type Narinfo } from './narinfo';
import type { Destination } from './publish/destination';

// Nix sets no bound: a narinfo grows with its references (a store path of
// 20,000 has one of 1.4 MB; closureInfo's output or a system profile get
// there). This one is 64 times that, a million references of usual
// length; a larger file is refused unread, as a hostile cache's would be.
export const MAX_NARINFO_BYTES = 64 << 20;
// Narinfos larger than this are read one at a time, so that reading many
// at once stays within a few tens of MiB.
const LARGE_NARINFO_BYTES = 1 << 20;
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
  /** The text of `nix-cache-info`, or undefined if it is missing or unreadable. */
  readCacheInfo(): Promise<string | undefined>;
  /**
   * The NAR file that a narinfo URL inside `nar/` names, or what keeps it
   * from being checked, to follow `NAR file <url>`: `is missing`, ….
   */
  narFile(url: string): Promise<NarFile | { problem: string }>;
  /** Every file below `nar/`, relative to the cache, but those being written. */
  narFiles(): Promise<string[]>;
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
}
