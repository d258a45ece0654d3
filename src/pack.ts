import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as os from 'node:os';
import { NarcacheError } from './errors';
import { pack, packStream, syncFiles, type CancelToken, type PackedStream, type PackOptions, type PackResult } from './native';

export type Compression = 'zstd' | 'xz' | 'none';

export interface PackPathOptions {
  compression?: Compression;
  level?: number;
  /** Compressor threads for this one path (default: the CPU count). */
  threads?: number;
  /** What the store records; a NAR that differs is refused. */
  expected?: { narHash: string; narSize: number };
  /** Cancelling it abandons the pack and leaves no file behind. */
  cancel?: CancelToken;
  /** Also give the NAR's listing (`listing` of the result), made in the same pass. */
  listing?: boolean;
  /** Also give the paths of its debug-info files (`debugInfo` of the result). */
  debugInfo?: boolean;
}

/**
 * Packs the store path at `source` into `<dest>/nar/`: NAR, hashes and
 * compression in one streaming pass in the Rust core, off the JS thread.
 * The file is durable (on disk, not only in the page cache) when this resolves.
 */
export async function packPath(source: string, dest: string, options: PackPathOptions = {}): Promise<PackResult> {
  await fs.mkdir(path.join(dest, 'nar'), { recursive: true });
  const packed = await packFile(source, dest, options);
  await makeDurable([path.join(dest, packed.url)]);
  return packed;
}

/**
 * Makes the contents of the files at `paths` and their names durable, as
 * one batch (the Rust core's syncFiles); fails with one line naming the file.
 */
export function makeDurable(paths: string[]): Promise<void> {
  return syncFiles(paths).catch((e: Error) => {
    throw new NarcacheError(e.message);
  });
}

/**
 * packPath without the directory's creation and without making the file
 * durable, for a writer that syncs many files at once (makeDurable).
 */
export function packFile(source: string, dest: string, options: PackPathOptions = {}): Promise<PackResult> {
  return pack(source, dest, nativeOptions(options), options.cancel);
}

/**
 * Packs the store path at `source` as packPath does, but hands the
 * compressed file to `onChunk` as it is produced, in pieces of `chunkSize`
 * bytes; the packer waits for each Promise, so the consumer sets the pace.
 * The file's last bytes come with the result, when its hash is known.
 */
export function packChunks(
  source: string,
  chunkSize: number,
  onChunk: (chunk: Buffer) => Promise<void>,
  options: PackPathOptions = {},
): Promise<PackedStream> {
  return packStream(source, chunkSize, onChunk, nativeOptions(options), options.cancel);
}

function nativeOptions(options: PackPathOptions): PackOptions {
  return {
    compression: options.compression ?? 'zstd',
    level: options.level,
    threads: options.threads ?? os.availableParallelism(),
    expectedNarHash: options.expected?.narHash,
    expectedNarSize: options.expected?.narSize,
    listing: options.listing,
    debugInfo: options.debugInfo,
  };
}
