import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { lockCacheDirectory } from '../cache-lock';
import { NarcacheError } from '../errors';
import type { PackResult } from '../native';
import { makeDurable, packFile, type PackPathOptions } from '../pack';
import { cacheInfoText, checkCacheInfo, type Destination, type NarinfoText } from './destination';

/** Names of files being written; never referenced by anything in a cache. */
export const TEMP_PREFIX = '.tmp-narcache-';

/**
 * The directories Nix may try to create when it opens a file:// cache;
 * present in advance, they let a cache be used from a read-only mount.
 */
const LAYOUT_DIRS = ['nar', 'realisations', 'log', 'debuginfo', 'build-trace-v2'];

/** A flat-file binary cache in a local directory, as `file://` reads it. */
export class DirectoryDestination implements Destination {
  readonly location: string;
  /** NAR files written since the last sync: the next narinfos wait for them. */
  protected unsynced: string[] = [];
  /** Releases the shared lock taken by open (see lockCacheDirectory). */
  private unlock?: () => void;

  constructor(dir: string) {
    this.location = path.resolve(dir);
  }

  async open(storeDir: string): Promise<void> {
    for (const sub of ['', ...LAYOUT_DIRS]) {
      await fs.mkdir(path.join(this.location, sub), { recursive: true }).catch(writeError);
    }
    const infoPath = path.join(this.location, 'nix-cache-info');
    const existing = await fs.readFile(infoPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw writeError(e);
    });
    if (existing === undefined) await writeFileAtomic(infoPath, cacheInfoText(storeDir));
    else checkCacheInfo(this.location, existing, storeDir);
    // A file system without locks leaves writers unlocked, as before; only prune needs the lock.
    this.unlock ??= await lockCacheDirectory(this.location, 'shared').catch(() => undefined);
  }

  async hasNarinfo(hashPart: string): Promise<boolean> {
    return fs.access(this.narinfoPath(hashPart)).then(
      () => true,
      () => false,
    );
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

  /** Releases the lock open took; no file stays open between writes. */
  close(): void {
    this.unlock?.();
    this.unlock = undefined;
  }

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
  const temps = files.map(({ target }) => temporaryName(target));
  let target: string | undefined;
  try {
    await Promise.all(files.map((file, i) => writeNew(temps[i], file.text, options.mode)));
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

/** A name beside `target` to write it under until it is complete. */
export function temporaryName(target: string): string {
  return path.join(path.dirname(target), `${TEMP_PREFIX}${process.pid}-${Math.random().toString(36).slice(2)}-${path.basename(target)}`);
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
export function writeError(e: NodeJS.ErrnoException): never {
  const reason = e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  throw new NarcacheError(`cannot write ${e.path ?? 'the cache'}: ${reason}`);
}
