import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { NarcacheError } from './errors';
import { normaliseHash } from './hash';
import type { Narinfo } from './narinfo';
import { writeFileAtomic } from './publish/directory';

/**
 * An ed25519 signing key in Nix's format (`<name>:<base64 of seed ‖ public
 * key>`), as `nix-store --generate-binary-cache-key` writes it.
 */
export interface SecretKey {
  name: string;
  /** The 32-byte seed followed by the 32-byte public key. */
  bytes: Buffer;
}

/** A key that checks signatures: `<name>:<base64 of 32 bytes>`. */
export interface PublicKey {
  name: string;
  bytes: Buffer;
}

const SEED_BYTES = 32;
const PUBLIC_BYTES = 32;
const SIGNATURE_BYTES = 64;
// DER headers that wrap a raw ed25519 seed (PKCS #8) or public key (SPKI),
// the forms node:crypto imports.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Splits `name:base64` as Nix does (at the first colon) and decodes the payload. */
function splitKeyed(text: string, what: string, bytes: number): { name: string; bytes: Buffer } {
  const colon = text.indexOf(':');
  if (colon <= 0) throw new NarcacheError(`${what} is not "<name>:<base64>"`);
  const payload = text.slice(colon + 1);
  if (!BASE64.test(payload)) throw new NarcacheError(`${what} is not valid base64`);
  const decoded = Buffer.from(payload, 'base64');
  if (decoded.length !== bytes) throw new NarcacheError(`${what} holds ${decoded.length} bytes, not ${bytes}`);
  return { name: text.slice(0, colon), bytes: decoded };
}

// Making a KeyObject costs far more than a signature (0.4 ms against
// 0.05): one per key, not one per narinfo signed.
const privateKeyObjects = new WeakMap<SecretKey, crypto.KeyObject>();

function privateKeyObject(key: SecretKey): crypto.KeyObject {
  let object = privateKeyObjects.get(key);
  if (!object) {
    object = crypto.createPrivateKey({
      key: Buffer.concat([PKCS8_PREFIX, key.bytes.subarray(0, SEED_BYTES)]),
      format: 'der',
      type: 'pkcs8',
    });
    privateKeyObjects.set(key, object);
  }
  return object;
}

function publicKeyObject(key: PublicKey): crypto.KeyObject {
  return crypto.createPublicKey({ key: Buffer.concat([SPKI_PREFIX, key.bytes]), format: 'der', type: 'spki' });
}

function rawPublicKey(key: crypto.KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
}

/**
 * Reads a secret key. Its second half must be the public key of its seed:
 * a file whose halves disagree would sign with a key nobody trusts.
 */
export function parseSecretKey(text: string, origin = 'secret key'): SecretKey {
  const key = splitKeyed(text.trim(), origin, SEED_BYTES + PUBLIC_BYTES);
  const derived = rawPublicKey(crypto.createPublicKey(privateKeyObject(key)));
  if (!derived.equals(key.bytes.subarray(SEED_BYTES))) {
    throw new NarcacheError(`${origin} is corrupt: its public half does not belong to its seed`);
  }
  return key;
}

export function parsePublicKey(text: string, origin = 'public key'): PublicKey {
  return splitKeyed(text.trim(), origin, PUBLIC_BYTES);
}

export function formatSecretKey(key: SecretKey): string {
  return `${key.name}:${key.bytes.toString('base64')}`;
}

export function formatPublicKey(key: PublicKey): string {
  return `${key.name}:${key.bytes.toString('base64')}`;
}

export function publicKeyOf(key: SecretKey): PublicKey {
  return { name: key.name, bytes: Buffer.from(key.bytes.subarray(SEED_BYTES)) };
}

/** Nix refuses key names it cannot split off a `name:payload` string. */
function checkKeyName(name: string): void {
  if (!name || name.includes(':') || /\s/.test(name)) {
    throw new NarcacheError(`invalid key name ${JSON.stringify(name)}: it must be non-empty, without ":" or spaces`);
  }
}

