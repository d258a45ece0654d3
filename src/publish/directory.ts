import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { lockCacheDirectory } from '../cache-lock';
import { NarcacheError } from '../errors';
import { publishFiles, type PackResult } from '../native';
import { makeDurable, packFile, type PackPathOptions } from '../pack';
import { cacheInfoText, checkCacheInfo, type CacheInfo, type Destination, type NarinfoText } from './destination';

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
  /** Directories other than the cache's own that companions were published into (debuginfo/). */
  private readonly companionDirs = new Set<string>();

  constructor(dir: string) {
    this.location = path.resolve(dir);
  }

  async open(info: CacheInfo): Promise<void> {
    for (const sub of ['', ...LAYOUT_DIRS]) {
      await fs.mkdir(path.join(this.location, sub), { recursive: true }).catch(writeError);
    }
    const infoPath = path.join(this.location, 'nix-cache-info');
    const existing = await fs.readFile(infoPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw writeError(e);
    });
    if (existing === undefined) await writeFileAtomic(infoPath, cacheInfoText(info));
    else checkCacheInfo(this.location, existing, info);
    // A file system without locks leaves writers unlocked, as before; only prune needs the lock.
    this.unlock ??= await lockCacheDirectory(this.location, 'shared').catch(() => undefined);
  }

  /** One listing of the directory, however many paths are asked about. */
  async presentNarinfos(hashParts: string[]): Promise<Set<string>> {
    const names = new Set(await fs.readdir(this.location).catch(writeError));
    return new Set(hashParts.filter((h) => names.has(`${h}.narinfo`)));
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
      const companions = narinfos.map((n) =>
        (n.companions ?? []).map((c) => ({ target: path.join(this.location, c.name), text: c.data, keepExisting: c.keepExisting })),
      );
      for (const c of companions.flat()) {
        if (path.dirname(c.target) !== this.location) this.companionDirs.add(path.dirname(c.target));
      }
      await writeFilesAtomic(
        narinfos.flatMap((n, i) => [...companions[i], { target: this.narinfoPath(n.hashPart), text: n.text }]),
        { alsoSync: nars },
      );
    } catch (e) {
      this.unsynced.push(...nars);
      throw e;
    }
  }

  async flush(): Promise<void> {
    await makeDurable([this.location, ...this.companionDirs]);
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

export interface FileText {
  target: string;
  text: string | Uint8Array;
  /** Leave a file already at the target as it is (whatever `overwrite` says). */
  keepExisting?: boolean;
}

/**
 * Writes each text under a temporary name beside its target, makes them
 * durable with one sync, then renames them into place in order (or, not to
 * overwrite, hard-links each, which fails if its target exists). The Rust
 * core does it on a thread of its own with one file open at a time, however
 * many there are; the message of a failure names the file.
 */
export async function writeFilesAtomic(files: FileText[], options: WriteFileOptions = {}): Promise<void> {
  const native = files.map((f) => ({ target: f.target, contents: Buffer.from(f.text), keepExisting: f.keepExisting }));
  await publishFiles(native, options.alsoSync ?? [], options.mode, options.overwrite ?? true).catch((e: Error) => {
    throw new NarcacheError(e.message);
  });
}

/** A name beside `target` to write it under until it is complete. */
export function temporaryName(target: string): string {
  return path.join(path.dirname(target), `${TEMP_PREFIX}${process.pid}-${Math.random().toString(36).slice(2)}-${path.basename(target)}`);
}

/** A failed file system call as one line: the path and the system's reason. */
export function writeError(e: NodeJS.ErrnoException): never {
  const reason = e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  throw new NarcacheError(`cannot write ${e.path ?? 'the cache'}: ${reason}`);
}
