import { randomUUID } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type S3Client,
  type StorageClass,
} from '@aws-sdk/client-s3';
import type { PackResult } from '../native';
import { packChunks, type PackPathOptions } from '../pack';
import { TEMP_PREFIX } from './directory';
import { request } from './s3-client';
import type { S3Location } from './s3-location';

export const NAR_CONTENT_TYPE = 'application/x-nix-nar';

/** What every NAR upload of one destination shares. */
export interface UploadContext {
  client: S3Client;
  location: S3Location;
  /** Runs a part's upload (or copy) once few enough others are in flight: this bounds memory. */
  partLimit: <T>(task: () => Promise<T>) => Promise<T>;
  /** The largest object the service copies in one request. */
  maxCopySize: number;
}

/** Where NAR files are uploaded before they have their name; nothing else in a cache starts so. */
export function temporaryNarPrefix(l: S3Location): string {
  return `${l.prefix}nar/${TEMP_PREFIX}`;
}

/**
 * Packs the store path at `source` and uploads its NAR file while the Rust
 * core produces it, then makes it appear under its final key,
 * `nar/<filehash>.nar.<ext>`, which is known only once the last byte is
 * compressed:
 * - a file of one part (most of them) is sent with one PUT to that key once
 *   packed, which S3 makes visible whole or not at all;
 * - a longer one goes part by part, as produced, into a multipart upload
 *   under a temporary key, which the service then copies to its final key
 *   (server-side: on Ceph's RGW the copy shares the data and takes a
 *   constant few tens of milliseconds) and deletes.
 * A failure aborts the upload; a run killed midway leaves an upload or a
 * temporary object that the next run's clean-up removes, never a partial
 * object under a NAR key.
 */
export async function uploadNar(ctx: UploadContext, source: string, options: PackPathOptions): Promise<PackResult> {
  const { location } = ctx;
  const upload = new TemporaryUpload(ctx);
  let streamed;
  try {
    streamed = await packChunks(source, location.partSize, (chunk) => upload.addPart(chunk), options);
  } catch (e) {
    await upload.discard();
    throw upload.failure ?? e;
  }
  const { packed, tail } = streamed;
  await finishUpload(ctx, upload, tail, packed.url, packed.fileSize);
  return packed;
}

/**
 * Uploads the stream `chunks` (a NAR file of another cache, already
 * checked as it passes) to `url`, as uploadNar does: one PUT if it fits in
 * one part, otherwise a multipart upload under a temporary key, copied to
 * `url` once complete. A failure of the stream aborts the upload.
 */
export async function uploadStream(ctx: UploadContext, url: string, chunks: AsyncIterable<Buffer>): Promise<void> {
  const upload = new TemporaryUpload(ctx);
  const { partSize } = ctx.location;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let size = 0;
  try {
    for await (const chunk of chunks) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      size += chunk.length;
      while (pendingBytes >= partSize) {
        const joined = Buffer.concat(pending);
        await upload.addPart(joined.subarray(0, partSize));
        pending = [joined.subarray(partSize)];
        pendingBytes -= partSize;
      }
    }
  } catch (e) {
    await upload.discard();
    throw upload.failure ?? e;
  }
  await finishUpload(ctx, upload, Buffer.concat(pending), url, size);
}

/**
 * Makes a file whose parts (if any) went to `upload`, and whose last bytes
 * are `tail`, appear whole under `url`: one PUT if it never needed a part,
 * else the upload completed and copied there.
 */
async function finishUpload(ctx: UploadContext, upload: TemporaryUpload, tail: Buffer, url: string, size: number): Promise<void> {
  const { client, location } = ctx;
  const key = location.prefix + url;
  if (!upload.started) {
    await request(location, `uploading ${url}`, () =>
      client.send(
        new PutObjectCommand({ Bucket: location.bucket, Key: key, Body: tail, ContentType: NAR_CONTENT_TYPE, StorageClass: storageClassOf(location) }),
      ),
    );
    return;
  }
  try {
    await upload.complete(tail);
    await request(location, `copying ${upload.key} to ${url}`, () =>
      copyObject(ctx, { bucket: location.bucket, key: upload.key }, key, size),
    );
  } finally {
    await upload.discard();
  }
}

/** A multipart upload under a temporary key, begun when its first part comes. */
class TemporaryUpload {
  readonly key: string;
  /** The first failure of a part, which stops the packer. */
  failure?: Error;
  private uploadId?: Promise<string>;
  private completed = false;
  private readonly parts: Promise<CompletedPart | undefined>[] = [];

