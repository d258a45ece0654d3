/**
 * narcache: the closure of Nix store paths as a flat-file binary cache.
 * Everything the command line does is available here.
 */
export { buildCache, writeCache } from './build';
export type { BuildOptions, BuildProgress, BuildSummary, WriteOptions } from './build';
export type { Closure, PathInfo } from './closure';
export { NarcacheError } from './errors';
export { formatHash, normaliseHash, parseHash } from './hash';
export { formatNarinfo, narinfoFor, parseNarinfo } from './narinfo';
export type { Narinfo } from './narinfo';
export { nix32Decode, nix32Encode } from './native';
export type { PackResult } from './native';
export { packPath } from './pack';
export type { Compression, PackPathOptions } from './pack';
export { plan } from './plan';
export type { Plan } from './plan';
export type { Destination } from './publish/destination';
export { DirectoryDestination } from './publish/directory';
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
export { closureFromNix, resolveToStorePath } from './sources/nix';
export { parsePathInfoJson } from './sources/path-info';
export { parseRegistration } from './sources/registration';
export { DEFAULT_STORE_DIR, hashPart } from './store-path';
export { verifyCache } from './verify';
export type { VerifyOptions, VerifyProblem, VerifyProgress, VerifyReport } from './verify';
