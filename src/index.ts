/**
 * narcache: the closure of Nix store paths as a flat-file binary cache.
 * Everything the command line does is available here.
 */
export { buildCache, writeCache } from './build';
export type { BuildOptions, BuildProgress, BuildSummary, WriteOptions } from './build';
export type { Cache, CacheFile, NarFile } from './cache';
export { DirectoryCache } from './cache-dir';
export type { Closure, PathInfo } from './closure';
export { copyCache } from './copy';
export type { CopyOptions, CopyProblem, CopyProgress, CopySummary } from './copy';
export { debugInfoLink, parseDebugInfoLink } from './debug-info';
export type { DebugInfoLink } from './debug-info';
export { InterruptedError, NarcacheError } from './errors';
export { formatHash, normaliseHash, parseHash } from './hash';
export { formatNarinfo, narinfoFor, parseNarinfo } from './narinfo';
export type { Narinfo } from './narinfo';
export { nix32Decode, nix32Encode } from './native';
export type { PackedStream, PackResult } from './native';
export { packChunks, packPath } from './pack';
export type { Compression, PackPathOptions } from './pack';
export { plan } from './plan';
export type { Plan } from './plan';
export type { CacheInfo, CompanionFile, Destination, NarinfoState, NarinfoText } from './publish/destination';
export { DirectoryDestination } from './publish/directory';
export { cacheAt, destinationAt } from './publish/open';
export { S3Destination } from './publish/s3';
export type { S3DestinationOptions } from './publish/s3';
export { S3Cache } from './publish/s3-cache';
export { parseS3Url } from './publish/s3-location';
export type { S3Location } from './publish/s3-location';
export { pruneCache } from './prune';
export { repairCache } from './repair';
export type { RepairedPath, RepairOptions, RepairReport } from './repair';
export type { PruneOptions, PruneProgress, PruneRemoval, PruneSummary } from './prune';
export { signCache } from './sign-cache';
export type { SignCacheOptions, SignSummary } from './sign-cache';
export {
  fingerprint,
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  keygen,
  parsePublicKey,
  parseSecretKey,
  parseSignature,
  publicKeyOf,
  readSecretKeyFile,
  sign,
  signNarinfo,
  verifySignature,
} from './signing';
export type { KeygenOptions, ParsedSignature, PublicKey, SecretKey } from './signing';
export { parseAttrsJson } from './sources/attrs';
export { closureFromDb } from './sources/db';
export { loadClosure } from './sources/load';
export type { ClosureSource, LoadOptions } from './sources/load';
export { closureFromNix, resolveToStorePath } from './sources/nix';
export { parsePathInfoJson, PathInfoJsonParser } from './sources/path-info';
export { parseRegistration } from './sources/registration';
export { closureFromScan } from './sources/scan';
export { DEFAULT_STORE_DIR, hashPart } from './store-path';
export { verifyCache } from './verify';
export type { UncheckedNar, VerifyOptions, VerifyProblem, VerifyProgress, VerifyReport } from './verify';