  constructor(private readonly ctx: UploadContext) {
    this.key = temporaryNarPrefix(ctx.location) + randomUUID();
  }

  get started(): boolean {
    return this.parts.length > 0;
  }

  /**
   * Starts uploading `chunk` as the next part; resolves as soon as the part
   * is under way, so that packing goes on while it travels, and rejects once
   * an earlier part has failed.
   */
  addPart(chunk: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const partNumber = this.parts.length + 1;
    return new Promise<void>((underWay) => {
      const part = this.ctx.partLimit(async () => {
        underWay();
        const uploadId = await (this.uploadId ??= this.create());
        const { ETag } = await request(this.ctx.location, `uploading part ${partNumber} of ${this.key}`, () =>
          this.ctx.client.send(new UploadPartCommand({ ...this.target(), UploadId: uploadId, PartNumber: partNumber, Body: chunk })),
        );
        return { PartNumber: partNumber, ETag };
      });
      this.parts.push(
        part.catch((e: Error) => {
          this.failure ??= e;
          return undefined;
        }),
      );
    });
  }

  async complete(tail: Buffer): Promise<void> {
    if (tail.length) await this.addPart(tail);
    const parts = await Promise.all(this.parts);
    if (this.failure) throw this.failure;
    const uploadId = await this.uploadId!;
    await request(this.ctx.location, `completing the upload of ${this.key}`, () =>
      this.ctx.client.send(
        new CompleteMultipartUploadCommand({ ...this.target(), UploadId: uploadId, MultipartUpload: { Parts: parts as CompletedPart[] } }),
      ),
    );
    this.completed = true;
  }

  /**
   * Removes the upload (once no part is in flight) or the object it became.
   * Best effort: what is left, the next run's clean-up removes.
   */
  async discard(): Promise<void> {
    await Promise.all(this.parts);
    const uploadId = await this.uploadId?.catch(() => undefined);
    if (uploadId === undefined) return;
    const { client } = this.ctx;
    const removal = this.completed
      ? client.send(new DeleteObjectCommand(this.target()))
      : client.send(new AbortMultipartUploadCommand({ ...this.target(), UploadId: uploadId }));
    await removal.catch(() => undefined);
  }

  private async create(): Promise<string> {
    const { UploadId } = await request(this.ctx.location, `starting an upload to ${this.key}`, () =>
      this.ctx.client.send(new CreateMultipartUploadCommand({ ...this.target(), ContentType: NAR_CONTENT_TYPE })),
    );
    return UploadId!;
  }

  private target() {
    return { Bucket: this.ctx.location.bucket, Key: this.key };
  }
}

/** The `storage-class` of the location, as the SDK types it (any name the service knows passes). */
export function storageClassOf(location: S3Location): StorageClass | undefined {
  return location.storageClass as StorageClass | undefined;
}

/**
 * Copies an object (of this bucket, or of another of the same service) to
 * the key `to` of this bucket, metadata included: in one request up to the
 * service's limit, beyond it as a multipart upload of ranges.
 */
export async function copyObject(ctx: UploadContext, from: { bucket: string; key: string }, to: string, size: number): Promise<void> {
  const { client, location } = ctx;
  const copySource = [from.bucket, ...from.key.split('/')].map(encodeURIComponent).join('/');
  const target = { Bucket: location.bucket, Key: to };
  // The temporary object has the bucket's default class; the copy is what stays.
  const StorageClass = storageClassOf(location);
  if (size <= ctx.maxCopySize) {
    await client.send(new CopyObjectCommand({ ...target, CopySource: copySource, StorageClass }));
    return;
  }
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ ...target, ContentType: NAR_CONTENT_TYPE, StorageClass }));
  try {
    const ranges: [number, number][] = [];
    for (let start = 0; start < size; start += ctx.maxCopySize) ranges.push([start, Math.min(size, start + ctx.maxCopySize) - 1]);
    const parts = await Promise.all(
      ranges.map(([start, end], i) =>
        ctx.partLimit(async () => {
          const { CopyPartResult } = await client.send(
            new UploadPartCopyCommand({ ...target, UploadId, PartNumber: i + 1, CopySource: copySource, CopySourceRange: `bytes=${start}-${end}` }),
          );
          return { PartNumber: i + 1, ETag: CopyPartResult?.ETag };
        }),
      ),
    );
    await client.send(new CompleteMultipartUploadCommand({ ...target, UploadId, MultipartUpload: { Parts: parts } }));
  } catch (e) {
    await client.send(new AbortMultipartUploadCommand({ ...target, UploadId })).catch(() => undefined);
    throw e;
  }
}
