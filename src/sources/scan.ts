import * as os from 'node:os';
import * as path from 'node:path';
import type { Closure } from '../closure';
import { NarcacheError } from '../errors';
import { scanStore } from '../native';
import { baseName } from '../store-path';

/**
 * The closure of `roots` found from the store's files alone, as Nix finds a
 * build's references: each path's NAR is searched for the hash parts of the
 * store paths present in `storeRoot` (where the files of `storeDir` are),
 * and what it names is scanned in turn; NarHash and NarSize come from the
 * same pass. No deriver, content address or signature is known.
 */
export async function closureFromScan(
  roots: string[],
  storeDir: string,
  storeRoot = storeDir,
  threads = os.availableParallelism(),
): Promise<Closure> {
  if (!roots.length) throw new NarcacheError('no store paths given');
  const scanned = await scanStore(storeRoot, roots.map(baseName), threads).catch((e: Error) => {
    throw new NarcacheError(e.message);
  });
  const inStore = (name: string) => path.posix.join(storeDir, name);
  return {
    storeDir,
    paths: scanned.map((p) => ({
      path: inStore(p.name),
      narHash: p.narHash,
      narSize: p.narSize,
      references: p.references.map(inStore),
      sigs: [],
    })),
  };
}
