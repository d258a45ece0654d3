// How packing shares the threads: which paths get more than one, and that a
// waiting path's need is asked again once the paths before it end.
import test from 'ava';

import schedule from '../dist/schedule.js';

const { runWithBudget, threadsForPath } = schedule;
const MiB = 1 << 20;
const XZ_BLOCK = 24 * MiB;

test('a path that is not more than one thread\'s share of the work left runs on one thread', (t) => {
  // The bench closure: a 1 GiB file among 2.5 GiB.
  t.is(threadsForPath(1024 * MiB, 2526 * MiB, 2, XZ_BLOCK), 1);
  t.is(threadsForPath(76 * MiB, 1500 * MiB, 2, XZ_BLOCK), 1);
  t.is(threadsForPath(10 * MiB, 20 * MiB, 2, XZ_BLOCK), 1);
});

test('a path larger than its share gets threads by its share, as far as its chunks go', (t) => {
  t.is(threadsForPath(10240 * MiB, 11264 * MiB, 2, XZ_BLOCK), 2);
  t.is(threadsForPath(10240 * MiB, 11264 * MiB, 8, XZ_BLOCK), 8);
  t.is(threadsForPath(900 * MiB, 1000 * MiB, 8, XZ_BLOCK), 8);
  t.is(threadsForPath(600 * MiB, 1000 * MiB, 8, XZ_BLOCK), 5);
  // Alone at the end: every thread, but a 30 MiB path has two xz blocks only.
  t.is(threadsForPath(30 * MiB, 30 * MiB, 8, XZ_BLOCK), 2);
  t.is(threadsForPath(1 * MiB, 1 * MiB, 8, XZ_BLOCK), 1);
});

test('without compression a path never takes more than one thread', (t) => {
  t.is(threadsForPath(10240 * MiB, 10240 * MiB, 8, 0), 1);
});

test('a waiting task is given the threads its need is at when it starts, not when it was first asked', async (t) => {
  const started = [];
  let longRunning = true;
  await runWithBudget(
    ['long', 'big'],
    2,
    (item) => (item === 'big' && longRunning ? 3 : 1),
    async (item, threads) => {
      started.push([item, threads]);
      if (item === 'long') {
        await new Promise((resolve) => setTimeout(resolve, 30));
        longRunning = false;
      }
    },
    () => false,
  );
  // While 'long' ran, 'big' wanted more than was free (capped at the budget: 2) and waited;
  // once it ended, 'big' needed one thread only.
  t.deepEqual(started, [
    ['long', 1],
    ['big', 1],
  ]);
});
