import type { PathInfo } from '../closure';
import { NarcacheError } from '../errors';
import { normaliseHash } from '../hash';

interface PathInfoJson {
  path?: string;
  narHash?: string;
  narSize?: number;
  references?: string[];
  deriver?: string | null;
  ca?: string | null;
  signatures?: string[];
}

/**
 * Parses `nix path-info --json` output in either shape Nix has printed: an
 * array of objects with a `path` field (Nix up to 2.18), or an object keyed
 * by store path (Nix 2.19 and later).
 */
export function parsePathInfoJson(text: string, origin = 'path-info JSON'): PathInfo[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new NarcacheError(`${origin}: not JSON (${(e as Error).message})`);
  }
  const entries: [string | undefined, PathInfoJson][] = Array.isArray(doc)
    ? doc.map((v: PathInfoJson) => [v?.path, v])
    : doc && typeof doc === 'object'
      ? Object.entries(doc as Record<string, PathInfoJson>).map(([k, v]) => [k, v])
      : [];
  if (!entries.length && !(Array.isArray(doc) || (doc && typeof doc === 'object'))) {
    throw new NarcacheError(`${origin}: expected an array or an object of path infos`);
  }
  return entries.map(([path, v]) => {
    if (typeof path !== 'string' || !v || typeof v.narHash !== 'string' || typeof v.narSize !== 'number') {
      throw new NarcacheError(`${origin}: entry ${path ?? '(without path)'} lacks path, narHash or narSize`);
    }
    return {
      path,
      narHash: normaliseHash(v.narHash),
      narSize: v.narSize,
      references: [...(v.references ?? [])].sort(),
      ...(v.deriver ? { deriver: v.deriver } : {}),
      ...(v.ca ? { ca: v.ca } : {}),
      sigs: v.signatures ?? [],
    };
  });
}
