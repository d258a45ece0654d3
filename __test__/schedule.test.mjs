// How packing shares the threads: which paths get more than one, that a
// waiting path's need is asked again once the paths before it end, and the
// policy the packing threads run under.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import narcache from '../dist/index.js';
import schedule from '../dist/schedule.js';
import { tempDir } from './helpers/nix.mjs';

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

// The scheduling policy in a /proc stat file: its 41st field (3: SCHED_BATCH).
function policyOf(statFile) {
  const stat = fs.readFileSync(statFile, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
}

function packingThreadPolicies() {
  const policies = new Map();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== 'narcache-pack') continue;
      policies.set(tid, policyOf(`/proc/self/task/${tid}/stat`));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return policies;
}

test('packing threads and the compressor threads they start run under SCHED_BATCH, the JavaScript thread does not', async (t) => {
  const dir = tempDir(t, 'narcache-policy-');
  // Compressible but not trivially: zstd takes a while, in several jobs.
  const block = crypto.randomBytes(1 << 16).toString('hex');
  fs.writeFileSync(path.join(dir, 'file'), block.repeat(48 * 8));
  const packing = narcache.packPath(path.join(dir, 'file'), path.join(dir, 'out'), { compression: 'zstd', threads: 2 });
  let done = false;
  packing.finally(() => { done = true; });
  const seen = new Map();
  while (!done) {
    for (const [tid, policy] of packingThreadPolicies()) seen.set(tid, policy);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await packing;
  t.true(seen.size >= 2, `packing and compressor threads seen: ${seen.size}`);
  t.deepEqual([...new Set(seen.values())], [3]);
  t.is(policyOf('/proc/self/stat'), 0);
});
