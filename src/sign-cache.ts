import * as path from 'node:path';
import { listNarinfoFiles, readNarinfoFile } from './cache-dir';
import { NarcacheError } from './errors';
import { formatNarinfo, type Narinfo } from './narinfo';
import { writeFileAtomic } from './publish/directory';
import { runWithBudget } from './schedule';
import { signNarinfo, type SecretKey } from './signing';

export interface SignCacheOptions {
  keys: SecretKey[];
}

export interface SignSummary {
  cache: string;
  narinfos: number;
  /** Narinfos that gained at least one signature. */
  signed: number;
  /** Narinfos that held every key's signature already. */
  alreadySigned: number;
  seconds: number;
}

// Each narinfo is made durable before it is renamed: the disk, not the CPU, sets the pace.
const CONCURRENCY = 16;

/**
 * Adds a signature by each key to every narinfo of the cache at `location`
 * that lacks it. A narinfo is rewritten as Nix writes one (unknown fields
 * dropped), and replaced atomically. Signing vouches for what the narinfos
 * say: check the cache with verifyCache first.
 */
export async function signCache(location: string, options: SignCacheOptions): Promise<SignSummary> {
  const started = performance.now();
  if (!options.keys.length) throw new NarcacheError('no signing key given');
  const cache = path.resolve(location);
  const files = await listNarinfoFiles(cache);
  let signed = 0;
  let failure: unknown;
  await runWithBudget(
    files,
    CONCURRENCY,
    () => 1,
    async (file) => {
      try {
        const withSigs = await signedNarinfo(cache, file, options.keys);
        if (!withSigs) return;
        await writeFileAtomic(path.join(cache, file), formatNarinfo(withSigs));
        signed++;
      } catch (e) {
        failure ??= e;
      }
    },
    () => failure !== undefined,
  );
  if (failure !== undefined) throw failure;
  return {
    cache,
    narinfos: files.length,
    signed,
    alreadySigned: files.length - signed,
    seconds: (performance.now() - started) / 1000,
  };
}

/** The narinfo with the signatures it lacks, or undefined if it lacks none. */
async function signedNarinfo(cache: string, file: string, keys: SecretKey[]): Promise<Narinfo | undefined> {
  try {
    const narinfo = await readNarinfoFile(cache, file);
    const withSigs = signNarinfo(narinfo, keys);
    return withSigs === narinfo ? undefined : withSigs;
  } catch (e) {
    throw new NarcacheError(`${path.join(cache, file)}: ${(e as Error).message}`);
  }
}
