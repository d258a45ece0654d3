/**
 * Runs tasks in the given order under a budget of threads: each task takes
 * `weight` threads (at most the whole budget) while it runs. A heavy task
 * waits until enough threads are free rather than starting with fewer,
 * since a compressor's thread count is fixed for its whole stream.
 * `run` must settle without rejecting; `stopped` ends the scheduling of
 * further tasks (those running are awaited).
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
    const threads = Math.max(1, Math.min(budget, weightOf(item)));
    while (free < threads) await Promise.race(running);
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
