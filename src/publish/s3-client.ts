import { S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { NarcacheError } from '../errors';
import { describeS3Location, type S3Location } from './s3-location';

// A host that does not answer at all fails after this, once per attempt.
const CONNECT_TIMEOUT_MS = 5000;
// A connection on which nothing moves for this long is given up (and retried).
const IDLE_TIMEOUT_MS = 120_000;

/**
 * A client for the service the location names; credentials come from the
 * AWS SDK's default chain (environment, shared files with the location's
 * profile, container and instance roles). `onRequest` is called for every
 * request sent, each retry included.
 */
export function s3Client(l: S3Location, onRequest?: () => void): S3Client {
  const client = new S3Client({
    region: l.region,
    profile: l.profile,
    // As Nix's S3 store: path-style addressing for a service other than AWS.
    ...(l.endpoint ? { endpoint: l.endpoint, forcePathStyle: true } : {}),
    // A bucket of AWS in another region than the one given answers where it is.
    followRegionRedirects: true,
    // With the default, streamed requests are sent aws-chunked with a
    // trailing checksum, which S3-compatible services such as Ceph's RADOS
    // Gateway refuse; the signed payload hash covers every body we send.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: IDLE_TIMEOUT_MS },
  });
  if (onRequest) {
    // In the step of the retry middleware, below it: once per attempt.
    client.middlewareStack.add(
      (next) => (args) => {
        onRequest();
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'narcacheRequestCount' },
    );
  }
  return client;
}

const NETWORK_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** Whether the service answered that the key (or, for a HEAD, anything) is not there. */
export function isNotFound(e: unknown): boolean {
  return (
    e instanceof S3ServiceException &&
    (e.name === 'NoSuchKey' || e.name === 'NotFound' || (e.name !== 'NoSuchBucket' && e.$metadata.httpStatusCode === 404))
  );
}

/** Runs one request of the SDK; a failure becomes a one-line NarcacheError (see s3Failure). */
export async function request<T>(l: S3Location, doing: string, send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (e) {
    throw s3Failure(l, doing, e);
  }
}

/**
 * An error of the SDK as one line that says what went wrong in terms the
 * user can act on: `doing` says what was being done (`reading nix-cache-info`).
 */
export function s3Failure(l: S3Location, doing: string, e: unknown): NarcacheError {
  if (e instanceof NarcacheError) return e;
  const where = `${describeS3Location(l)}${l.endpoint ? ` (${l.endpoint})` : ''}`;
  const fail = (why: string) => new NarcacheError(`${where}: ${why}`);
  const error = e as Error & { code?: string; $metadata?: { httpStatusCode?: number } };
  if (error.name === 'CredentialsProviderError') {
    return fail(
      `no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile ` +
        `of ~/.aws/credentials (profile= in the URL, or AWS_PROFILE)${l.profile ? `; profile ${l.profile}: ${oneLine(error.message)}` : ''}`,
    );
  }
  const network = NETWORK_ERRORS[error.code ?? ''];
  if (network || error.name === 'TimeoutError') {
    return fail(`cannot reach ${l.endpoint ?? 'the service'}: ${network ?? 'timed out'}`);
  }
  switch (error.name) {
    case 'NoSuchBucket':
      return fail(`bucket ${l.bucket} does not exist`);
    case 'InvalidAccessKeyId':
      return fail('the service does not know the AWS access key ID given');
    case 'SignatureDoesNotMatch':
      return fail('the AWS secret access key does not match the access key ID (the signature was refused)');
    case 'AccessDenied':
      return fail(`access denied ${doing}`);
  }
  const status = error.$metadata?.httpStatusCode;
  if (status === 403) return fail(`access denied ${doing}`);
  // RGW and others answer some errors with only a code, which the SDK turns into this message.
  const message = error.message && error.message !== 'UnknownError' ? `: ${oneLine(error.message)}` : '';
  return fail(`${doing} failed: ${error.name}${message}${status ? ` (HTTP ${status})` : ''}`);
}

function oneLine(text: string): string {
  return text.split('\n')[0];
}
