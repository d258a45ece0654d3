import type { Readable } from 'node:stream';
import { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { checkedStream, MAX_NARINFO_BYTES, parseNarinfoFile, type Cache, type CacheFile, type NarFile } from '../cache';
import { NarcacheError } from '../errors';
import { verifyNarStream, type IndexOptions } from '../native';
import type { Narinfo } from '../narinfo';
import { TEMP_PREFIX } from './directory';
import { S3Destination } from './s3';
import { isNotFound, request, s3Failure } from './s3-client';
import { sameService } from './s3-location';
import { copyObject, temporaryNarPrefix, uploadStream } from './s3-upload';

// S3's most keys in one DeleteObjects request.
const DELETE_BATCH = 1000;

// Downloaded bytes go to the Rust core in pieces of about this size: few
// calls across, little memory.
const CHECK_CHUNK = 1 << 20;

/** A binary cache in an S3 bucket, read as well as written. */
export class S3Cache extends S3Destination implements Cache {
  async narinfoFiles(): Promise<string[]> {
    const names: string[] = [];
    for await (const { key } of this.listObjects(this.s3.prefix, '/')) {
      const name = key.slice(this.s3.prefix.length);
      if (name.endsWith('.narinfo') && !name.startsWith(TEMP_PREFIX)) names.push(name);
    }
    return names.sort();
  }

  /** Stored as it is or compressed (narinfo-compression), as its Content-Encoding says. */
  async readNarinfo(file: string): Promise<Narinfo> {
    return parseNarinfoFile(await this.readNarinfoText(file), file);
  }

  /** Decoded as Nix reads it over HTTP (narinfo-compression), no larger than a narinfo may be. */
  async readNarinfoText(file: string): Promise<string> {
    const bytes = await this.small(() => this.readBytes(file, MAX_NARINFO_BYTES)).catch((e: unknown) => {
      throw isNotFound(e) ? s3Failure(this.s3, `reading ${file}`, e) : e;
    });
    return bytes.toString('utf8');
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
      read: () => this.readObject(Key, url),
      object: { location: this.s3, key: Key },
    };
  }

  async narFiles(): Promise<CacheFile[]> {
    const files: CacheFile[] = [];
    for await (const { key, size, modified } of this.listObjects(this.key('nar/'))) {
      const file = key.slice(this.s3.prefix.length);
      if (!file.split('/').some((part) => part.startsWith(TEMP_PREFIX))) files.push({ file, size, modified });
    }
    return files.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  }

  async temporaryFiles(): Promise<CacheFile[]> {
    const files: CacheFile[] = [];
    for await (const { key, size, modified } of this.listObjects(temporaryNarPrefix(this.s3))) {
      files.push({ file: key.slice(this.s3.prefix.length), size, modified });
    }
    for await (const { key, uploadId, started } of this.listUploads(this.s3.prefix)) {
      files.push({ file: key.slice(this.s3.prefix.length), size: 0, modified: started, uploadId });
    }
    return files;
  }

  /** Objects go a thousand per request; unfinished uploads are aborted. */
  async remove(files: (string | CacheFile)[]): Promise<void> {
    const entries: { file: string; uploadId?: string }[] = files.map((f) => (typeof f === 'string' ? { file: f } : f));
    const uploads = entries.filter((f) => f.uploadId !== undefined);
    const objects = entries.filter((f) => f.uploadId === undefined).map((f) => this.key(f.file));
    const batches: Promise<unknown>[] = uploads.map((u) => this.abortUpload(this.key(u.file), u.uploadId!));
    for (let start = 0; start < objects.length; start += DELETE_BATCH) {
      const Objects = objects.slice(start, start + DELETE_BATCH).map((Key) => ({ Key }));
      batches.push(
        this.small(async () => {
          const { Errors } = await request(this.s3, `deleting ${Objects.length} objects`, () =>
            this.client.send(new DeleteObjectsCommand({ Bucket: this.s3.bucket, Delete: { Objects, Quiet: true } })),
          );
          const failed = (Errors ?? []).find((e) => e.Code !== 'NoSuchKey');
          if (failed) throw new NarcacheError(`${this.location}: deleting ${failed.Key} failed: ${failed.Code} ${failed.Message ?? ''}`.trim());
        }),
      );
    }
    await Promise.all(batches);
  }

  /**
   * From a bucket of the same service, a server-side copy: the bytes never
   * pass through narcache, so only the size is checked (run verify on the
   * copy to check the hashes); otherwise streamed and checked on the way.
   */
  async copyNar(url: string, from: NarFile, expected: { fileHash: Buffer; fileSize: number }): Promise<boolean> {
    if (from.object && sameService(from.object.location, this.s3)) {
      if (from.size !== expected.fileSize) throw new NarcacheError(`FileSize is ${expected.fileSize} but ${url} has ${from.size} bytes`);
      await request(this.s3, `copying ${url}`, () =>
        copyObject(this.upload, { bucket: from.object!.location.bucket, key: from.object!.key }, this.key(url), from.size),
      );
      return false;
    }
    await uploadStream(this.upload, url, checkedStream(from.read(), expected, url));
    return true;
  }

  /** A bucket has no lock: see the README on running prune beside a publish. */
  async lock(): Promise<() => void> {
    return () => undefined;
  }

  private async *readObject(Key: string, url: string): AsyncGenerator<Buffer> {
    const { Body } = await request(this.s3, `reading ${url}`, () => this.client.send(new GetObjectCommand({ Bucket: this.s3.bucket, Key })));
    const body = Body as Readable;
    try {
      yield* body;
    } finally {
      body.destroy();
    }
  }

  async files(dir: string, suffix: string): Promise<string[]> {
    const names: string[] = [];
    for await (const { key } of this.listObjects(this.key(dir), '/')) {
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
    for await (const { key } of this.listObjects(temporaryNarPrefix(this.s3))) names.push(key.slice(this.s3.prefix.length));
    return names.sort();
  }

  /**
   * A bucket is never inside a store, and its leftovers are removed by the
   * next publish, which alone knows that no other runs.
   */
  async openForUpdate(): Promise<void> {}

  private async checkObject(Key: string, url: string, compression: string, narSize: number, index?: IndexOptions) {
    const pieces = this.readObject(Key, url)[Symbol.asyncIterator]();
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
      await pieces.return(undefined);
    }
  }
}
