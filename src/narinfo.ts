import type { PathInfo } from './closure';
import { NarcacheError } from './errors';
import { isHashOfType, isTypedHash } from './hash';
import { baseName, isStorePathName } from './store-path';

/** One narinfo file: what a binary cache says about one store path. */
export interface Narinfo {
  storePath: string;
  url: string;
  compression: string;
  fileHash?: string;
  fileSize?: number;
  narHash: string;
  narSize: number;
  /** Base names (`<hash>-<name>`), as the file writes them. */
  references: string[];
  /** Base name of the deriver. */
  deriver?: string;
  sigs: string[];
  ca?: string;
}

/** The narinfo of a path whose NAR was written to `url`. */
export function narinfoFor(
  info: PathInfo,
  file: { url: string; compression: string; fileHash: string; fileSize: number },
): Narinfo {
  return {
    storePath: info.path,
    url: file.url,
    compression: file.compression,
    fileHash: file.fileHash,
    fileSize: file.fileSize,
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references.map(baseName),
    ...(info.deriver ? { deriver: baseName(info.deriver) } : {}),
    sigs: info.sigs,
    ...(info.ca ? { ca: info.ca } : {}),
  };
}

/**
 * Writes a narinfo exactly as Nix does (NixOS/nix src/libstore/nar-info.cc):
 * fields in this order, References always present (empty when none),
 * Deriver only when known, one Sig line per signature, then CA.
 */
export function formatNarinfo(n: Narinfo): string {
  const lines = [
    `StorePath: ${n.storePath}`,
    `URL: ${n.url}`,
    `Compression: ${n.compression}`,
    ...(n.fileHash ? [`FileHash: ${n.fileHash}`] : []),
    ...(n.fileSize !== undefined ? [`FileSize: ${n.fileSize}`] : []),
    `NarHash: ${n.narHash}`,
    `NarSize: ${n.narSize}`,
    `References: ${[...n.references].sort().join(' ')}`,
    ...(n.deriver ? [`Deriver: ${n.deriver}`] : []),
    ...n.sigs.map((s) => `Sig: ${s}`),
    ...(n.ca ? [`CA: ${n.ca}`] : []),
  ];
  return lines.join('\n') + '\n';
}

const SIZE = /^\d+$/;

/**
 * Reads a narinfo, accepting only text that Nix reads the same way
 * (NixOS/nix src/libstore/nar-info.cc): like Nix it ignores unknown keys and
 * reads a missing or empty Compression as bzip2. Nix takes a key up to the first ':',
 * skips the next character and reads the value up to the next newline, so a
 * missing final newline (a truncated file), an empty line (Nix would swallow
 * the next line into it) or a ':' not followed by a space is refused, as is
 * anything Nix cannot parse: a hash without its type, a size it cannot hold,
 * a Deriver, reference or CA that is not one. A missing required field, a
 * duplicated one or a malformed line is an error naming `origin`.
 */
export function parseNarinfo(text: string, origin = 'narinfo'): Narinfo {
  const fail = (what: string) => new NarcacheError(`${origin}: ${what}`);
  if (!text.endsWith('\n')) throw fail('does not end with a newline (truncated?)');
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  text
    .slice(0, -1)
    .split('\n')
    .forEach((line, i) => {
      const colon = line.indexOf(':');
      if (colon <= 0 || line[colon + 1] !== ' ') throw fail(`line ${i + 1} is not "Key: value"`);
      const key = line.slice(0, colon);
      const value = line.slice(colon + 2);
      if (key === 'Sig') return void sigs.push(value);
      if (fields.has(key)) throw fail(`field ${key} appears twice`);
      fields.set(key, value);
    });
  const required = (key: string): string => {
    const v = fields.get(key);
    if (v === undefined) throw fail(`field ${key} is missing`);
    return v;
  };
  const size = (key: string, v: string): number => {
    if (!SIZE.test(v)) throw fail(`${key} is not a number: ${JSON.stringify(v)}`);
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw fail(`${key} is too large: ${v}`);
    return n;
  };
  const hash = (key: string, v: string): string => {
    if (!isTypedHash(v)) throw fail(`${key} is not a hash with its type: ${JSON.stringify(v)}`);
    return v;
  };
  const fileSize = fields.get('FileSize');
  const references = (fields.get('References') ?? '').split(' ').filter(Boolean);
  const badReference = references.find((r) => !isStorePathName(r));
  if (badReference !== undefined) throw fail(`reference ${JSON.stringify(badReference)} is not a store path name`);
  const deriver = fields.get('Deriver');
  const hasDeriver = deriver !== undefined && deriver !== 'unknown-deriver';
  if (hasDeriver && !isStorePathName(deriver)) throw fail(`Deriver ${JSON.stringify(deriver)} is not a store path name`);
  const fileHash = fields.get('FileHash');
  const ca = fields.get('CA');
  if (ca && !isContentAddress(ca)) throw fail(`CA ${JSON.stringify(ca)} is not a content address`);
  return {
    storePath: required('StorePath'),
    url: required('URL'),
    compression: fields.get('Compression') || 'bzip2',
    ...(fileHash !== undefined ? { fileHash: hash('FileHash', fileHash) } : {}),
    ...(fileSize !== undefined ? { fileSize: size('FileSize', fileSize) } : {}),
    narHash: hash('NarHash', required('NarHash')),
    narSize: size('NarSize', required('NarSize')),
    references,
    ...(hasDeriver ? { deriver } : {}),
    sigs,
    ...(ca ? { ca } : {}),
  };
}

/** Whether Nix reads `ca` as a content address: `text:sha256:<hash>` or `fixed:[r:]<type>:<hash>`. */
function isContentAddress(ca: string): boolean {
  const m = /^(?:text:(sha256)|fixed:(?:r:)?(\w+)):(.*)$/.exec(ca);
  return m !== null && isHashOfType(m[3], m[1] ?? m[2]);
}

/**
 * The URL as a path relative to the cache if it names a file inside `nar/`,
 * otherwise why not. Nix joins the URL to the cache directory as it is, so
 * `../` or an absolute URL would make it read any file.
 */
export function narUrl(url: string): string | { outside: string } {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith('/')) return { outside: 'is not relative to the cache' };
  const parts = url.split('/');
  if (parts[0] !== 'nar' || parts.length < 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
    return { outside: 'does not name a file inside nar/' };
  }
  return url;
}
