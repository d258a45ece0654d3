/**
 * A limit on how many tasks run at once: the function returned runs the
 * task given to it as soon as fewer than `n` others run, in the order they
 * were given, and settles as the task does. Waiting tasks queue in a list
 * read from its head, not shifted: a closure may queue tens of thousands.
 */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  let waiting: (() => void)[] = [];
  let head = 0;
  return async (task) => {
    if (running < n) running++;
    // The finishing task hands its place on, so `running` stays the same.
    else await new Promise<void>((start) => waiting.push(start));
    try {
      return await task();
    } finally {
      if (head < waiting.length) {
        const next = waiting[head++];
        if (head === waiting.length) [waiting, head] = [[], 0];
        next();
      } else running--;
    }
  };
}
