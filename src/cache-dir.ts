import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Cache } from './cache';
import { NarcacheError } from './errors';
import { refuseInsideStore } from './store-path';
import { DirectoryDestination, TEMP_PREFIX } from './publish/directory';

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

  async narFiles(): Promise<string[]> {
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
    return found.sort();
  }
}
