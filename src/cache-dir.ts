import { createWriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { checkedStream, readNarinfoText, type Cache, type CacheFile, type NarFile } from './cache';
import { lockCacheDirectory } from './cache-lock';
import { NarcacheError } from './errors';
import { refuseInsideStore } from './store-path';
import { DirectoryDestination, TEMP_PREFIX, temporaryName, writeError } from './publish/directory';
import { runWithBudget } from './schedule';

// Calls on files (stat, unlink) at once: they wait on the disk, not the CPU.
const FILE_CALLS = 32;

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

  /** As Cache says: undefined too if it cannot be read (or is too large to be one). */
  override readCacheInfo(): Promise<string | undefined> {
    return super.readCacheInfo().catch(() => undefined);
  }

  async readNarinfoText(file: string): Promise<string> {
    const full = path.join(this.location, file);
    const { size } = await fs.stat(full);
    return readNarinfoText(size, () => fs.readFile(full, 'utf8'));
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

  async openForUpdate(storeDir: string): Promise<void> {
    await refuseInsideStore(this.location, [storeDir]);
    await this.removeLeftovers();
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
    return this.stat(await this.temporaryNames());
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
