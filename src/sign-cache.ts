import type { Cache } from './cache';
import { InterruptedError, NarcacheError } from './errors';
import { formatNarinfo, type Narinfo } from './narinfo';
import { storeDirOf, type NarinfoText } from './publish/destination';
import { withCache } from './publish/open';
import { runWithBudget } from './schedule';
import { plural } from './report/format';
import { signNarinfo, type SecretKey } from './signing';
import { DEFAULT_STORE_DIR } from './store-path';

export interface SignCacheOptions {
  keys: SecretKey[];
  /**
   * Aborting stops signing cleanly: the batch being written is completed
   * (each narinfo is replaced whole), no further one is started, and the
   * promise rejects with an {@link InterruptedError}.
   */
  signal?: AbortSignal;
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

// Narinfos are read (over the network, from S3) this many at a time, and
// written back a batch at a time: a directory syncs once per batch.
const CONCURRENCY = 16;
const BATCH = 1024;

/**
 * Adds a signature by each key to every narinfo of the cache at `location`
 * (a directory, or an `s3://` URL) that lacks it. A narinfo is rewritten as
 * Nix writes one (unknown fields dropped), and replaced atomically. Signing
 * vouches for what the narinfos say: check the cache with verifyCache first.
 */
export async function signCache(location: string | Cache, options: SignCacheOptions): Promise<SignSummary> {
  if (!options.keys.length) throw new NarcacheError('no signing key given');
  return withCache(location, (cache) => sign(cache, options));
}

async function sign(cache: Cache, options: SignCacheOptions): Promise<SignSummary> {
  // A narinfo read before a prune removed it would be written back without its NAR.
  const release = await cache.lock('shared');
  try {
    return await signAll(cache, options);
  } finally {
    release();
  }
}

async function signAll(cache: Cache, options: SignCacheOptions): Promise<SignSummary> {
  const started = performance.now();
  const storeDir = storeDirOf((await cache.readCacheInfo()) ?? '') ?? DEFAULT_STORE_DIR;
  await cache.openForUpdate(storeDir);
  const files = await cache.narinfoFiles();
  const stopped = () => options.signal?.aborted === true;
  let signed = 0;
  for (let start = 0; start < files.length; start += BATCH) {
    if (stopped()) throw new InterruptedError(signed, `signing ${plural(signed, 'narinfo')}`);
    const batch: NarinfoText[] = [];
    let failure: unknown;
    await runWithBudget(
      files.slice(start, start + BATCH),
      CONCURRENCY,
      () => 1,
      async (file) => {
        try {
          const withSigs = await signedNarinfo(cache, file, options.keys);
          if (withSigs) batch.push({ hashPart: file.slice(0, -'.narinfo'.length), text: formatNarinfo(withSigs), references: [] });
        } catch (e) {
          failure ??= e;
        }
      },
      () => failure !== undefined || stopped(),
    );
    if (failure !== undefined) throw failure;
    if (stopped()) throw new InterruptedError(signed, `signing ${plural(signed, 'narinfo')}`);
    await cache.writeNarinfos(batch);
    signed += batch.length;
  }
  return {
    cache: cache.location,
    narinfos: files.length,
    signed,
    alreadySigned: files.length - signed,
    seconds: (performance.now() - started) / 1000,
  };
}

/** The narinfo with the signatures it lacks, or undefined if it lacks none. */
async function signedNarinfo(cache: Cache, file: string, keys: SecretKey[]): Promise<Narinfo | undefined> {
  try {
    const narinfo = await cache.readNarinfo(file);
    const withSigs = signNarinfo(narinfo, keys);
    return withSigs === narinfo ? undefined : withSigs;
  } catch (e) {
    throw new NarcacheError(`${cache.location}/${file}: ${(e as Error).message}`);
  }
}
