import * as fs from 'node:fs/promises';
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

/**
 * Refuses `location`, where narcache is to write, if it is a store
 * directory of `stores` or lies below one: writing there would add files
 * to store paths (which Nix then finds corrupt) or to the store itself.
 * Symlinks are followed as far as the location exists. A store path that
 * does not exist yet is allowed: that is a derivation's output, which its
 * builder writes (nix/mk-binary-cache.nix).
 */
export async function refuseInsideStore(location: string, stores: string[]): Promise<void> {
  const target = await realLocation(path.resolve(location));
  const exists = await fs.lstat(target).then(() => true, () => false);
  for (const store of stores) {
    for (const dir of new Set([path.resolve(store), await fs.realpath(store).catch(() => path.resolve(store))])) {
      const below = target.startsWith(dir + '/') ? target.slice(dir.length + 1) : undefined;
      if (target !== dir && (below === undefined || (isStorePathName(below) && !exists))) continue;
      throw new NarcacheError(`${location} is ${target === dir ? 'the' : 'inside the'} Nix store ${store}: writing there would change it`);
    }
  }
}

/** The real path of `p` as far as it exists, the rest appended as it is. */
async function realLocation(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch {
    const parent = path.dirname(p);
    return parent === p ? p : path.join(await realLocation(parent), path.basename(p));
  }
}
