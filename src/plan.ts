import type { Closure, PathInfo } from './closure';
import { NarcacheError } from './errors';
import { limiter } from './limit';
import type { Destination } from './publish/destination';
import { hashPart } from './store-path';

export interface Plan {
  /** Paths to pack, largest first, so that the largest does not start last. */
  todo: PathInfo[];
  /** Store paths whose narinfo the destination already has. */
  present: Set<string>;
  /** Paths of `todo` whose narinfo is there but broken: they are written anew. */
  broken: Set<string>;
}

// Looking narinfos up waits on the disk or the network, and each holds a
// file or a connection open for a moment.
const LOOKUPS_AT_ONCE = 32;

/** Decides what to write: every path of the closure not yet in `dest`. */
export async function plan(closure: Closure, dest: Destination): Promise<Plan> {
  const known = new Set(closure.paths.map((p) => p.path));
  for (const info of closure.paths) {
    const missing = info.references.find((r) => !known.has(r));
    if (missing) throw new NarcacheError(`closure is incomplete: ${info.path} references ${missing}, which it lacks`);
  }
  const present = new Set<string>();
  const broken = new Set<string>();
  const lookup = limiter(LOOKUPS_AT_ONCE);
  await Promise.all(
    closure.paths.map((info) =>
      lookup(async () => {
        const state = await dest.narinfoState(hashPart(info.path), info.path);
        if (state !== 'missing') (state === 'present' ? present : broken).add(info.path);
      }),
    ),
  );
  const todo = closure.paths.filter((p) => !present.has(p.path)).sort((a, b) => b.narSize - a.narSize);
  return { todo, present, broken };
}
