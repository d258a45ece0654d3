/**
 * A limit on how many tasks run at once: the function returned runs the
 * task given to it as soon as fewer than `n` others run, in the order they
 * were given, and settles as the task does.
 */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    if (running < n) running++;
    // The finishing task hands its place on, so `running` stays the same.
    else await new Promise<void>((start) => waiting.push(start));
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}
