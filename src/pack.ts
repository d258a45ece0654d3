import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as os from 'node:os';
import { NarcacheError } from './errors';
import { DEFAULT_STORE_DIR, refuseInsideStore } from './store-path';
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
 * A `dest` inside the store (/nix/store) is refused, as `build -o` refuses it.
 */
export async function packPath(source: string, dest: string, options: PackPathOptions = {}): Promise<PackResult> {
  await refuseInsideStore(dest, [DEFAULT_STORE_DIR]);
  await fs.mkdir(path.join(dest, 'nar'), { recursive: true });
  const [packed] = await packFiles([{ source, options }], dest);
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
 * packPath of each path, one after another in one call into the Rust core,
 * without the directory's creation and without making the files durable,
 * for a writer that syncs many files at once (makeDurable). Rejects at the
 * first that fails; the first path's `cancel` cancels them all.
 */
export function packFiles(paths: { source: string; options: PackPathOptions }[], dest: string): Promise<PackResult[]> {
  const sources = paths.map(({ source, options }) => ({ path: source, options: nativeOptions(options) }));
  return pack(sources, dest, paths[0]?.options.cancel);
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
