// A synthetic store of many paths, written straight to disk with its registration (Nix's
// `--dump-db` format, NAR hashes computed here by a NAR writer of this file's own), for closures
// far larger than nix-build could make in a test or a benchmark: tens of thousands of paths in
// seconds. Sizes follow a system closure's shape (most paths a few KB to a few hundred KB, a few
// of several MB), each path a small tree (a program, a library, docs, a symlink) that names the
// store paths it refers to, and the reference graph is a package set's: a few base paths nearly
// everything uses, the rest picking among earlier paths, recent ones more often.
//
// The same (count, seed) always gives the same paths, byte for byte, so a store that already
// holds them (registered with `nix-store --load-db`) is reused. GENERATION is part of every
// path's name: a change to what is generated must change it, or a store holding the paths of
// an earlier generator would be taken for this one's.
const GENERATION = 3;

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { nix32Encode } from './cache.mjs';
import { narOf } from './mutate.mjs';
import { random } from './reliability.mjs';

const BASE_PATHS = 12;
const WORDS = (
  'the of and to in is for on that with as by this be from are at or an it not which file path ' +
  'store lib bin share doc include pkgconfig nix build output error warning config install ' +
  'version module function return value static const void int char struct unsigned elf so'
).split(' ');

/** Bytes that compress about as a closure's files do (text, with some runs of binary). */
function contentPool(rng, size) {
  const pool = Buffer.alloc(size);
  for (let at = 0; at < size; ) {
    if (rng() < 0.003) {
      const n = Math.min(size - at, 64 + Math.floor(rng() * 512));
      for (let i = 0; i < n; i++) pool[at + i] = Math.floor(rng() * 256);
      at += n;
    } else {
      at += pool.write(`${WORDS[Math.floor(rng() * WORDS.length)]}${rng() < 0.1 ? '\n' : ' '}`, at, 'latin1');
    }
  }
  return pool;
}

/** A NAR size drawn from a log-normal: median ~8 KB, 1 in 200 paths of several MB. */
function pathSize(rng) {
  const normal = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
  return Math.min(24 << 20, Math.max(200, Math.round(8192 * Math.exp(1.6 * normal))));
}

/** The references of path `i`: base paths often, earlier paths otherwise, recent ones more. */
function referencesOf(i, rng) {
  if (i === 0) return [];
  const refs = new Set();
  const n = 1 + Math.floor(rng() * Math.min(i, 6));
  while (refs.size < n) {
    const r = rng();
    if (i > BASE_PATHS && r < 0.4) refs.add(Math.floor(rng() * BASE_PATHS));
    else refs.add(Math.max(0, i - 1 - Math.floor(i * rng() ** 3)));
  }
  if (rng() < 0.05) refs.add(i); // a path that names itself
  return [...refs].sort((a, b) => a - b);
}

const regular = (contents, executable = false) => ({ type: 'regular', contents, executable });

/** The tree of one path: `size` bytes of `pool` spread over a few files, naming its references. */
function treeOf(name, size, refPaths, rng, pool) {
  const slice = (n) => {
    const at = Math.floor(rng() * (pool.length - n));
    return pool.subarray(at, at + n);
  };
  const header = Buffer.from(`${refPaths.join('\n')}\n`);
  if (size < 1024) return regular(Buffer.concat([header, slice(size)]), rng() < 0.3);
  const files = Math.min(40, 1 + Math.floor(size / 16384));
  const part = Math.floor(size / files);
  const lib = { type: 'directory', entries: {} };
  for (let f = 1; f < files; f++) lib.entries[`lib${name}-${f}.so`] = regular(slice(part));
  return {
    type: 'directory',
    entries: {
      bin: { type: 'directory', entries: { [name]: regular(Buffer.concat([header, slice(part)]), true) } },
      lib,
      share: { type: 'directory', entries: { doc: { type: 'directory', entries: { README: regular(slice(200)) } } } },
      [name]: { type: 'symlink', target: `bin/${name}` },
    },
  };
}

