import type { PathInfo } from './closure';
import { NarcacheError } from './errors';
import { baseName } from './store-path';

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
 * Reads a narinfo. Like Nix it ignores unknown keys and reads a missing
 * Compression as bzip2; a missing required field, a duplicated one, or a
 * malformed line is an error naming `origin`.
 */
export function parseNarinfo(text: string, origin = 'narinfo'): Narinfo {
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (line === '') return;
    const colon = line.indexOf(': ');
    if (colon <= 0) throw new NarcacheError(`${origin}: line ${i + 1} is not "Key: value"`);
    const key = line.slice(0, colon);
    const value = line.slice(colon + 2);
    if (key === 'Sig') return void sigs.push(value);
    if (fields.has(key)) throw new NarcacheError(`${origin}: field ${key} appears twice`);
    fields.set(key, value);
  });
  const required = (key: string): string => {
    const v = fields.get(key);
    if (v === undefined) throw new NarcacheError(`${origin}: field ${key} is missing`);
    return v;
  };
  const size = (key: string, v: string): number => {
    if (!SIZE.test(v)) throw new NarcacheError(`${origin}: ${key} is not a number: ${JSON.stringify(v)}`);
    return Number(v);
  };
  const fileSize = fields.get('FileSize');
  const references = fields.get('References');
  const deriver = fields.get('Deriver');
  const fileHash = fields.get('FileHash');
  const ca = fields.get('CA');
  return {
    storePath: required('StorePath'),
    url: required('URL'),
    compression: fields.get('Compression') ?? 'bzip2',
    ...(fileHash ? { fileHash } : {}),
    ...(fileSize !== undefined ? { fileSize: size('FileSize', fileSize) } : {}),
    narHash: required('NarHash'),
    narSize: size('NarSize', required('NarSize')),
    references: references ? references.split(' ').filter(Boolean) : [],
    ...(deriver && deriver !== 'unknown-deriver' ? { deriver } : {}),
    sigs,
    ...(ca ? { ca } : {}),
  };
}
