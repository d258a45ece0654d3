import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseNarinfoFile, readNarinfoText, type NarFile } from '../cache';
import { NarcacheError, systemReason } from '../errors';
import { limiter } from '../limit';
import { refuseInsideStore } from '../store-path';
import { verifyNar, type PackResult } from '../native';
import { narUrl, type Narinfo } from '../narinfo';
import { makeDurable, packFile, type PackPathOptions } from '../pack';
import { cacheInfoText, checkCacheInfo, checkCacheInfoSize, type Destination, type NarinfoState, type NarinfoText } from './destination';

// Temporary files written at once: a batch may hold thousands of narinfos,
// and each holds a descriptor while it is written (ulimit -n may be 1024).
const WRITES_AT_ONCE = 32;

/** Names of files being written; never referenced by anything in a cache. */
export const TEMP_PREFIX = '.tmp-narcache-';
/** A temporary name, `<prefix><pid>-…`, here and in the Rust core. */
const TEMP_NAME = new RegExp(`^${TEMP_PREFIX.replace(/\./g, '\\.')}(\\d+)-`);

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it runs, as another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The directories Nix may try to create when it opens a file:// cache;
 * present in advance, they let a cache be used from a read-only mount.
 */
const LAYOUT_DIRS = ['nar', 'realisations', 'log', 'debuginfo', 'build-trace-v2'];

/** A flat-file binary cache in a local directory, as `file://` reads it. */
export class DirectoryDestination implements Destination {
  readonly location: string;
  /** NAR files written since the last sync: the next narinfos wait for them. */
  private unsynced: string[] = [];

  constructor(dir: string) {
    this.location = path.resolve(dir);
  }

  async open(storeDir: string, storeRoot = storeDir): Promise<void> {
    await refuseInsideStore(this.location, [storeDir, storeRoot]);
    // Checked before anything is created: a cache of another store is left as it is.
    const infoPath = path.join(this.location, 'nix-cache-info');
    const existing = await this.readCacheInfo();
    if (existing !== undefined) checkCacheInfo(this.location, existing, storeDir);
    for (const sub of ['', ...LAYOUT_DIRS]) {
      await fs.mkdir(path.join(this.location, sub), { recursive: true }).catch(writeError);
    }
    if (existing === undefined) await writeFileAtomic(infoPath, cacheInfoText(storeDir));
    await this.removeLeftovers();
  }

  /**
   * Temporary files in the cache and its `nar/` whose writer, the process
   * whose PID their name holds, no longer runs. (A writer in another PID
   * namespace sharing the directory would look dead: its write then fails,
   * and the cache stays true.)
   */
  async leftovers(): Promise<string[]> {
    const found: string[] = [];
    for (const dir of ['', 'nar']) {
      const names = await fs.readdir(path.join(this.location, dir)).catch(() => []);
      for (const name of names) {
        const pid = TEMP_NAME.exec(name)?.[1];
        if (pid !== undefined && !isRunning(Number(pid))) found.push(path.posix.join(dir, name));
      }
    }
    return found.sort();
  }

  protected async removeLeftovers(): Promise<void> {
    for (const file of await this.leftovers()) await fs.rm(path.join(this.location, file), { force: true });
  }

  /**
   * A narinfo counts as present only if it parses, is for `storePath` and
   * names a NAR file inside `nar/` of its FileSize: a directory tells that
   * at no cost, and a broken entry is then written anew rather than kept.
   */
  async narinfoState(hashPart: string, storePath: string): Promise<NarinfoState> {
    let n: Narinfo;
    try {
      n = await this.readNarinfo(`${hashPart}.narinfo`);
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'broken';
    }
    const url = narUrl(n.url);
    if (n.storePath !== storePath || typeof url !== 'string') return 'broken';
    const file = await this.narFile(url);
    return 'problem' in file || file.size !== n.fileSize ? 'broken' : 'present';
  }