/** The strings of the NAR of `node` (see narOf), entries in Nix's order (bytewise). */
function narStringsOf(node, out = []) {
  out.push('(', 'type', node.type);
  if (node.type === 'regular') {
    if (node.executable) out.push('executable', '');
    out.push('contents', node.contents);
  } else if (node.type === 'symlink') {
    out.push('target', node.target);
  } else {
    for (const name of Object.keys(node.entries).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))) {
      out.push('entry', '(', 'name', name, 'node');
      narStringsOf(node.entries[name], out);
      out.push(')');
    }
  }
  out.push(')');
  return out;
}

function narOfTree(tree) {
  return narOf(['nix-archive-1', ...narStringsOf(tree)].map((s) => (Buffer.isBuffer(s) ? s : Buffer.from(s))));
}

function writeTree(file, node) {
  if (node.type === 'regular') fs.writeFileSync(file, node.contents, { mode: node.executable ? 0o555 : 0o444 });
  else if (node.type === 'symlink') fs.symlinkSync(node.target, file);
  else {
    fs.mkdirSync(file);
    for (const [name, child] of Object.entries(node.entries)) writeTree(path.join(file, name), child);
  }
}

/**
 * The store paths of a synthetic store of `count` paths, without writing anything. Stores of
 * different sizes share their paths but the root, which is named apart: its references differ.
 */
export function syntheticPaths(count, { seed = 1, storeDir = '/nix/store' } = {}) {
  return Array.from({ length: count }, (_, i) => {
    const name = i === count - 1 ? `synth-root-${count}` : `synth-${i}`;
    const digest = createHash('sha256').update(`narcache synthetic ${GENERATION} ${seed} ${name}`).digest();
    return `${storeDir}/${nix32Encode(digest.subarray(0, 20))}-${name}`;
  });
}

/**
 * Writes the `count` paths of a synthetic store into `storeRoot` (the directory that holds
 * `storeDir`'s files), skipping those present, and returns their registration (the text
 * `nix-store --load-db` and `narcache build --from-registration` read), their paths in
 * dependency order, and their total NAR size. The last path is the root: it refers to every
 * path nothing else refers to, so that its closure is the whole store.
 */
export function writeSyntheticStore(storeRoot, count, { seed = 1, storeDir = '/nix/store' } = {}) {
  const rng = random(seed).next;
  const pool = contentPool(rng, 8 << 20);
  const paths = syntheticPaths(count, { seed, storeDir });
  const referenced = new Set();
  const records = [];
  let narBytes = 0;
  for (let i = 0; i < count; i++) {
    let refs = referencesOf(i, rng);
    const size = pathSize(rng);
    if (i === count - 1) refs = [...new Set([...refs, ...paths.keys()].filter((r) => r === i || !referenced.has(r)))];
    for (const r of refs) if (r !== i) referenced.add(r);
    const refPaths = refs.map((r) => paths[r]).sort();
    const name = path.basename(paths[i]).slice(33);
    const tree = treeOf(name, size, refPaths, rng, pool);
    const nar = narOfTree(tree);
    narBytes += nar.length;
    const file = path.join(storeRoot, path.basename(paths[i]));
    if (!fs.existsSync(file)) {
      // Under another name until complete: an interrupted run leaves no short path to reuse.
      const temp = `${file}.partial-${process.pid}`;
      fs.rmSync(temp, { recursive: true, force: true });
      writeTree(temp, tree);
      fs.renameSync(temp, file);
    }
    const narHash = createHash('sha256').update(nar).digest('hex');
    records.push([paths[i], `sha256:${narHash}`, nar.length, '', refPaths.length, ...refPaths].join('\n'));
  }
  return { paths, root: paths[count - 1], registration: `${records.join('\n')}\n`, narBytes };
}
