import * as path from 'node:path';
import type { PathInfo } from '../closure';
import { NarcacheError } from '../errors';
import { checkStorePath } from '../store-path';
import { resolveToStorePath } from './nix';

/**
 * The store paths that command-line arguments name: store paths, symlinks
 * into the store such as `./result`, or paths below `storeRoot` when the
 * store's files are not at `storeDir` (a chroot store, a mounted image),
 * which name the store path of `storeDir` they hold.
 */
export function resolveRoots(args: string[], storeDir: string, storeRoot = storeDir): string[] {
  const root = path.resolve(storeRoot);
  return args.map((arg) => {
    const abs = path.resolve(arg);
    if (root !== storeDir && abs.startsWith(root + '/')) {
      return checkStorePath(path.posix.join(storeDir, abs.slice(root.length + 1).split('/')[0]), storeDir);
    }
    return resolveToStorePath(arg, storeDir);
  });
}

/**
 * The paths of `infos` that `roots` reach through references, in the order
 * of `infos`. A root that `infos` lacks is an error naming `origin`; a
 * reference it lacks is left for the plan to report.
 */
export function closureWithin(infos: PathInfo[], roots: string[], origin: string): PathInfo[] {
  const byPath = new Map(infos.map((i) => [i.path, i]));
  const reached = new Set<string>();
  const queue = roots.map((r) => {
    if (!byPath.has(r)) throw new NarcacheError(`${r} is not in ${origin}`);
    return r;
  });
  while (queue.length) {
    const p = queue.pop()!;
    if (reached.has(p)) continue;
    reached.add(p);
    queue.push(...(byPath.get(p)?.references ?? []).filter((r) => !reached.has(r)));
  }
  return infos.filter((i) => reached.has(i.path));
}
