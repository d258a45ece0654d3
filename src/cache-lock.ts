import { lockDirectory, unlockDirectory } from './native';

/**
 * An advisory lock (flock) on a cache directory. Writers (build, copy) hold
 * it shared, so that any number of them run at once; prune holds it
 * exclusive, so that it never removes what a running build relies on: a
 * narinfo the build found present and will publish references to, or a
 * NAR it has written but not yet named. Resolves to the function that
 * releases it; the system releases it too when the process ends, however
 * it ends. `onWait` is called once if another process holds a lock that
 * conflicts, before waiting for it.
 */
export async function lockCacheDirectory(
  dir: string,
  mode: 'shared' | 'exclusive',
  onWait?: () => void,
): Promise<() => void> {
  const exclusive = mode === 'exclusive';
  let id = await lockDirectory(dir, exclusive, false);
  if (id === null) {
    onWait?.();
    id = await lockDirectory(dir, exclusive, true);
  }
  const held = id!;
  return () => unlockDirectory(held);
}
