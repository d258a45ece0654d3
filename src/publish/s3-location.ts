import { NarcacheError } from '../errors';
import { CONTENT_ENCODINGS, type ContentEncoding } from './content-encoding';

/** A cache in an S3 bucket, as an `s3://` URL names it. */
export interface S3Location {
  bucket: string;
  /** Prepended to every key: empty, or ending in `/`. */
  prefix: string;
  /** The service's URL, for an S3-compatible service other than AWS. */
  endpoint?: string;
  region: string;
  /** A profile of the shared AWS config and credentials files. */
  profile?: string;
  /** Bytes per part of a multipart upload. */
  partSize: number;
  /** How narinfos are stored (`narinfo-compression`): plain if undefined. */
  narinfoCompression?: ContentEncoding;
  /** How NAR listings are stored (`ls-compression`): plain if undefined. */
  lsCompression?: ContentEncoding;
  /** The storage class of every object written (`storage-class`): the bucket's default if undefined. */
  storageClass?: string;
}

// S3's own bounds on a part (but the last).
const MIN_PART_SIZE = 5 << 20;
const MAX_PART_SIZE = 5 * 1024 ** 3;
// Nix's own default region for s3:// caches.
const DEFAULT_REGION = 'us-east-1';
const DEFAULT_PART_SIZE = 8 << 20;
// Parameters of Nix's store URLs that narcache takes as options.
const OPTIONS_NOT_IN_URL: Record<string, string> = {
  compression: '--compression',
  'secret-key': '--sign-key-file',
  'write-nar-listing': '--write-nar-listing',
  'index-debug-info': '--index-debug-info',
};

/** Whether a cache location is an `s3://` URL rather than a directory. */
export function isS3Url(location: string): boolean {
  return /^s3:\/\//i.test(location);
}

/**
 * Reads `s3://BUCKET[/PREFIX][?PARAMS]`, with the parameters Nix's S3
 * binary cache store takes: `endpoint` (`host[:port]`, or a URL), `scheme`
 * (`https` or `http`, for an endpoint without one), `region`, `profile`,
 * `buffer-size` (bytes per part of a multipart upload), `narinfo-compression`
 * and `ls-compression` (`xz`, `zstd`, `br` or `none`), and `storage-class`.
 */
export function parseS3Url(url: string): S3Location {
  const bad = (why: string) => new NarcacheError(`${url}: ${why}`);
  const match = /^s3:\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?$/i.exec(url);
  if (!match) throw bad('not an S3 URL (expected s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&…])');
  const [, bucket, path, query] = match;
  if (!/^[a-z0-9][a-z0-9.\-_]{2,254}$/i.test(bucket)) throw bad(`"${bucket}" is not a bucket name`);
  const params = new URLSearchParams(query ?? '');
  const known = ['endpoint', 'scheme', 'region', 'profile', 'buffer-size', 'narinfo-compression', 'ls-compression', 'storage-class'];
  for (const key of params.keys()) {
    const flag = OPTIONS_NOT_IN_URL[key];
    if (flag) throw bad(`give ${key} with ${flag}, not in the URL`);
    if (!known.includes(key)) throw bad(`unknown parameter "${key}" (narcache takes ${known.join(', ')})`);
  }
  const scheme = params.get('scheme') ?? 'https';
  if (scheme !== 'https' && scheme !== 'http') throw bad(`scheme must be https or http, not "${scheme}"`);
  const endpointParam = params.get('endpoint');
  const endpoint = endpointParam ? (/^https?:\/\//i.test(endpointParam) ? endpointParam : `${scheme}://${endpointParam}`) : undefined;
  if (endpoint !== undefined && !URL.canParse(endpoint)) throw bad(`endpoint "${endpointParam}" is not a host[:port] or URL`);
  const partSize = Number(params.get('buffer-size') ?? DEFAULT_PART_SIZE);
  if (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) {
    throw bad(`buffer-size must be a number of bytes from ${MIN_PART_SIZE} (5 MiB) to ${MAX_PART_SIZE} (5 GiB)`);
  }
  const encoding = (name: string): ContentEncoding | undefined => {
    const value = params.get(name) || 'none';
    if (value === 'none') return undefined;
    if (!(CONTENT_ENCODINGS as readonly string[]).includes(value)) throw bad(`${name} must be ${CONTENT_ENCODINGS.join(', ')} or none, not "${value}"`);
    return value as ContentEncoding;
  };
  const storageClass = params.get('storage-class') || undefined;
  if (storageClass !== undefined && !/^[A-Z][A-Z0-9_]*$/.test(storageClass)) {
    throw bad(`storage-class "${storageClass}" is not a storage class name (such as STANDARD_IA)`);
  }
  const prefix = path.split('/').filter(Boolean).join('/');
  return {
    bucket,
    prefix: prefix ? `${prefix}/` : '',
    endpoint,
    region: params.get('region') || DEFAULT_REGION,
    profile: params.get('profile') || undefined,
    partSize,
    narinfoCompression: encoding('narinfo-compression'),
    lsCompression: encoding('ls-compression'),
    storageClass,
  };
}

/** The cache's name in messages and reports, `s3://BUCKET[/PREFIX]`, to which a file name is joined with `/`. */
export function describeS3Location(l: S3Location): string {
  return `s3://${l.bucket}${l.prefix ? `/${l.prefix.slice(0, -1)}` : ''}`;
}

/** Whether two locations are on one service with the same credentials, so that one request copies between them. */
export function sameService(a: S3Location, b: S3Location): boolean {
  return a.endpoint === b.endpoint && a.region === b.region && a.profile === b.profile;
}
