import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { NarcacheError } from './errors';
import { parseNarinfo, type Narinfo } from './narinfo';
import { TEMP_PREFIX } from './publish/directory';

// Far more than any narinfo needs; a larger file is refused unread.
const MAX_NARINFO_BYTES = 1 << 20;

/** The narinfo files of a cache directory (names, sorted), without those being written. */
export async function listNarinfoFiles(cache: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(cache);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new NarcacheError(
      `${cache}: ${code === 'ENOENT' ? 'no such directory' : code === 'ENOTDIR' ? 'not a directory' : (e as Error).message}`,
    );
  }
  return names.filter((n) => n.endsWith('.narinfo') && !n.startsWith(TEMP_PREFIX)).sort();
}

/** Reads and parses `<cache>/<file>`; the error says what is wrong, without the file name. */
export async function readNarinfoFile(cache: string, file: string): Promise<Narinfo> {
  const full = path.join(cache, file);
  const stat = await fs.stat(full);
  if (stat.size > MAX_NARINFO_BYTES) throw new NarcacheError(`is ${stat.size} bytes, too large for a narinfo`);
  try {
    return parseNarinfo(await fs.readFile(full, 'utf8'), file);
  } catch (e) {
    // parseNarinfo names its origin: strip it, the caller names the file.
    throw new NarcacheError(`does not parse: ${(e as Error).message.replace(`${file}: `, '')}`);
  }
}
