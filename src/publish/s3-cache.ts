import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { MAX_NARINFO_BYTES, parseNarinfoFile, type Cache, type NarFile } from '../cache';
import { verifyNarStream, type IndexOptions } from '../native';
import { NarcacheError } from '../errors';
import type { Narinfo } from '../narinfo';
import { TEMP_PREFIX } from './directory';
import { S3Destination } from './s3';
import { temporaryNarPrefix } from './s3-upload';
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
    // Decoded as Nix reads it over HTTP (narinfo-compression), no larger than a narinfo may be.
    const bytes = await this.small(() => this.readBytes(file, MAX_NARINFO_BYTES)).catch((e: unknown) => {
      throw isNotFound(e) ? s3Failure(this.s3, `reading ${file}`, e) : e;
    });
    return parseNarinfoFile(bytes.toString('utf8'), file);
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
    return {
      id: Key,
      size: size ?? 0,
      check: (compression, narSize, index) => this.checkObject(Key, url, compression, narSize, index),
    };
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

  /** Temporary objects of a publish that was killed (or, if one runs now, of that one). */
  async leftovers(): Promise<string[]> {
    const names: string[] = [];
    for await (const key of this.listKeys(temporaryNarPrefix(this.s3))) names.push(key.slice(this.s3.prefix.length));
    return names.sort();
  }

  /**
   * A bucket is never inside a store, and its leftovers are removed by the
   * next publish, which alone knows that no other runs.
   */
  async openForUpdate(): Promise<void> {}

  private async checkObject(Key: string, url: string, compression: string, narSize: number, index?: IndexOptions) {
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
      return await verifyNarStream(compression, read, narSize, index);
    } finally {
      body.destroy();
    }
  }
}
