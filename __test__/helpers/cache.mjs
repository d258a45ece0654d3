// Helpers that look at flat-file binary caches (ours and Nix's) independently of narcache:
// an own nix32, streamed file hashing, a strict narinfo line parser and file snapshots.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

// ---------------------------------------------------------------------------------------
// nix32 (Nix's base32), written from FORMATS.md, checked against `nix-hash --to-base32`

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

export function nix32Encode(buf) {
  const len = buf.length;
  const n = Math.ceil((len * 8) / 5);
  let s = '';
  for (let i = 0; i < n; i++) {
    const b = (n - 1 - i) * 5;
    const j = b >> 3;
    const k = b & 7;
    const c = (buf[j] >> k) | (j + 1 < len ? buf[j + 1] << (8 - k) : 0);
    s += NIX32_ALPHABET[c & 31];
  }
  return s;
}

export function nix32Decode(s) {
  const len = Math.floor((s.length * 5) / 8);
  const out = Buffer.alloc(len);
  for (let i = 0; i < s.length; i++) {
    const digit = NIX32_ALPHABET.indexOf(s[s.length - 1 - i]);
    if (digit < 0) throw new Error(`invalid nix32 character ${JSON.stringify(s[s.length - 1 - i])}`);
    const b = i * 5;
    const j = b >> 3;
    const k = b & 7;
    out[j] |= (digit << k) & 0xff;
    const carry = digit >> (8 - k);
    if (carry) {
      if (j + 1 < len) out[j + 1] |= carry;
      else throw new Error('invalid nix32 string (excess bits)');
    }
  }
  return out;
}

export const NIX32_RE = /^[0-9a-df-np-sv-z]{52}$/;

// ---------------------------------------------------------------------------------------
// hashing files, streamed

/** sha256 (hex + nix32) and size of a file, streamed. */
export function hashFile(file) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let size = 0;
    fs.createReadStream(file, { highWaterMark: 1 << 20 })
      .on('data', (b) => {
        h.update(b);
        size += b.length;
      })
      .on('error', reject)
      .on('end', () => {
        const d = h.digest();
        resolve({ hex: d.toString('hex'), nix32: nix32Encode(d), size });
      });
  });
}

/** sha256 + size of the decompressed content of `file` (compression 'zstd' | 'xz' | 'none'). */
export function hashDecompressed(file, compression) {
  if (compression === 'none') return hashFile(file);
  const [cmd, args] = {
    zstd: ['zstd', ['-d', '-c', '-q', '--', file]],
    xz: ['xz', ['-d', '-c', '--', file]],
    bzip2: ['bzip2', ['-d', '-c', '--', file]],
  }[compression] ?? [null, null];
  if (!cmd) return Promise.reject(new Error(`unknown compression ${compression}`));
  return hashCommandOutput(cmd, args);
}

// ---------------------------------------------------------------------------------------
// narinfo

export const EXT = { xz: '.nar.xz', zstd: '.nar.zst', bzip2: '.nar.bz2', none: '.nar' };

/** The 32-char hash part of a store path or base name. */
export function hashPart(p) {
  return path.basename(p).slice(0, 32);
}

/**
 * Strictly split a narinfo into [key, value] pairs. Throws on anything that is not
 * `Key: value\n` (missing final newline, CR, empty lines, no ': ').
 */
export function narinfoLines(text) {
  if (!text.endsWith('\n')) throw new Error(`narinfo does not end with a newline: ${JSON.stringify(text)}`);
  if (text.includes('\r')) throw new Error('narinfo contains a carriage return');
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      const m = /^([A-Za-z]+): (.*)$/.exec(line);
      if (!m) throw new Error(`bad narinfo line ${JSON.stringify(line)}`);
      return [m[1], m[2]];
    });
}

/** narinfo text → { StorePath, URL, …, Sig: [..] } (first value per key, Sig collected). */
export function narinfoFields(text) {
  const f = { Sig: [] };
  for (const [k, v] of narinfoLines(text)) {
    if (k === 'Sig') f.Sig.push(v);
    else if (!(k in f)) f[k] = v;
  }
  return f;
}

/** Read every <hashpart>.narinfo of a cache directory → Map(hashpart → text). */
export async function readNarinfos(cacheDir) {
  const out = new Map();
  for (const name of await fsp.readdir(cacheDir)) {
    if (name.endsWith('.narinfo')) {
      out.set(name.slice(0, -'.narinfo'.length), await fsp.readFile(path.join(cacheDir, name), 'utf8'));
    }
  }
  return out;
}

/** All *.narinfo files anywhere below dir (relative paths); [] when dir does not exist. */
export async function findNarinfos(dir) {
  const all = await listTree(dir);
  return [...all.keys()].filter((p) => p.endsWith('.narinfo'));
}

// ---------------------------------------------------------------------------------------
// snapshots of directory trees

/**
 * Map(relative path → { type, ino, size, mtimeNs, ctimeNs, mode }) for everything below dir
 * (dir itself excluded). Returns an empty map when dir does not exist.
 */
export async function listTree(dir) {
  const out = new Map();
  async function walk(rel) {
    let names;
    try {
      names = await fsp.readdir(path.join(dir, rel));
    } catch (e) {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return;
      throw e;
    }
    for (const name of names.sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await fsp.lstat(path.join(dir, r), { bigint: true });
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
      out.set(r, {
        type,
        ino: st.ino,
        size: st.size,
        mtimeNs: st.mtimeNs,
        ctimeNs: st.ctimeNs,
        mode: Number(st.mode & 0o7777n),
      });
      if (type === 'dir') await walk(r);
    }
  }
  await walk('');
  return out;
}

/**
 * One snapshot entry as a string for ava diffs: type, inode and size, plus the mtime for
 * files and symlinks (directories legitimately change mtime when entries are added).
 */
export function describeEntry(v) {
  if (!v) return 'MISSING';
  if (v.type === 'dir') return `dir ino=${v.ino}`;
  return `${v.type} ino=${v.ino} size=${v.size} mtime=${v.mtimeNs}`;
}

/** A whole snapshot as a plain object of describeEntry strings. */
export function printable(snapshot) {
  const o = {};
  for (const [k, v] of snapshot) o[k] = describeEntry(v);
  return o;
}

/** A narinfo without the lines whose keys are in `keys` (a Set), byte for byte otherwise. */
export function withoutFields(text, keys) {
  return narinfoLines(text)
    .filter(([k]) => !keys.has(k))
    .map(([k, v]) => `${k}: ${v}\n`)
    .join('');
}

/** Map(relative path → sha256 hex of the file, or the type of anything else) for everything below dir. */
export async function contentSnapshot(dir) {
  const out = new Map();
  for (const [rel, v] of await listTree(dir)) {
    out.set(rel, v.type === 'file' ? `file ${(await hashFile(path.join(dir, rel))).hex}` : v.type);
  }
  return out;
}

/** sha256 (hex and nix32) and size of what a command prints, streamed; rejects unless it exits 0. */
export function hashCommandOutput(cmd, args, { env = process.env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const h = createHash('sha256');
    let size = 0;
    const err = [];
    child.stdout.on('data', (b) => {
      h.update(b);
      size += b.length;
    });
    child.stderr.on('data', (b) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${Buffer.concat(err)}`));
      const d = h.digest();
      resolve({ hex: d.toString('hex'), nix32: nix32Encode(d), size });
    });
  });
}
