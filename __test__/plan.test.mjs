// The order paths are packed in: large ones first, largest first; the rest
// with references before referrers and otherwise as they lie on the disk
// (by inode number), not in the closure's order by hash.
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import planModule from '../dist/plan.js';
import { tempDir } from './helpers/nix.mjs';

const { plan, LARGE_PATH } = planModule;
const STORE = '/nix/store';
const nothingPresent = { narinfoStates: async () => new Map() };

/** A store path whose hash part sorts as `rank` does (a path's place in a closure sorted by path). */
const storePath = (rank, name) => `${STORE}/${String(rank).padStart(32, '0')}-${name}`;

test('small paths are packed in the order of their inode numbers, each after its references', async (t) => {
  const root = tempDir(t);
  const locate = (info) => path.join(root, path.basename(info.path));
  // Files first, then their names: the closure's order (by name) the reverse of the inodes'.
  const files = ['a', 'b', 'c', 'd', 'e', 'f'].map((name) => {
    const file = path.join(root, name);
    fs.writeFileSync(file, name);
    return { name, ino: fs.lstatSync(file).ino };
  });
  files.sort((x, y) => x.ino - y.ino);
  const onDisk = files.map(({ name }, k) => {
    const info = { path: storePath(files.length - k, name), narHash: 'sha256:x', narSize: 1000, references: [], sigs: [] };
    fs.renameSync(path.join(root, name), locate(info));
    return info;
  });
  const infos = [...onDisk].reverse();
  // The first on the disk refers to the last one: that one must come before it.
  const [first, last] = [onDisk[0], onDisk.at(-1)];
  first.references = [last.path];
  const { todo } = await plan({ storeDir: STORE, paths: infos }, nothingPresent, locate);
  t.deepEqual(
    todo.map((i) => i.path),
    [last, ...onDisk.slice(0, -1)].map((i) => i.path),
  );
});

test('large paths come first, largest first; a path that cannot be looked at comes last', async (t) => {
  const root = tempDir(t);
  const locate = (info) => path.join(root, path.basename(info.path));
  const info = (rank, name, narSize) => ({ path: storePath(rank, name), narHash: 'sha256:x', narSize, references: [], sigs: [] });
  const infos = [info(0, 'gone', 10), info(1, 'small', 10), info(2, 'large', LARGE_PATH), info(3, 'larger', 2 * LARGE_PATH)];
  for (const i of infos.slice(1)) fs.writeFileSync(locate(i), '');
  const { todo } = await plan({ storeDir: STORE, paths: infos }, nothingPresent, locate);
  t.deepEqual(
    todo.map((i) => i.path.split('-')[1]),
    ['larger', 'large', 'small', 'gone'],
  );
});
