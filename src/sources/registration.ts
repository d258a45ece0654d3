import type { PathInfo } from '../closure';
import { NarcacheError } from '../errors';
import { normaliseHash } from '../hash';

/**
 * Parses Nix's registration format, as `nix-store --dump-db` prints it and
 * closureInfo's `registration` file holds it: per path, one line each for
 * the path, its NarHash, NarSize, deriver (empty if unknown), the number of
 * references, then the references.
 */
export function parseRegistration(text: string, origin = 'registration'): PathInfo[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const infos: PathInfo[] = [];
  let i = 0;
  const next = (what: string): string => {
    if (i >= lines.length) throw new NarcacheError(`${origin}: truncated at line ${i + 1}: expected ${what}`);
    return lines[i++];
  };
  const count = (what: string): number => {
    const line = next(what);
    if (!/^\d+$/.test(line)) throw new NarcacheError(`${origin}: line ${i}: expected ${what}, got ${JSON.stringify(line)}`);
    return Number(line);
  };
  while (i < lines.length) {
    const path = next('a store path');
    const hashLine = next('a NAR hash');
    let narHash: string;
    try {
      narHash = normaliseHash(hashLine);
    } catch {
      throw new NarcacheError(`${origin}: line ${i}: invalid NAR hash for ${path}`);
    }
    const narSize = count('a NAR size');
    const deriver = next('a deriver line');
    const references = Array.from({ length: count('a reference count') }, () => next('a reference'));
    infos.push({ path, narHash, narSize, references: references.sort(), ...(deriver ? { deriver } : {}), sigs: [] });
  }
  return infos;
}
