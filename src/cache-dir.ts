import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Cache, NarFile } from './cache';
import { NarcacheError } from './errors';
import { verifyNar } from './native';
import { parseNarinfo, type Narinfo } from './narinfo';
import { DirectoryDestination, TEMP_PREFIX } from './publish/directory';

// Far more than any narinfo needs; a larger file is refused unread.
const MAX_NARINFO_BYTES = 1 << 20;

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
    const full = path.join(this.location, file);
    checkNarinfoSize((await fs.stat(full)).size);
    return parseNarinfoFile(await fs.readFile(full, 'utf8'), file);
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
    return { id: real, size: stat.size, check: (compression, narSize) => verifyNar(real, compression, narSize) };
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
