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
  /** For a service reached over the network: the requests sent to it so far. */
  readonly requests?: number;
  /** Creates the cache layout and `nix-cache-info`, or checks those present. */
  open(storeDir: string): Promise<void>;
  /** Which of the narinfos named by these hash parts the cache holds. */
  presentNarinfos(hashParts: string[]): Promise<Set<string>>;
  /**
   * Packs the store path at `source` and stores its NAR file under the
   * name the result's `url` gives; resolves only once the file is complete
   * there, and leaves nothing under that name if it fails.
   */
  writeNar(source: string, options: PackPathOptions): Promise<PackResult>;
  /**
   * Publishes narinfos, each atomically (readers see all of it or nothing),
   * none before the narinfos of its references that come earlier in the
   * list, and none before its own bytes and every NAR file written before
   * the call are durable: not even a power loss leaves a narinfo that
   * points to a short file.
   */
  writeNarinfos(narinfos: NarinfoText[]): Promise<void>;
  /** Makes everything published so far durable, the last names included. */
  flush(): Promise<void>;
  /** Lets go of what the destination holds open (connections) once it is no longer used. */
  close(): void;
}

export interface NarinfoText {
  hashPart: string;
  text: string;
  /** Hash parts of the paths it refers to (itself aside), to be published before it. */
  references: string[];
}

/** The `nix-cache-info` of a new cache, as Nix writes it. */
export function cacheInfoText(storeDir: string): string {
  return `StoreDir: ${storeDir}\n`;
}

/** Refuses to add paths of `storeDir` to a cache whose `nix-cache-info` names another store. */
export function checkCacheInfo(location: string, cacheInfo: string, storeDir: string): void {
  const cacheStoreDir = /^StoreDir: (.*)$/m.exec(cacheInfo)?.[1];
  if (cacheStoreDir !== undefined && cacheStoreDir !== storeDir) {
    throw new NarcacheError(`${location} is a cache for store ${cacheStoreDir}, not ${storeDir}`);
  }
}
