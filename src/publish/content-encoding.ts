/**
 * Small files of a cache that an S3 store keeps compressed, as Nix does with
 * `narinfo-compression` and `ls-compression`: the object holds the
 * compressed bytes and its `Content-Encoding` names the method, so that
 * HTTP clients (Nix among them) decompress it transparently.
 */
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { NarcacheError } from '../errors';
import { compressBytes, decompressBytes } from '../native';

/** The methods, spelled as Nix and HTTP spell them. */
export const CONTENT_ENCODINGS = ['xz', 'zstd', 'br'] as const;
export type ContentEncoding = (typeof CONTENT_ENCODINGS)[number];

const brotliCompress = promisify(zlib.brotliCompress);
const brotliDecompress = promisify(zlib.brotliDecompress);

export function encode(encoding: ContentEncoding, data: string | Uint8Array): Promise<Buffer> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return encoding === 'br' ? brotliCompress(bytes) : compressBytes(encoding, bytes);
}

/**
 * The bytes an object holds once its `Content-Encoding` is undone; throws a
 * one-line error on an encoding narcache does not know, a corrupt stream,
 * or more than `maxBytes` out.
 */
export async function decode(encoding: string | undefined, data: Buffer, maxBytes: number): Promise<Buffer> {
  const method = (encoding ?? '').trim().toLowerCase();
  try {
    if (method === '' || method === 'identity') {
      if (data.length > maxBytes) throw new Error(`more than ${maxBytes} bytes`);
      return data;
    }
    if (method === 'br') return await brotliDecompress(data, { maxOutputLength: maxBytes });
    if (method === 'xz' || method === 'zstd') return await decompressBytes(method, data, maxBytes);
  } catch (e) {
    throw new NarcacheError(`cannot undo its Content-Encoding ${method}: ${(e as Error).message.split('\n')[0]}`);
  }
  throw new NarcacheError(`has Content-Encoding ${JSON.stringify(method)}, which narcache does not read (it reads ${CONTENT_ENCODINGS.join(', ')})`);
}
