import type { Closure, PathInfo } from './closure';
import { NarcacheError } from './errors';
import type { Destination } from './publish/destination';
import { hashPart } from './store-path';

export interface Plan {
  /** Paths to pack, largest first, so that the largest does not start last. */
  todo: PathInfo[];
  /** Store paths whose narinfo the destination already has. */
  present: Set<string>;
}

/** Decides what to write: every path of the closure not yet in `dest`. */
export async function plan(closure: Closure, dest: Destination): Promise<Plan> {
  const known = new Set(closure.paths.map((p) => p.path));
  for (const info of closure.paths) {
    const missing = info.references.find((r) => !known.has(r));
    if (missing) throw new NarcacheError(`closure is incomplete: ${info.path} references ${missing}, which it lacks`);
  }
  const present = new Set<string>();
  await Promise.all(
    closure.paths.map(async (info) => {
      if (await dest.hasNarinfo(hashPart(info.path))) present.add(info.path);
    }),
  );
  const todo = closure.paths.filter((p) => !present.has(p.path)).sort((a, b) => b.narSize - a.narSize);
  return { todo, present };
}
