import type { PathInfo } from '../closure';
import { NarcacheError } from '../errors';
import { parseJson, pathInfoFromJson, type PathInfoJson } from './path-info';

/**
 * Parses the `.attrs.json` Nix writes into the build directory of a
 * derivation with `__structuredAttrs = true`: each name given in its
 * `exportReferencesGraph` maps to the closure of the paths listed there, as
 * an array of {path, narHash, narSize, references, closureSize} (and `ca`
 * for content-addressed paths; never a deriver nor signatures). Returns the
 * union of those closures. A bare such array is read as well.
 */
export function parseAttrsJson(text: string, origin = '.attrs.json'): PathInfo[] {
  const doc = parseJson(text, origin);
  const graphs: unknown[] = Array.isArray(doc) ? [doc] : graphsOf(doc, origin);
  const paths = new Map<string, PathInfo>();
  for (const graph of graphs) {
    if (!Array.isArray(graph)) throw new NarcacheError(`${origin}: a reference graph is not an array of path infos`);
    for (const entry of graph as (PathInfoJson | null)[]) {
      const info = pathInfoFromJson(entry?.path, entry, origin);
      if (!paths.has(info.path)) paths.set(info.path, info);
    }
  }
  return [...paths.values()];
}

function graphsOf(doc: unknown, origin: string): unknown[] {
  const attrs = (doc && typeof doc === 'object' ? doc : {}) as Record<string, unknown>;
  const exported = attrs.exportReferencesGraph;
  if (!exported || typeof exported !== 'object') {
    throw new NarcacheError(`${origin}: no exportReferencesGraph: the derivation must set exportReferencesGraph and __structuredAttrs = true`);
  }
  return Object.keys(exported).map((name) => {
    if (!(name in attrs)) throw new NarcacheError(`${origin}: the reference graph "${name}" is missing`);
    return attrs[name];
  });
}
