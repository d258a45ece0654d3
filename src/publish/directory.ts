import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { LARGE_NARINFO_BYTES, parseNarinfoFile, readNarinfoText, type NarFile } from '../cache';
import { lockCacheDirectory } from '../cache-lock';
import { NarcacheError, systemReason } from '../errors';
import { limiter } from '../limit';
import { refuseInsideStore } from '../store-path';
import { publishFiles, readSmallFiles, regularFileSizes, verifyNar, type PackResult } from '../native';
import { narUrl, type Narinfo } from '../narinfo';
import { makeDurable, packFiles, type PackPathOptions } from '../pack';
import {
  cacheInfoText,
  checkCacheInfo,
  checkCacheInfoSize,
  type CacheInfo,
  type Destination,
  type NarinfoState,
  type NarinfoText,
} from './destination';

// Narinfos read at once to tell whether they can be relied on: each holds a descriptor for a moment.
const LOOKUPS_AT_ONCE = 32;
// Narinfos read, and NAR files looked at, per call into the Rust core.
const READS_PER_CALL = 2000;
// What a NAR file is read in, at most, when it is copied.
const READ_CHUNK = 1 << 20;

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
  protected unsynced: string[] = [];
  /** Releases the shared lock taken by open (see lockCacheDirectory). */
  private unlock?: () => void;
  /** Directories other than the cache's own that companions were published into (debuginfo/). */
  private readonly companionDirs = new Set<string>();

  constructor(dir: string) {
    this.location = path.resolve(dir);
  }

  async open(info: CacheInfo, storeRoot = info.storeDir): Promise<void> {
    await refuseInsideStore(this.location, [info.storeDir, storeRoot]);
    // Checked before anything is created: a cache of another store is left as it is.
    const infoPath = path.join(this.location, 'nix-cache-info');
    const existing = await this.readCacheInfo();
    if (existing !== undefined) checkCacheInfo(this.location, existing, info);
    for (const sub of ['', ...LAYOUT_DIRS]) {
      await fs.mkdir(path.join(this.location, sub), { recursive: true }).catch(writeError);
    }
    if (existing === undefined) await writeFileAtomic(infoPath, cacheInfoText(info));
    // A file system without locks leaves writers unlocked, as before; only prune needs the lock.
    this.unlock ??= await lockCacheDirectory(this.location, 'shared').catch(() => undefined);
    await this.removeLeftovers();
  }

  /**
   * Temporary files in the cache whose writer, the process whose PID
   * their name holds, no longer runs. (A writer in another PID namespace
   * sharing the directory would look dead: its write then fails, and the
   * cache stays true.)
   */
  async leftovers(): Promise<string[]> {
    return (await this.temporaryNames()).filter((name) => {
      const pid = TEMP_NAME.exec(path.posix.basename(name))?.[1];
      return pid !== undefined && !isRunning(Number(pid));
    });
  }

  /**
   * Files being written, or left by a writer, relative to the cache and
   * sorted: those under a temporary name beside the narinfos, in `nar/`
   * and in `debuginfo/`.
   */
  protected async temporaryNames(): Promise<string[]> {
    const found: string[] = [];
    for (const dir of ['', 'nar', 'debuginfo']) {
      const names = await fs.readdir(path.join(this.location, dir)).catch(() => []);
      found.push(...names.filter((n) => n.startsWith(TEMP_PREFIX)).map((n) => path.posix.join(dir, n)));
    }
    return found.sort();
  }

  protected async removeLeftovers(): Promise<void> {
    for (const file of await this.leftovers()) await fs.rm(path.join(this.location, file), { force: true });
  }

  /**
   * One listing of the directory tells which narinfos are there; one
   * counts as present only if it parses, is for its store path and names a
   * NAR file inside `nar/` of its FileSize, and a broken entry is then
   * written anew rather than kept. The Rust core reads the narinfos, and
   * looks at their NAR files, a batch of them per call.
   */
  async narinfoStates(paths: { hashPart: string; storePath: string }[]): Promise<Map<string, NarinfoState>> {
    const names = new Set(await fs.readdir(this.location).catch(writeError));
    const there = paths.filter(({ hashPart }) => names.has(`${hashPart}.narinfo`));
    const states = new Map<string, NarinfoState>();
    const lookup = limiter(LOOKUPS_AT_ONCE);
    const slow: Promise<void>[] = [];
    for (let start = 0; start < there.length; start += READS_PER_CALL) {
      const batch = there.slice(start, start + READS_PER_CALL);
      const narinfos = await this.readNarinfos(batch.map(({ hashPart }) => `${hashPart}.narinfo`));
      const parsed: { storePath: string; n: Narinfo; url: string }[] = [];
      batch.forEach(({ storePath }, i) => {
        const n = narinfos[i];
        // Gone since the listing: as if it had never been there.
        if (n instanceof Error && (n as NodeJS.ErrnoException).code === 'ENOENT') return;
        const url = n instanceof Error ? undefined : narUrl(n.url);
        if (n instanceof Error || n.storePath !== storePath || typeof url !== 'string') states.set(storePath, 'broken');
        else parsed.push({ storePath, n, url });
      });
      const sizes = await regularFileSizes(parsed.map(({ url }) => path.join(this.location, url)));
      parsed.forEach(({ storePath, n, url }, i) => {
        // A NAR file right in nar/ is what every cache holds, a regular file there is
        // decided by its size; any other is checked as verify checks it.
        const size = sizes[i];
        if (url.split('/').length === 2 && size !== null) states.set(storePath, size === n.fileSize ? 'present' : 'broken');
        else slow.push(lookup(async () => void states.set(storePath, await this.narState(n, url))));
      });
    }
    await Promise.all(slow);
    return states;
  }

  /**
   * readNarinfo of each file, in one call into the Rust core (one over
   * 1 MiB on its own), for a batch of a few thousand: a Narinfo, or the
   * error readNarinfo would have thrown (with code ENOENT if the file is
   * missing).
   */
  async readNarinfos(files: string[]): Promise<(Narinfo | Error)[]> {
    const read = await readSmallFiles(files.map((file) => path.join(this.location, file)), LARGE_NARINFO_BYTES);
    const narinfos: (Narinfo | Error)[] = [];
    for (const [i, file] of files.entries()) {
      const { text, tooLarge, missing, error } = read[i];
      if (tooLarge != null) narinfos.push(await this.readNarinfo(file).catch((e: Error) => e));
      else if (missing) narinfos.push(Object.assign(new Error(`${file} is missing`), { code: 'ENOENT' }));
      else if (text == null) narinfos.push(new NarcacheError(`cannot be read: ${error}`));
      else narinfos.push(parsedOrError(text, file));
    }
    return narinfos;
  }

  private async narState(n: Narinfo, url: string): Promise<NarinfoState> {
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
    return {
      id: real,
      size: stat.size,
      check: (compression, narSize, index) => verifyNar(real, compression, narSize, index),
      // A buffer of a MiB for each of tens of thousands of small files keeps the collector busy.
      read: () => createReadStream(real, { highWaterMark: Math.min(READ_CHUNK, Math.max(stat.size, 1)) }),
    };
  }

  /**
   * The Rust core writes the file itself, under a temporary name until it
   * is complete; it is made durable with the next narinfos, not on its own.
   */
  async writeNar(source: string, options: PackPathOptions): Promise<PackResult> {
    const [packed] = await this.writeNars([{ source, options }]);
    return packed;
  }

  async writeNars(paths: { source: string; options: PackPathOptions }[]): Promise<PackResult[]> {
    const packed = await packFiles(paths, this.location);
    this.unsynced.push(...packed.map((p) => path.join(this.location, p.url)));
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
  /** Files written before (NARs), made durable with these (see makeDurable), then let out of the page cache. */
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

function parsedOrError(text: string, file: string): Narinfo | Error {
  try {
    return parseNarinfoFile(text, file);
  } catch (e) {
    return e as Error;
  }
}

/** A failed file system call as one line: the path and the system's reason. */
export function writeError(e: NodeJS.ErrnoException): never {
  throw new NarcacheError(`cannot write ${e.path ?? 'the cache'}: ${systemReason(e)}`);
}