  /** The text of `nix-cache-info`, or undefined if there is none. */
  async readCacheInfo(): Promise<string | undefined> {
    const file = path.join(this.location, 'nix-cache-info');
    let handle;
    try {
      handle = await fs.open(file, 'r');
    } catch (e) {
      // A missing cache, or a file in its place, which mkdir reports.
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw writeError(e as NodeJS.ErrnoException);
    }
    try {
      const stat = await handle.stat();
      if (stat.isDirectory()) throw new NarcacheError(`${file} is a directory, not a file`);
      checkCacheInfoSize(this.location, stat.size);
      return await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  }

  /** Reads and parses a narinfo; the error says what is wrong, without the file name. */
  async readNarinfo(file: string): Promise<Narinfo> {
    const full = path.join(this.location, file);
    const { size } = await fs.stat(full);
    return parseNarinfoFile(await readNarinfoText(size, () => fs.readFile(full, 'utf8')), file);
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

  /**
   * The Rust core writes the file itself, under a temporary name until it
   * is complete; it is made durable with the next narinfos, not on its own.
   */
  async writeNar(source: string, options: PackPathOptions): Promise<PackResult> {
    const packed = await packFile(source, this.location, options);
    this.unsynced.push(path.join(this.location, packed.url));
    return packed;
  }

  async writeNarinfos(narinfos: NarinfoText[]): Promise<void> {
    if (!narinfos.length) return;
    const nars = this.unsynced;
    this.unsynced = [];
    try {
      await writeFilesAtomic(
        narinfos.map((n) => ({ target: this.narinfoPath(n.hashPart), text: n.text })),
        { alsoSync: nars },
      );
    } catch (e) {
      this.unsynced.push(...nars);
      throw e;
    }
  }

  async flush(): Promise<void> {
    await makeDurable([this.location]);
  }

  /** Nothing stays open between writes. */
  close(): void {}

  private narinfoPath(hashPart: string): string {
    return path.join(this.location, `${hashPart}.narinfo`);
  }
}

export interface WriteFileOptions {
  /** Permissions of the files (default 0644). */
  mode?: number;
  /** Replace a file already at a target (default); if false, fail instead. */
  overwrite?: boolean;
  /** Files written before, made durable with these (see makeDurable). */
  alsoSync?: string[];
}

/** Writes `text` to `target` as writeFilesAtomic does. */
export function writeFileAtomic(target: string, text: string, options: WriteFileOptions = {}): Promise<void> {
  return writeFilesAtomic([{ target, text }], options);
}

/**
 * Writes each text under a temporary name beside its target, makes them
 * durable with one sync, then renames them into place in order (or, not to
 * overwrite, hard-links each, which fails if its target exists).
 */
export async function writeFilesAtomic(
  files: { target: string; text: string }[],
  options: WriteFileOptions = {},
): Promise<void> {
  const temps = files.map(({ target }) =>
    path.join(path.dirname(target), `${TEMP_PREFIX}${process.pid}-${Math.random().toString(36).slice(2)}-${path.basename(target)}`),
  );
  let target: string | undefined;
  try {
    const write = limiter(WRITES_AT_ONCE);
    // All settled before a failure is handled, so that none is created after the clean-up.
    const written = await Promise.allSettled(files.map((file, i) => write(() => writeNew(temps[i], file.text, options.mode))));
    const failed = written.find((w): w is PromiseRejectedResult => w.status === 'rejected');
    if (failed) throw failed.reason;
    await makeDurable([...(options.alsoSync ?? []), ...temps]);
    for (const [i, file] of files.entries()) {
      target = file.target;
      if (options.overwrite ?? true) {
        await fs.rename(temps[i], target);
      } else {
        await fs.link(temps[i], target);
        await fs.rm(temps[i]);
      }
    }
  } catch (e) {
    await Promise.all(temps.map((t) => fs.rm(t, { force: true }).catch(() => undefined)));
    if (e instanceof NarcacheError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new NarcacheError(`${target} already exists`);
    throw writeError(e as NodeJS.ErrnoException);
  }
}

async function writeNew(file: string, text: string, mode: number | undefined): Promise<void> {
  const handle = await fs.open(file, 'wx', mode ?? 0o644);
  try {
    // open's mode is filtered by the umask; a mode given is meant exactly.
    if (mode !== undefined) await handle.chmod(mode);
    await handle.writeFile(text);
  } finally {
    await handle.close();
  }
}

/** A failed file system call as one line: the path and the system's reason. */
function writeError(e: NodeJS.ErrnoException): never {
  throw new NarcacheError(`cannot write ${e.path ?? 'the cache'}: ${systemReason(e)}`);
}