/** A fresh ed25519 key pair. */
export function generateSecretKey(name: string): SecretKey {
  checkKeyName(name);
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
  return { name, bytes: Buffer.concat([seed, rawPublicKey(publicKey)]) };
}

export interface KeygenOptions {
  name: string;
  secretKeyFile: string;
  publicKeyFile: string;
  /** Replace files that exist (otherwise refused). */
  force?: boolean;
}

/**
 * Generates a key pair and writes it as Nix does (no trailing newline), the
 * secret file with mode 0600. Without `force`, neither file is written if
 * either exists.
 */
export async function keygen(options: KeygenOptions): Promise<PublicKey> {
  const secretFile = path.resolve(options.secretKeyFile);
  const publicFile = path.resolve(options.publicKeyFile);
  if (secretFile === publicFile) throw new NarcacheError('the secret and public key files must differ');
  const secret = generateSecretKey(options.name);
  const overwrite = options.force ?? false;
  if (!overwrite) {
    for (const file of [secretFile, publicFile]) {
      if (await exists(file)) throw new NarcacheError(`${file} already exists (use --force to replace it)`);
    }
  }
  const publicKey = publicKeyOf(secret);
  await writeFileAtomic(secretFile, formatSecretKey(secret), { mode: 0o600, overwrite });
  await writeFileAtomic(publicFile, formatPublicKey(publicKey), { overwrite });
  return publicKey;
}

async function exists(file: string): Promise<boolean> {
  return fs.lstat(file).then(
    () => true,
    () => false,
  );
}

async function readKeyFile(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new NarcacheError(
      `cannot read key file ${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message.replace(/^[A-Z]+: /, '')}`,
    );
  }
}

export async function readSecretKeyFile(file: string): Promise<SecretKey> {
  return parseSecretKey(await readKeyFile(file), `secret key file ${file}`);
}

/**
 * What Nix signs for a store path (NixOS/nix path-info.cc): the path, its
 * NarHash as `sha256:<nix32>`, NarSize and its references as full paths,
 * sorted and comma-separated.
 */
export function fingerprint(n: Pick<Narinfo, 'storePath' | 'narHash' | 'narSize' | 'references'>): string {
  const storeDir = path.posix.dirname(n.storePath);
  const references = n.references.map((r) => `${storeDir}/${r}`).sort();
  return `1;${n.storePath};${normaliseHash(n.narHash)};${n.narSize};${references.join(',')}`;
}

/** A `Sig:` value: `<key name>:<base64 of the detached signature>`. */
export function sign(text: string, key: SecretKey): string {
  const signature = crypto.sign(null, Buffer.from(text), privateKeyObject(key));
  return `${key.name}:${signature.toString('base64')}`;
}

/**
 * The narinfo with one signature per key added, keeping those it has; a
 * signature already there (ed25519 is deterministic) is not repeated.
 */
export function signNarinfo(n: Narinfo, keys: readonly SecretKey[]): Narinfo {
  if (!keys.length) return n;
  const text = fingerprint(n);
  const added = keys.map((k) => sign(text, k)).filter((s, i, all) => !n.sigs.includes(s) && all.indexOf(s) === i);
  return added.length ? { ...n, sigs: [...n.sigs, ...added] } : n;
}

/** What one `Sig:` value says: a signature by `keyName`, or why it is unreadable. */
export type ParsedSignature = { keyName: string; bytes: Buffer } | { malformed: string };

export function parseSignature(sig: string): ParsedSignature {
  try {
    const { name, bytes } = splitKeyed(sig, 'signature', SIGNATURE_BYTES);
    return { keyName: name, bytes };
  } catch (e) {
    return { malformed: (e as Error).message };
  }
}

/**
 * Whether `sig` is a valid signature of `text` by one of `keys`. Like Nix,
 * only keys with the signature's name are tried.
 */
export function verifySignature(text: string, sig: string, keys: readonly PublicKey[]): boolean {
  const parsed = parseSignature(sig);
  if ('malformed' in parsed) return false;
  return keys.some(
    (k) => k.name === parsed.keyName && crypto.verify(null, Buffer.from(text), publicKeyObject(k), parsed.bytes),
  );
}
