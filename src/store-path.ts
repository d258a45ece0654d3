import * as path from 'node:path';
import { NarcacheError } from './errors';

export const DEFAULT_STORE_DIR = '/nix/store';

const HASH_PART = /^[0-9a-df-np-sv-z]{32}$/;
// Nix's rule for the name part of a store path.
const NAME = /^[A-Za-z0-9+\-._?=]+$/;
// Nix refuses longer names (src/libstore/path.cc, checkName).
const MAX_NAME = 211;

/** The base name of a store path: `<hash>-<name>`. */
export function baseName(storePath: string): string {
  return path.posix.basename(storePath);
}

/** The 32-character hash part that names the path's narinfo. */
export function hashPart(storePath: string): string {
  return baseName(storePath).slice(0, 32);
}

/** Whether `p` is exactly a store path `<storeDir>/<hash>-<name>`. */
export function isStorePath(p: string, storeDir: string): boolean {
  return path.posix.dirname(p) === storeDir && isStorePathName(baseName(p));
}

/** Whether `base` is the base name `<hash>-<name>` of a store path, by Nix's rules. */
export function isStorePathName(base: string): boolean {
  const name = base.slice(33);
  return HASH_PART.test(base.slice(0, 32)) && base[32] === '-' && NAME.test(name) && name.length <= MAX_NAME;
}

/** Checks `p` is a store path and returns it. */
export function checkStorePath(p: string, storeDir: string): string {
  if (!isStorePath(p, storeDir)) throw new NarcacheError(`${p}: not a store path in ${storeDir}`);
  return p;
}

/** The store directory a cache's `nix-cache-info` names (`/nix/store` if it names none). */
export function storeDirOf(cacheInfo: string): string {
  return /^StoreDir: (.*)$/m.exec(cacheInfo)?.[1] ?? DEFAULT_STORE_DIR;
}
