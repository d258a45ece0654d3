import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as os from 'node:os';
import { pack, type PackResult } from './native';

export type Compression = 'zstd' | 'xz' | 'none';

export interface PackPathOptions {
  compression?: Compression;
  level?: number;
  /** Compressor threads for this one path (default: the CPU count). */
  threads?: number;
  /** What the store records; a NAR that differs is refused. */
  expected?: { narHash: string; narSize: number };
}

/**
 * Packs the store path at `source` into `<dest>/nar/`: NAR, hashes and
 * compression in one streaming pass in the Rust core, off the JS thread.
 */
export async function packPath(source: string, dest: string, options: PackPathOptions = {}): Promise<PackResult> {
  await fs.mkdir(path.join(dest, 'nar'), { recursive: true });
  return pack(source, dest, {
    compression: options.compression ?? 'zstd',
    level: options.level,
    threads: options.threads ?? os.availableParallelism(),
    expectedNarHash: options.expected?.narHash,
    expectedNarSize: options.expected?.narSize,
  });
}
