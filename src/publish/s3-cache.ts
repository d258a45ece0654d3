import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import type { Cache, NarFile } from '../cache';
import { MAX_NARINFO_BYTES, parseNarinfoFile } from '../cache-dir';
import { verifyNarStream, type IndexOptions } from '../native';
import { NarcacheError } from '../errors';
import type { Narinfo } from '../narinfo';
import { TEMP_PREFIX } from './directory';
import { S3Destination } from './s3';
import { isNotFound, request, s3Failure } from './s3-client';

// Downloaded bytes go to the Rust core in pieces of about this size: few
// calls across, little memory.
const CHECK_CHUNK = 1 << 20;

/** A binary cache in an S3 bucket, read as well as written. */
export class S3Cache extends S3Destination implements Cache {
  async narinfoFiles(): Promise<string[]> {
    const names: string[] = [];
    for await (const key of this.listKeys(this.s3.prefix, '/')) {
      const name = key.slice(this.s3.prefix.length);
      if (name.endsWith('.narinfo') && !name.startsWith(TEMP_PREFIX)) names.push(name);
    }
    return names.sort();
  }

  /** Stored as it is or compressed (narinfo-compression), as its Content-Encoding says. */
  async readNarinfo(file: string): Promise<Narinfo> {
    const bytes = await this.small(() => this.readBytes(file, MAX_NARINFO_BYTES)).catch((e: unknown) => {
      throw isNotFound(e) ? s3Failure(this.s3, `reading ${file}`, e) : e;
    });
    return parseNarinfoFile(bytes.toString('utf8'), file);
  }

  readCacheInfo(): Promise<string | undefined> {
    return this.readText('nix-cache-info');
  }

  /** The object under the URL; it is streamed from the service through the Rust core. */
  async narFile(url: string): Promise<NarFile | { problem: string }> {
    const Key = this.key(url);
    let size;
    try {
      ({ ContentLength: size } = await this.small(() => this.client.send(new HeadObjectCommand({ Bucket: this.s3.bucket, Key }))));
    } catch (e) {
      if (isNotFound(e)) return { problem: 'is missing' };
      throw s3Failure(this.s3, `looking up ${url}`, e);
    }
    return { id: Key, size: size ?? 0, check: (compression, index) => this.checkObject(Key, url, compression, index) };
  }

  async narFiles(): Promise<string[]> {
    const names: string[] = [];
    for await (const key of this.listKeys(this.key('nar/'))) {
      const name = key.slice(this.s3.prefix.length);
      if (!name.split('/').some((part) => part.startsWith(TEMP_PREFIX))) names.push(name);
    }
    return names.sort();
  }

  async files(dir: string, suffix: string): Promise<string[]> {
    const names: string[] = [];
    for await (const key of this.listKeys(this.key(dir), '/')) {
      const name = key.slice(this.s3.prefix.length);
      if (name.endsWith(suffix) && !name.slice(dir.length).startsWith(TEMP_PREFIX)) names.push(name);
    }
    return names.sort();
  }

  async readFile(name: string, maxBytes: number): Promise<Buffer> {
    return this.small(() => this.readBytes(name, maxBytes)).catch((e: unknown) => {
      throw isNotFound(e) ? new NarcacheError('cannot be read: it is missing') : e;
    });
  }

  private async checkObject(Key: string, url: string, compression: string, index?: IndexOptions) {
    const { Body } = await request(this.s3, `reading ${url}`, () => this.client.send(new GetObjectCommand({ Bucket: this.s3.bucket, Key })));
    const body = Body as Readable;
    const pieces = body[Symbol.asyncIterator]();
    const read = async (): Promise<Buffer | null> => {
      const chunk: Buffer[] = [];
      let length = 0;
      while (length < CHECK_CHUNK) {
        const { value, done } = (await pieces.next()) as IteratorResult<Buffer>;
        if (done) break;
        chunk.push(value);
        length += value.length;
      }
      return chunk.length ? Buffer.concat(chunk) : null;
    };
    try {
      return await verifyNarStream(compression, read, index);
    } finally {
      body.destroy();
    }
  }
}
