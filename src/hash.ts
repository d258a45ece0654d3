import { nix32Decode, nix32Encode } from './native';
import { NarcacheError } from './errors';

const SHA256_BYTES = 32;

/**
 * Reads a SHA-256 hash in any form Nix prints one: `sha256:` followed by
 * base16, nix32 or base64, SRI (`sha256-<base64>`), or bare base16/nix32.
 */
export function parseHash(text: string): Buffer {
  const sri = /^sha256-([A-Za-z0-9+/]+=*)$/.exec(text);
  const body = sri ? sri[1] : text.replace(/^sha256:/, '');
  const bytes = sri
    ? Buffer.from(body, 'base64')
    : /^[0-9a-f]{64}$/i.test(body)
      ? Buffer.from(body, 'hex')
      : body.length === 52 && /^[0-9a-df-np-sv-z]+$/.test(body)
        ? nix32Decode(body)
        : /^[A-Za-z0-9+/]{43}=$/.test(body)
          ? Buffer.from(body, 'base64')
          : undefined;
  if (bytes?.length !== SHA256_BYTES) throw new NarcacheError(`invalid SHA-256 hash: ${JSON.stringify(text)}`);
  return bytes;
}

/** Bytes in a hash of each type Nix knows. */
const HASH_BYTES: Record<string, number> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

/**
 * Whether Nix reads `text` as a hash that names its type, as it requires in a
 * narinfo's NarHash and FileHash (Hash::parseAnyPrefixed): `<type>:` then
 * base16, nix32 or base64, or SRI `<type>-<base64>`. Bare hashes are not.
 */
export function isTypedHash(text: string): boolean {
  const colon = text.indexOf(':');
  const separator = colon >= 0 ? colon : text.indexOf('-');
  return separator > 0 && isHashOfType(text.slice(separator + 1), text.slice(0, separator), colon < 0);
}

/**
 * Whether Nix reads `body` as a hash of `type` (Hash::Hash): its length picks
 * base16, nix32 or base64; an SRI hash is base64 whatever its length.
 */
export function isHashOfType(body: string, type: string, sri = false): boolean {
  const bytes = Object.hasOwn(HASH_BYTES, type) ? HASH_BYTES[type] : undefined;
  if (bytes === undefined) return false;
  if (!sri && body.length === bytes * 2) return /^[0-9a-fA-F]+$/.test(body);
  if (!sri && body.length === Math.ceil((bytes * 8) / 5)) {
    try {
      return nix32Decode(body).length === bytes;
    } catch {
      return false;
    }
  }
  if (!sri && body.length !== Math.ceil(bytes / 3) * 4) return false;
  // Nix's base64 decoder stops at the first '='.
  const digits = body.split('=')[0];
  return /^[A-Za-z0-9+/]*$/.test(digits) && Math.floor((digits.length * 6) / 8) === bytes;
}

/** A hash as narinfo files write it: `sha256:<nix32>`. */
export function formatHash(bytes: Buffer): string {
  return `sha256:${nix32Encode(bytes)}`;
}

/** Any accepted form of a hash, rewritten as `sha256:<nix32>`. */
export function normaliseHash(text: string): string {
  return formatHash(parseHash(text));
}

/** The NarHash that `origin` gives for `path`, rewritten as `sha256:<nix32>`; an invalid one is one line naming both. */
export function narHashFrom(text: string, path: string, origin: string): string {
  try {
    return normaliseHash(text);
  } catch {
    throw new NarcacheError(`${origin}: invalid NAR hash for ${path}: ${JSON.stringify(text)}`);
  }
}
