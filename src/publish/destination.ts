import { NarcacheError } from '../errors';
import type { PackResult } from '../native';
import type { PackPathOptions } from '../pack';
import { DEFAULT_STORE_DIR } from '../store-path';

/**
 * Where a cache is published. Planning, packing and publishing speak only
 * to this interface, not to a particular kind of storage.
 */
export interface Destination {
  /** How to name this destination in messages. */
  readonly location: string;
  /** For a service reached over the network: the requests sent to it so far. */
  readonly requests?: number;
  /**
   * Creates the cache layout and `nix-cache-info`, or checks those present,
   * and removes what writers that died left. A cache inside the store
   * (`info.storeDir`, or `storeRoot` where its files are) is refused before
   * anything is written.
   */
  open(info: CacheInfo, storeRoot?: string): Promise<void>;
  /**
   * Which of the narinfos of these paths are there, in as few requests as
   * the destination allows; `broken` for one that is there but cannot be
   * relied on (the destination may not tell that from `present`). A path
   * whose narinfo is missing is left out.
   */
  narinfoStates(paths: { hashPart: string; storePath: string }[]): Promise<Map<string, NarinfoState>>;
  /**
   * Packs the store path at `source` and stores its NAR file under the
   * name the result's `url` gives; resolves only once the file is complete
   * there, and leaves nothing under that name if it fails.
   */
  writeNar(source: string, options: PackPathOptions): Promise<PackResult>;
  /**
   * writeNar of several small paths, one after another, as one unit of
   * work; rejects at the first that fails. Only a destination that packs
   * them in one call into the Rust core (a directory) has it: for small
   * paths, a call costs more than packing one.
   */
  writeNars?(paths: { source: string; options: PackPathOptions }[]): Promise<PackResult[]>;
  /**
   * Publishes narinfos, each atomically (readers see all of it or nothing),
   * none before the narinfos of its references that come earlier in the
   * list, and none before its own bytes, its companions and every NAR file
   * written before the call are durable: not even a power loss leaves a
   * narinfo that points to a short file. A narinfo's companions are
   * published the same way, before it.
   */
  writeNarinfos(narinfos: NarinfoText[]): Promise<void>;
  /** Makes everything published so far durable, the last names included. */
  flush(): Promise<void>;
  /** Lets go of what the destination holds open (connections) once it is no longer used. */
  close(): void;
}

export type NarinfoState = 'present' | 'broken';

export interface NarinfoText {
  hashPart: string;
  text: string;
  /** Hash parts of the paths it refers to (itself aside), to be published before it. */
  references: string[];
  /** Files that describe the same path (its listing, debug-info links), published before the narinfo. */
  companions?: CompanionFile[];
}

// nix-cache-info holds a few short lines; a larger one is refused unread,
// as a hostile cache's would be.
const MAX_CACHE_INFO_BYTES = 64 << 10;

/** Refuses a `nix-cache-info` of `size` bytes before it is read, if it is too large to be one. */
export function checkCacheInfoSize(location: string, size: number): void {
  if (size > MAX_CACHE_INFO_BYTES) throw new NarcacheError(`${location}/nix-cache-info is ${size} bytes, too large to be one`);
}

export interface CompanionFile {
  /** Relative to the cache: `<hash>.ls`, `debuginfo/<build-id>.debug`. */
  name: string;
  data: string | Uint8Array;
  /** Leave a file already under this name as it is (Nix never overwrites a debug-info link). */
  keepExisting?: boolean;
}

/** What `nix-cache-info` says. */
export interface CacheInfo {
  storeDir: string;
  /** `Priority:`: substituters are tried lowest first (cache.nixos.org: 40). */
  priority?: number;
  /** `WantMassQuery: 1`. */
  wantMassQuery?: boolean;
}

/**
 * The `nix-cache-info` of a new cache: the line Nix writes, then those
 * that Nix reads but leaves to whoever serves the cache, in the order
 * cache.nixos.org gives them.
 */
export function cacheInfoText(info: CacheInfo): string {
  return (
    `StoreDir: ${info.storeDir}\n` +
    (info.wantMassQuery ? 'WantMassQuery: 1\n' : '') +
    (info.priority !== undefined ? `Priority: ${info.priority}\n` : '')
  );
}

/** A field of a `nix-cache-info`, parsed as Nix parses it: `Name: value`, the value trimmed. */
function cacheInfoField(cacheInfo: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, 'm').exec(cacheInfo)?.[1].trim();
}

/** The store directory a `nix-cache-info` names, if it names one. */
export function storeDirOf(cacheInfo: string): string | undefined {
  return cacheInfoField(cacheInfo, 'StoreDir');
}

/**
 * Refuses to add to a cache whose `nix-cache-info` names another store,
 * or lacks the priority or mass-query setting asked for: the file is
 * never rewritten under its readers.
 */
export function checkCacheInfo(location: string, cacheInfo: string, info: CacheInfo): void {
  const field = (name: string) => cacheInfoField(cacheInfo, name);
  const storeDir = field('StoreDir');
  if (storeDir !== undefined && storeDir !== info.storeDir) {
    throw new NarcacheError(`${location} is a cache for store ${storeDir}, not ${info.storeDir}`);
  }
  const mismatch = (what: string, found: string | undefined, wanted: string) =>
    new NarcacheError(`${location} has ${found === undefined ? `no ${what}` : `${what} ${found}`} in its nix-cache-info, not ${wanted}`);
  const priority = field('Priority');
  if (info.priority !== undefined && (priority === undefined || Number(priority) !== info.priority)) {
    throw mismatch('Priority', priority, String(info.priority));
  }
  const massQuery = field('WantMassQuery');
  if (info.wantMassQuery && massQuery !== '1') throw mismatch('WantMassQuery', massQuery, '1');
}

/** What a `nix-cache-info` says; a store directory it does not name is Nix's default. */
export function parseCacheInfo(cacheInfo: string): CacheInfo {
  const priority = Number(cacheInfoField(cacheInfo, 'Priority') ?? NaN);
  return {
    storeDir: cacheInfoField(cacheInfo, 'StoreDir') ?? DEFAULT_STORE_DIR,
    ...(Number.isInteger(priority) ? { priority } : {}),
    ...(cacheInfoField(cacheInfo, 'WantMassQuery') === '1' ? { wantMassQuery: true } : {}),
  };
}
