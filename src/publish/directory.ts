import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { NarcacheError, systemReason } from '../errors';
import { refuseInsideStore } from '../store-path';
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
  private unsynced: string[] = [];

  constructor(dir: string) {
    this.location = path.resolve(dir);
  }

  async open(storeDir: string, storeRoot = storeDir): Promise<void> {
    await refuseInsideStore(this.location, [storeDir, storeRoot]);
    // Checked before anything is created: a cache of another store is left as it is.
    const infoPath = path.join(this.location, 'nix-cache-info');
    const existing = await fs.readFile(infoPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
      // A missing cache, or a file in its place, which mkdir reports.
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
      if (e.code === 'EISDIR') throw new NarcacheError(`${infoPath} is a directory, not a file`);
      throw writeError(e);
    });
    if (existing !== undefined) checkCacheInfo(this.location, existing, storeDir);
    for (const sub of ['', ...LAYOUT_DIRS]) {
      await fs.mkdir(path.join(this.location, sub), { recursive: true }).catch(writeError);
    }
    if (existing === undefined) await writeFileAtomic(infoPath, cacheInfoText(storeDir));
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
