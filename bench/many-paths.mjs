// The benchmark's many-paths closures: synthetic stores (see
// __test__/helpers/synthetic-store.mjs) written straight into the Nix store and
// registered with `nix-store --load-db`, as closureInfo's registration is; far
// faster than building tens of thousands of derivations. A closure already
// there (the same count, the same generator) is reused.

import { run, runOk } from '../__test__/helpers/nix.mjs';
import { syntheticPaths, writeSyntheticStore } from '../__test__/helpers/synthetic-store.mjs';

/**
 * The closure of `count` synthetic paths in /nix/store: { root, paths, narSize, middle,
 * storePaths }, `middle` a path halfway through (its closure: some of the paths before it).
 */
export async function syntheticClosure(count, { env }) {
  const store = writeSyntheticStore('/nix/store', count);
  // Loaded all at once: the root is valid only if every path is.
  const valid = await run('nix-store', ['--check-validity', store.root], { env });
  if (valid.code !== 0) await runOk('nix-store', ['--load-db'], { env, input: store.registration });
  const storePaths = syntheticPaths(count);
  return { root: store.root, paths: count, narSize: store.narBytes, middle: storePaths[Math.floor(count / 2)], storePaths };
}
