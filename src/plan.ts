import type { Closure, PathInfo } from './closure';
import { NarcacheError } from './errors';
import type { Destination } from './publish/destination';
import { hashPart } from './store-path';

export interface Plan {
  /**
   * Paths to pack, in the order to start them: large ones first, largest
   * first, so that none starts last and alone decides the wall time; then
   * the rest with references before referrers, so that narinfos can be
   * published as their NARs are written rather than all at the end.
   */
  todo: PathInfo[];
  /** Store paths whose narinfo the destination already has. */
  present: Set<string>;
}

/**
 * Paths of at least this many NAR bytes are packed first, largest first.
 * Below it, a path takes a few milliseconds: starting it late costs nothing.
 */
export const LARGE_PATH = 4 << 20;

/** Decides what to write: every path of the closure not yet in `dest`. */
export async function plan(closure: Closure, dest: Destination): Promise<Plan> {
  const known = new Set(closure.paths.map((p) => p.path));
  for (const info of closure.paths) {
    const missing = info.references.find((r) => !known.has(r));
    if (missing) throw new NarcacheError(`closure is incomplete: ${info.path} references ${missing}, which it lacks`);
  }
  const presentParts = await dest.presentNarinfos(closure.paths.map((p) => hashPart(p.path)));
  const present = new Set(closure.paths.filter((p) => presentParts.has(hashPart(p.path))).map((p) => p.path));
  const missing = closure.paths.filter((p) => !present.has(p.path));
  const ordered = referencesFirst(missing);
  const large = missing.filter((p) => p.narSize >= LARGE_PATH).sort((a, b) => b.narSize - a.narSize);
  return { todo: [...large, ...ordered.filter((p) => p.narSize < LARGE_PATH)], present };
}

/**
 * `infos` ordered so that each comes after those of its references that
 * are among them: a depth-first walk, without recursion (a chain of paths
 * may be as long as the closure). Store paths cannot refer to each other
 * in a cycle; metadata that says they do is refused, as no order could
 * publish them.
 */
function referencesFirst(infos: PathInfo[]): PathInfo[] {
  const byPath = new Map(infos.map((i) => [i.path, i]));
  const placed = new Set<string>();
  const walking = new Set<string>();
  const ordered: PathInfo[] = [];
  for (const start of infos) {
    if (placed.has(start.path)) continue;
    // Each frame: a path and how many of its references were looked at.
    const stack: [PathInfo, number][] = [[start, 0]];
    walking.add(start.path);
    while (stack.length) {
      const frame = stack[stack.length - 1];
      const [info, next] = frame;
      if (next < info.references.length) {
        frame[1]++;
        const ref = byPath.get(info.references[next]);
        if (!ref || ref === info || placed.has(ref.path)) continue;
        if (walking.has(ref.path)) {
          throw new NarcacheError(`reference cycle: ${ref.path} reaches itself through its references (through ${info.path})`);
        }
        walking.add(ref.path);
        stack.push([ref, 0]);
        continue;
      }
      stack.pop();
      walking.delete(info.path);
      placed.add(info.path);
      ordered.push(info);
    }
  }
  return ordered;
}
