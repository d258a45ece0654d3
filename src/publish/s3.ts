import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { NarcacheError } from '../errors';
import { decode, encode, type ContentEncoding } from './content-encoding';
import { limiter } from '../limit';
import type { PackResult } from '../native';
import type { PackPathOptions } from '../pack';
import {
  cacheInfoText,
  checkCacheInfo,
  checkCacheInfoSize,
  type CacheInfo,
  type Destination,
  type NarinfoState,
  type NarinfoText,
} from './destination';
import { isNotFound, request, s3Client, s3Failure } from './s3-client';
import { describeS3Location, type S3Location } from './s3-location';
import { storageClassOf, temporaryNarPrefix, uploadNar, type UploadContext } from './s3-upload';

// The content types Nix's own binary cache stores give these files.
const NARINFO_CONTENT_TYPE = 'text/x-nix-narinfo';
const CACHE_INFO_CONTENT_TYPE = 'text/x-nix-cache-info';
const JSON_CONTENT_TYPE = 'application/json';

export interface S3DestinationOptions {
  /**
   * Parts of NAR files uploaded at once, over all paths (default 8): with
   * the part size, this bounds the memory that uploads take.
   */
  partsInFlight?: number;
  /** The largest object the service copies in one request (S3: 5 GiB); larger NAR files are copied in parts of this size. */
  maxCopySize?: number;
}

// Small requests (HEAD of narinfos, clean-up) at once: enough to hide the
// round trips, well below the SDK's 50 connections.
const SMALL_REQUESTS = 32;
const MAX_COPY_SIZE = 5 * 1024 ** 3;

/** An object of a listing: its whole key, size and last modification (ms since the epoch). */
interface ListedObject {
  key: string;
  size: number;
  modified: number;
}

/** A binary cache in an S3 bucket (or under a prefix of one), as Nix reads it over HTTP or s3://. */
export class S3Destination implements Destination {
  readonly location: string;
  /** Requests sent to the service so far, retries included. */
  requests = 0;
  protected readonly client: S3Client;
  /** For small requests: HEADs, GETs of narinfos, clean-up. */
  protected readonly small = limiter(SMALL_REQUESTS);
  protected readonly upload: UploadContext;

  constructor(
    readonly s3: S3Location,
    options: S3DestinationOptions = {},
  ) {
    this.location = describeS3Location(s3);
    this.client = s3Client(s3, () => this.requests++);
    this.upload = {
      client: this.client,
      location: s3,
      partLimit: limiter(options.partsInFlight ?? 8),
      maxCopySize: options.maxCopySize ?? MAX_COPY_SIZE,
    };
  }

  /**
   * Checks that the bucket answers, writes `nix-cache-info` if it is
   * missing, and removes what a run killed midway left: open multipart
   * uploads of NAR files and temporary objects. Another publish into the
   * same place at the same time would lose its uploads in progress (and
   * fail, leaving the cache true). A bucket is never inside a store.
   */
  async open(info: CacheInfo): Promise<void> {
    const existing = await this.readCacheInfo();
    if (existing === undefined) await this.put('nix-cache-info', cacheInfoText(info), CACHE_INFO_CONTENT_TYPE);
    else checkCacheInfo(this.location, existing, info);
    await this.cleanUp();
  }

  /**
   * In as few requests as the bucket allows: a listing of the narinfos
   * under the prefix, 1,000 keys a request, while it has taken fewer
   * requests than a HEAD for each path would; HEADs otherwise (a few
   * paths asked about in a large cache). A narinfo there is taken as
   * present, as Nix takes it.
   */
  async narinfoStates(paths: { hashPart: string; storePath: string }[]): Promise<Map<string, NarinfoState>> {
    const byHash = new Map(paths.map((p) => [p.hashPart, p.storePath]));
    const states = new Map<string, NarinfoState>();
    let pages = 0;
    for await (const page of this.listPages(this.s3.prefix, '/')) {
      if (++pages > paths.length) return this.headNarinfos(paths);
      for (const { key } of page) {
        const name = key.slice(this.s3.prefix.length);
        const storePath = name.endsWith('.narinfo') ? byHash.get(name.slice(0, -'.narinfo'.length)) : undefined;
        if (storePath !== undefined) states.set(storePath, 'present');
      }
    }
    return states;
  }

