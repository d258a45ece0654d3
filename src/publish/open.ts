import type { Cache } from '../cache';
import { DirectoryCache } from '../cache-dir';
import { DirectoryDestination } from './directory';
import type { Destination } from './destination';
import { isS3Url, parseS3Url } from './s3-location';

// The AWS SDK takes a fifth of a second to load: only a command that needs it loads it.
const s3 = () => require('./s3') as typeof import('./s3');
const s3Cache = () => require('./s3-cache') as typeof import('./s3-cache');

/** The destination a cache location names: an `s3://` URL, or else a directory. */
export function destinationAt(location: string): Destination {
  return isS3Url(location) ? new (s3().S3Destination)(parseS3Url(location)) : new DirectoryDestination(location);
}

/** The cache a location names, to read as well as write. */
export function cacheAt(location: string): Cache {
  return isS3Url(location) ? new (s3Cache().S3Cache)(parseS3Url(location)) : new DirectoryCache(location);
}

/** Runs `use` on the cache at `location` (or on the cache given), closing it after if it was opened here. */
export async function withCache<T>(location: string | Cache, use: (cache: Cache) => Promise<T>): Promise<T> {
  if (typeof location !== 'string') return use(location);
  const cache = cacheAt(location);
  try {
    return await use(cache);
  } finally {
    cache.close();
  }
}
