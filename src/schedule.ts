/**
 * Runs tasks in the given order under a budget of threads: each task takes
 * `weight` threads (at most the whole budget) while it runs. A heavy task
 * waits until enough threads are free rather than starting with fewer,
 * since a compressor's thread count is fixed for its whole stream; its
 * weight is asked again whenever a task ends, as it may depend on what
 * is still running. `run` must settle without rejecting; `stopped` ends
 * the scheduling of further tasks (those running are awaited).
 */
export async function runWithBudget<T>(
  items: T[],
  budget: number,
  weightOf: (item: T) => number,
  run: (item: T, threads: number) => Promise<void>,
  stopped: () => boolean,
): Promise<void> {
  let free = budget;
  const running = new Set<Promise<void>>();
  for (const item of items) {
    const threadsFor = () => Math.max(1, Math.min(budget, weightOf(item)));
    let threads: number;
    while (free < (threads = threadsFor())) await Promise.race(running);
    if (stopped()) break;
    free -= threads;
    const task: Promise<void> = run(item, threads).finally(() => {
      free += threads;
      running.delete(task);
    });
    running.add(task);
  }
  await Promise.all(running);
}

/**
 * Threads for packing a path of `size` NAR bytes when `unpacked` bytes
 * (this path's and those being packed included) are left for `jobs`
 * threads. One, since paths taken largest first, one per thread, keep
 * every thread busy to the end; but a path larger than one thread's share
 * of that work would alone decide the wall time, so it gets as many
 * threads as its share, and no more than its pieces of `chunk` bytes
 * (xz blocks, zstd jobs; 0 for none, which has no workers) can use.
 */
export function threadsForPath(size: number, unpacked: number, jobs: number, chunk: number): number {
  if (!chunk) return 1;
  const share = Math.ceil((jobs * size) / Math.max(unpacked, size, 1));
  return Math.max(1, Math.min(jobs, share, Math.ceil(size / chunk)));
}
