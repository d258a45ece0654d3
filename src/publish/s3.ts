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
import { limiter } from '../limit';
import type { PackResult } from '../native';
import type { PackPathOptions } from '../pack';
import { cacheInfoText, checkCacheInfo, type Destination, type NarinfoText } from './destination';
import { isNotFound, request, s3Client, s3Failure } from './s3-client';
import { describeS3Location, type S3Location } from './s3-location';
import { temporaryNarPrefix, uploadNar, type UploadContext } from './s3-upload';

// The content types Nix's own binary cache stores give these files.
const NARINFO_CONTENT_TYPE = 'text/x-nix-narinfo';
const CACHE_INFO_CONTENT_TYPE = 'text/x-nix-cache-info';

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

/** A binary cache in an S3 bucket (or under a prefix of one), as Nix reads it over HTTP or s3://. */
export class S3Destination implements Destination {
  readonly location: string;
  protected readonly client: S3Client;
  /** For small requests: HEADs, GETs of narinfos, clean-up. */
  protected readonly small = limiter(SMALL_REQUESTS);
  protected readonly upload: UploadContext;

  constructor(
    readonly s3: S3Location,
    options: S3DestinationOptions = {},
  ) {
    this.location = describeS3Location(s3);
    this.client = s3Client(s3);
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
   * fail, leaving the cache true).
   */
  async open(storeDir: string): Promise<void> {
    const existing = await this.readText('nix-cache-info');
    if (existing === undefined) await this.put('nix-cache-info', cacheInfoText(storeDir), CACHE_INFO_CONTENT_TYPE);
    else checkCacheInfo(this.location, existing, storeDir);
    await this.cleanUp();
  }

  hasNarinfo(hashPart: string): Promise<boolean> {
    const key = this.key(`${hashPart}.narinfo`);
    return this.small(async () => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.s3.bucket, Key: key }));
        return true;
      } catch (e) {
        if (isNotFound(e)) return false;
        throw s3Failure(this.s3, `looking up ${hashPart}.narinfo`, e);
      }
    });
  }

  writeNar(source: string, options: PackPathOptions): Promise<PackResult> {
    return uploadNar(this.upload, source, options);
  }

  /** One PUT each, in order: S3 shows an object whole or not at all, and durable once the PUT succeeds. */
  async writeNarinfos(narinfos: NarinfoText[]): Promise<void> {
    for (const { hashPart, text } of narinfos) await this.put(`${hashPart}.narinfo`, text, NARINFO_CONTENT_TYPE);
  }

  /** Every PUT was durable when it succeeded. */
  async flush(): Promise<void> {}

  /** Closes the connections kept open for further requests. */
  close(): void {
    this.client.destroy();
  }

  /** The text of a small object of the cache, or undefined if there is none. */
  protected async readText(name: string): Promise<string | undefined> {
    try {
      const { Body } = await this.client.send(new GetObjectCommand({ Bucket: this.s3.bucket, Key: this.key(name) }));
      return await Body!.transformToString('utf8');
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw s3Failure(this.s3, `reading ${name}`, e);
    }
  }

  private async put(name: string, text: string, contentType: string): Promise<void> {
    await request(this.s3, `writing ${name}`, () =>
      this.client.send(new PutObjectCommand({ Bucket: this.s3.bucket, Key: this.key(name), Body: text, ContentType: contentType })),
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
  protected async *listObjects(prefix: string, delimiter?: string): AsyncGenerator<{ key: string; size: number; modified: number }> {
    for (let ContinuationToken: string | undefined; ; ) {
      const page = await request(this.s3, `listing ${prefix}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.s3.bucket, Prefix: prefix, Delimiter: delimiter, ContinuationToken })),
      );
      for (const { Key, Size, LastModified } of page.Contents ?? []) {
        if (Key) yield { key: Key, size: Size ?? 0, modified: LastModified?.getTime() ?? 0 };
      }
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
