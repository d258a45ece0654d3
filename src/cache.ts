import type { NarCheck } from './native';
import type { Narinfo } from './narinfo';
import type { Destination } from './publish/destination';

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
  check(compression: string, narSize: number): Promise<NarCheck>;
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
}
