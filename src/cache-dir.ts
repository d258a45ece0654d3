import { createReadStream, createWriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { checkedStream, type Cache, type CacheFile, type NarFile } from './cache';
import { lockCacheDirectory } from './cache-lock';
import { NarcacheError } from './errors';
import { verifyNar } from './native';
import { parseNarinfo, type Narinfo } from './narinfo';
import { DirectoryDestination, TEMP_PREFIX, temporaryName, writeError } from './publish/directory';
import { runWithBudget } from './schedule';

// Calls on files (stat, unlink) at once: they wait on the disk, not the CPU.
const FILE_CALLS = 32;
const READ_CHUNK = 1 << 20;

// Far more than any narinfo needs; a larger file is refused unread.
export const MAX_NARINFO_BYTES = 1 << 20;

/** Refuses a narinfo of `size` bytes before it is read, if it is too large to be one. */
export function checkNarinfoSize(size: number): void {
  if (size > MAX_NARINFO_BYTES) throw new NarcacheError(`is ${size} bytes, too large for a narinfo`);
}

/** Parses the text of the narinfo `file`; the error says what is wrong, without the file name. */
export function parseNarinfoFile(text: string, file: string): Narinfo {
  try {
    return parseNarinfo(text, file);
  } catch (e) {
    // parseNarinfo names its origin: strip it, the caller names the file.
    throw new NarcacheError(`does not parse: ${(e as Error).message.replace(`${file}: `, '')}`);
  }
}

/** A flat-file binary cache in a local directory, read as well as written. */
export class DirectoryCache extends DirectoryDestination implements Cache {
  async narinfoFiles(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.location);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new NarcacheError(
        `${this.location}: ${code === 'ENOENT' ? 'no such directory' : code === 'ENOTDIR' ? 'not a directory' : (e as Error).message}`,
      );
    }
    return names.filter((n) => n.endsWith('.narinfo') && !n.startsWith(TEMP_PREFIX)).sort();
  }

  async readNarinfo(file: string): Promise<Narinfo> {
    return parseNarinfoFile(await this.readNarinfoText(file), file);
  }

  async readNarinfoText(file: string): Promise<string> {
    const full = path.join(this.location, file);
    checkNarinfoSize((await fs.stat(full)).size);
    return fs.readFile(full, 'utf8');
  }

  readCacheInfo(): Promise<string | undefined> {
    return fs.readFile(path.join(this.location, 'nix-cache-info'), 'utf8').catch(() => undefined);
  }

  /** A regular file that does not lead out of `nar/` through a symlink; its real path is its id. */
  async narFile(url: string): Promise<NarFile | { problem: string }> {
    let real: string;
    try {
      real = await fs.realpath(path.join(this.location, url));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return { problem: code === 'ENOENT' ? 'is missing' : `cannot be read: ${(e as Error).message}` };
    }
    const narDir = await fs.realpath(path.join(this.location, 'nar')).catch(() => path.join(this.location, 'nar'));
    if (!real.startsWith(narDir + path.sep)) return { problem: `leads outside nar/ (to ${real})` };
    const stat = await fs.stat(real);
    if (!stat.isFile()) return { problem: 'is not a regular file' };
    return {
      id: real,
      size: stat.size,
      check: (compression, index) => verifyNar(real, compression, index),
      // A buffer of a MiB for each of tens of thousands of small files keeps the collector busy.
      read: () => createReadStream(real, { highWaterMark: Math.min(READ_CHUNK, Math.max(stat.size, 1)) }),
    };
  }

  async files(dir: string, suffix: string): Promise<string[]> {
    const names = await fs.readdir(path.join(this.location, dir)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return [];
      throw new NarcacheError(`${path.join(this.location, dir)}: ${e.message}`);
    });
    return names
      .filter((n) => n.endsWith(suffix) && !n.startsWith(TEMP_PREFIX))
      .map((n) => dir + n)
      .sort();
  }

  async readFile(name: string, maxBytes: number): Promise<Buffer> {
    try {
      const file = path.join(this.location, name);
      const { size } = await fs.stat(file);
      if (size > maxBytes) throw new NarcacheError(`is ${size} bytes, more than the ${maxBytes} checked`);
      return await fs.readFile(file);
    } catch (e) {
      if (e instanceof NarcacheError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new NarcacheError(code === 'ENOENT' ? 'cannot be read: it is missing' : `cannot be read: ${(e as Error).message}`);
    }
  }

  async narFiles(): Promise<CacheFile[]> {
    const found: string[] = [];
    const walk = async (rel: string) => {
      let entries;
      try {
        entries = await fs.readdir(path.join(this.location, rel), { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        if (e.name.startsWith(TEMP_PREFIX)) continue;
        if (e.isDirectory()) await walk(`${rel}/${e.name}`);
        else found.push(`${rel}/${e.name}`);
      }
    };
    await walk('nar');
    return this.stat(found.sort());
  }

  async temporaryFiles(): Promise<CacheFile[]> {
    const found: string[] = [];
    for (const sub of ['', 'nar']) {
      const names = await fs.readdir(path.join(this.location, sub)).catch(() => []);
      found.push(...names.filter((n) => n.startsWith(TEMP_PREFIX)).map((n) => path.posix.join(sub, n)));
    }
    return this.stat(found);
  }

  async remove(files: (string | CacheFile)[]): Promise<void> {
    let failure: NodeJS.ErrnoException | undefined;
    await runWithBudget(files, FILE_CALLS, () => 1, async (f) => {
      await fs.unlink(path.join(this.location, typeof f === 'string' ? f : f.file)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') failure ??= e;
      });
    }, () => failure !== undefined);
    if (failure) writeError(failure);
  }

  /** Streams the file into a temporary one beside its target, renamed into place once checked. */
  async copyNar(url: string, from: NarFile, expected: { fileHash: Buffer; fileSize: number }): Promise<boolean> {
    const target = path.join(this.location, url);
    const temp = temporaryName(target);
    try {
      await pipeline(checkedStream(from.read(), expected, url), createWriteStream(temp, { flags: 'wx', mode: 0o644 }));
      await fs.rename(temp, target);
    } catch (e) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      if (e instanceof NarcacheError || !(e as NodeJS.ErrnoException).syscall) throw e;
      writeError(e as NodeJS.ErrnoException);
    }
    this.unsynced.push(target);
    return true;
  }

  /** A file system without locks leaves those that share the lock unlocked, as open does. */
  lock(mode: 'shared' | 'exclusive', onWait?: () => void): Promise<() => void> {
    const locking = lockCacheDirectory(this.location, mode, onWait);
    return mode === 'shared' ? locking.catch(() => () => undefined) : locking;
  }

  /** The files (relative to the cache) that still exist, with their sizes and times. */
  private async stat(files: string[]): Promise<CacheFile[]> {
    const found: (CacheFile | undefined)[] = new Array(files.length);
    await runWithBudget([...files.keys()], FILE_CALLS, () => 1, async (i) => {
      const s = await fs.lstat(path.join(this.location, files[i])).catch(() => undefined);
      if (s) found[i] = { file: files[i], size: s.size, modified: s.mtimeMs };
    }, () => false);
    return found.filter((f) => f !== undefined);
  }
}
