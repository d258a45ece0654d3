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

/** A hash as narinfo files write it: `sha256:<nix32>`. */
export function formatHash(bytes: Buffer): string {
  return `sha256:${nix32Encode(bytes)}`;
}

/** Any accepted form of a hash, rewritten as `sha256:<nix32>`. */
export function normaliseHash(text: string): string {
  return formatHash(parseHash(text));
}
