import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { NarcacheError } from '../errors';
import type { PackResult } from '../native';
import { packPath, type PackPathOptions } from '../pack';
import { cacheInfoText, checkCacheInfo, type Destination } from './destination';

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
  }

  async hasNarinfo(hashPart: string): Promise<boolean> {
    return fs.access(this.narinfoPath(hashPart)).then(
      () => true,
      () => false,
    );
  }

  /** The Rust core writes the file itself, under a temporary name until it is complete and durable. */
  writeNar(source: string, options: PackPathOptions): Promise<PackResult> {
    return packPath(source, this.location, options);
  }

  async writeNarinfo(hashPart: string, text: string): Promise<void> {
    await writeFileAtomic(this.narinfoPath(hashPart), text);
  }

  /** Nothing stays open between writes. */
  close(): void {}

  private narinfoPath(hashPart: string): string {
    return path.join(this.location, `${hashPart}.narinfo`);
  }
}

export interface WriteFileOptions {
  /** Permissions of the file (default 0644). */
  mode?: number;
  /** Replace a file already at `target` (default); if false, fail instead. */
  overwrite?: boolean;
}

/**
 * Writes `text` under a temporary name beside `target`, makes it durable,
 * then renames it into place (or, not to overwrite, hard-links it, which
 * fails if `target` exists).
 */
export async function writeFileAtomic(target: string, text: string, options: WriteFileOptions = {}): Promise<void> {
  const temp = path.join(
    path.dirname(target),
    `${TEMP_PREFIX}${process.pid}-${Math.random().toString(36).slice(2)}-${path.basename(target)}`,
  );
  try {
    const handle = await fs.open(temp, 'wx', options.mode ?? 0o644);
    try {
      // open's mode is filtered by the umask; a mode given is meant exactly.
      if (options.mode !== undefined) await handle.chmod(options.mode);
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.overwrite ?? true) {
      await fs.rename(temp, target);
    } else {
      await fs.link(temp, target);
      await fs.rm(temp);
    }
  } catch (e) {
    await fs.rm(temp, { force: true }).catch(() => undefined);
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new NarcacheError(`${target} already exists`);
    throw writeError(e as NodeJS.ErrnoException);
  }
}

/** A failed file system call as one line: the path and the system's reason. */
function writeError(e: NodeJS.ErrnoException): never {
  const reason = e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  throw new NarcacheError(`cannot write ${e.path ?? 'the cache'}: ${reason}`);
}