  private async headNarinfos(paths: { hashPart: string; storePath: string }[]): Promise<Map<string, NarinfoState>> {
    const found = await Promise.all(paths.map((p) => this.has(`${p.hashPart}.narinfo`)));
    return new Map(paths.filter((_, i) => found[i]).map((p) => [p.storePath, 'present']));
  }

  private has(name: string): Promise<boolean> {
    const key = this.key(name);
    return this.small(async () => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.s3.bucket, Key: key }));
        return true;
      } catch (e) {
        if (isNotFound(e)) return false;
        throw s3Failure(this.s3, `looking up ${name}`, e);
      }
    });
  }

  writeNar(source: string, options: PackPathOptions): Promise<PackResult> {
    return uploadNar(this.upload, source, options);
  }

  /**
   * One PUT each (S3 shows an object whole or not at all, and durable once
   * the PUT succeeds), many at once: each narinfo, after its companions, as
   * soon as the PUTs of its references earlier in the list have succeeded.
   * A companion to keep is looked up first: no other publish runs into the
   * same place meanwhile.
   */
  async writeNarinfos(narinfos: NarinfoText[]): Promise<void> {
    const puts = new Map<string, Promise<void>>();
    for (const narinfo of narinfos) {
      const before = narinfo.references.flatMap((r) => puts.get(r) ?? []);
      const put = Promise.all(before).then(() => this.writeNarinfo(narinfo));
      // A failure is awaited below; a PUT that waits for it is not started.
      put.catch(() => undefined);
      puts.set(narinfo.hashPart, put);
    }
    await Promise.all(puts.values());
  }

  private async writeNarinfo({ hashPart, text, companions }: NarinfoText): Promise<void> {
    for (const c of companions ?? []) {
      if (c.keepExisting && (await this.has(c.name))) continue;
      // As Nix's S3 store, by the name: listings are compressed, debug-info links stay plain.
      await this.small(() => this.put(c.name, c.data, JSON_CONTENT_TYPE, c.name.endsWith('.ls') ? this.s3.lsCompression : undefined));
    }
    await this.small(() => this.put(`${hashPart}.narinfo`, text, NARINFO_CONTENT_TYPE, this.s3.narinfoCompression));
  }

  /** Every PUT was durable when it succeeded. */
  async flush(): Promise<void> {}

  /** Closes the connections kept open for further requests. */
  close(): void {
    this.client.destroy();
  }

  /** The text of `nix-cache-info`, or undefined if there is none. */
  async readCacheInfo(): Promise<string | undefined> {
    let object;
    try {
      object = await this.client.send(new GetObjectCommand({ Bucket: this.s3.bucket, Key: this.key('nix-cache-info') }));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw s3Failure(this.s3, 'reading nix-cache-info', e);
    }
    const { Body, ContentLength } = object;
    try {
      checkCacheInfoSize(this.location, ContentLength ?? 0);
      return await Body!.transformToString('utf8');
    } catch (e) {
      if (e instanceof NarcacheError) throw e;
      throw s3Failure(this.s3, 'reading nix-cache-info', e);
    } finally {
      // A body refused unread holds its connection until it is let go.
      (Body as Readable).destroy();
    }
  }

  /**
   * The bytes a small object holds, its Content-Encoding undone; a
   * missing one rejects with the service's not-found error, one larger
   * than `maxBytes` (stored or decoded) with a one-line error.
   */
  protected async readBytes(name: string, maxBytes: number): Promise<Buffer> {
    let object;
    try {
      object = await this.client.send(new GetObjectCommand({ Bucket: this.s3.bucket, Key: this.key(name) }));
    } catch (e) {
      if (isNotFound(e)) throw e;
      throw s3Failure(this.s3, `reading ${name}`, e);
    }
    const { Body, ContentLength, ContentEncoding } = object;
    if ((ContentLength ?? 0) > maxBytes) {
      (Body as Readable).destroy();
      throw new NarcacheError(`is ${ContentLength} bytes, more than the ${maxBytes} read`);
    }
    return decode(ContentEncoding, Buffer.from(await Body!.transformToByteArray()), maxBytes);
  }

  /** Writes a small object, stored compressed if `encoding` says so, with the location's storage class. */
  private async put(name: string, data: string | Uint8Array, contentType: string, encoding?: ContentEncoding): Promise<void> {
    const Body = encoding ? await encode(encoding, data) : data;
    await request(this.s3, `writing ${name}`, () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.s3.bucket,
          Key: this.key(name),
          Body,
          ContentType: contentType,
          ContentEncoding: encoding,
          StorageClass: storageClassOf(this.s3),
        }),
      ),
    );
  }

  private async cleanUp(): Promise<void> {
    const prefix = temporaryNarPrefix(this.s3);
    const removals: Promise<unknown>[] = [];
    for await (const { key, uploadId } of this.listUploads(prefix)) removals.push(this.abortUpload(key, uploadId));
    for await (const { key } of this.listObjects(prefix)) {
      removals.push(
        this.small(() =>
          request(this.s3, `deleting ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.s3.bucket, Key: key }))),
        ),
      );
    }
    await Promise.all(removals);
  }

  /**
   * Every object whose key starts with `prefix` (whole keys, in the
   * service's order), a page of up to 1,000 per request; with a delimiter,
   * only those without it after the prefix.
   */
  protected async *listObjects(prefix: string, delimiter?: string): AsyncGenerator<ListedObject> {
    for await (const page of this.listPages(prefix, delimiter)) yield* page;
  }

  /** The objects of listObjects, a page (one request) at a time. */
  private async *listPages(prefix: string, delimiter?: string): AsyncGenerator<ListedObject[]> {
    for (let ContinuationToken: string | undefined; ; ) {
      const page = await request(this.s3, `listing ${prefix}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.s3.bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken })),
      );
      yield (page.Contents ?? []).flatMap(({ Key, Size, LastModified }) =>
        Key ? [{ key: Key, size: Size ?? 0, modified: LastModified?.getTime() ?? 0 }] : [],
      );
      if (!page.IsTruncated) return;
      ContinuationToken = page.NextContinuationToken;
    }
  }

  /** The multipart uploads begun under `prefix` and neither completed nor aborted. */
  protected async *listUploads(prefix: string): AsyncGenerator<{ key: string; uploadId: string; started: number }> {
    for (let KeyMarker: string | undefined, UploadIdMarker: string | undefined; ; ) {
      const page = await request(this.s3, 'listing unfinished uploads', () =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.s3.bucket, Prefix: prefix, KeyMarker, UploadIdMarker })),
      );
      for (const { Key, UploadId, Initiated } of page.Uploads ?? []) {
        if (Key && UploadId) yield { key: Key, uploadId: UploadId, started: Initiated?.getTime() ?? 0 };
      }
      if (!page.IsTruncated) return;
      ({ NextKeyMarker: KeyMarker, NextUploadIdMarker: UploadIdMarker } = page);
    }
  }

  /** Aborts an unfinished multipart upload. */
  protected abortUpload(key: string, uploadId: string): Promise<unknown> {
    return this.small(() =>
      request(this.s3, `aborting the unfinished upload of ${key}`, () =>
        this.client.send(new AbortMultipartUploadCommand({ Bucket: this.s3.bucket, Key: key, UploadId: uploadId })),
      ),
    );
  }

  protected key(name: string): string {
    return this.s3.prefix + name;
  }
}
