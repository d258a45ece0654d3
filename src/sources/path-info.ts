import type { PathInfo } from '../closure';
import { NarcacheError } from '../errors';
import { narHashFrom } from '../hash';

/** One path as Nix prints it in JSON (`nix path-info --json`, exportReferencesGraph). */
export interface PathInfoJson {
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
 * by store path (Nix 2.19 and later, where a path that is not valid maps to
 * null). NAR hashes may be SRI, base16 or nix32.
 */
export function parsePathInfoJson(text: string, origin = 'path-info JSON'): PathInfo[] {
  const doc = parseJson(text, origin);
  if (Array.isArray(doc)) return doc.map((v: PathInfoJson | null) => pathInfoFromJson(v?.path, v, origin));
  if (doc && typeof doc === 'object') {
    return Object.entries(doc as Record<string, PathInfoJson | null>).map(([path, v]) => pathInfoFromJson(path, v, origin));
  }
  throw new NarcacheError(`${origin}: expected an array or an object of path infos`);
}

/** Parses JSON text; a syntax error becomes one line naming `origin`. */
export function parseJson(text: string, origin: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new NarcacheError(`${origin}: not JSON (${(e as Error).message})`);
  }
}

/** One JSON path info as a PathInfo; only the fields the JSON has are set. */
export function pathInfoFromJson(path: string | undefined, v: PathInfoJson | null | undefined, origin: string): PathInfo {
  if (typeof path === 'string' && v === null) throw new NarcacheError(`${origin}: ${path} is not a valid store path`);
  if (typeof path !== 'string' || !v || typeof v.narHash !== 'string' || typeof v.narSize !== 'number') {
    throw new NarcacheError(`${origin}: entry ${path ?? '(without path)'} lacks path, narHash or narSize`);
  }
  return {
    path,
    narHash: narHashFrom(v.narHash, path, origin),
    narSize: v.narSize,
    references: [...(v.references ?? [])].sort(),
    ...(v.deriver ? { deriver: v.deriver } : {}),
    ...(v.ca ? { ca: v.ca } : {}),
    sigs: v.signatures ?? [],
  };
}
