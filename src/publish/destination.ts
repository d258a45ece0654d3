import { NarcacheError } from '../errors';
import type { PackResult } from '../native';
import type { PackPathOptions } from '../pack';

/**
 * Where a cache is published. Planning, packing and publishing speak only
 * to this interface, not to a particular kind of storage.
 */
export interface Destination {
  /** How to name this destination in messages. */
  readonly location: string;
  /**
   * Creates the cache layout and `nix-cache-info`, or checks those present,
   * and removes what writers that died left. A cache inside the store
   * (`storeDir`, or `storeRoot` where its files are) is refused before
   * anything is written.
   */
  open(storeDir: string, storeRoot?: string): Promise<void>;
  /**
   * Whether the narinfo of `storePath` is there: `broken` if it is but
   * cannot be relied on (the destination may not tell that from `present`).
   */
  narinfoState(hashPart: string, storePath: string): Promise<NarinfoState>;
  /**
   * Packs the store path at `source` and stores its NAR file under the
   * name the result's `url` gives; resolves only once the file is complete
   * there, and leaves nothing under that name if it fails.
   */
  writeNar(source: string, options: PackPathOptions): Promise<PackResult>;
  /**
   * Publishes narinfos one after another in the given order, each
   * atomically (readers see all of it or nothing), and none before its own
   * bytes and every NAR file written before the call are durable: not even
   * a power loss leaves a narinfo that points to a short file.
   */
  writeNarinfos(narinfos: NarinfoText[]): Promise<void>;
  /** Makes everything published so far durable, the last names included. */
  flush(): Promise<void>;
  /** Lets go of what the destination holds open (connections) once it is no longer used. */
  close(): void;
}

export type NarinfoState = 'present' | 'missing' | 'broken';

export interface NarinfoText {
  hashPart: string;
  text: string;
}

// nix-cache-info holds a few short lines; a larger one is refused unread,
// as a hostile cache's would be.
const MAX_CACHE_INFO_BYTES = 64 << 10;

/** Refuses a `nix-cache-info` of `size` bytes before it is read, if it is too large to be one. */
export function checkCacheInfoSize(location: string, size: number): void {
  if (size > MAX_CACHE_INFO_BYTES) throw new NarcacheError(`${location}/nix-cache-info is ${size} bytes, too large to be one`);
}

/** The `nix-cache-info` of a new cache, as Nix writes it. */
export function cacheInfoText(storeDir: string): string {
  return `StoreDir: ${storeDir}\n`;
}

/** The store directory a `nix-cache-info` names, if it names one. */
export function storeDirOf(cacheInfo: string): string | undefined {
  return /^StoreDir: (.*)$/m.exec(cacheInfo)?.[1];
}

/** Refuses to add paths of `storeDir` to a cache whose `nix-cache-info` names another store. */
export function checkCacheInfo(location: string, cacheInfo: string, storeDir: string): void {
  const cacheStoreDir = storeDirOf(cacheInfo);
  if (cacheStoreDir !== undefined && cacheStoreDir !== storeDir) {
    throw new NarcacheError(`${location} is a cache for store ${cacheStoreDir}, not ${storeDir}`);
  }
}
