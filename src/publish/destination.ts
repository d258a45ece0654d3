/**
 * Where a cache is published. Planning, packing and publishing speak only
 * to this interface, not to a particular kind of storage.
 */
export interface Destination {
  /** How to name this destination in messages. */
  readonly location: string;
  /** The local directory under whose `nar/` the packer writes NAR files. */
  readonly packRoot: string;
  /** Creates the cache layout and `nix-cache-info`, or checks those present. */
  open(storeDir: string): Promise<void>;
  hasNarinfo(hashPart: string): Promise<boolean>;
  /** Publishes a narinfo atomically: readers see all of it or nothing. */
  writeNarinfo(hashPart: string, text: string): Promise<void>;
}
