import type { PathInfo } from '../closure';
import { NarcacheError } from '../errors';
import { narHashFrom } from '../hash';

/** One path as Nix prints it in JSON (`nix path-info --json`, exportReferencesGraph). */
export interface PathInfoJson {
  path?: string;
  narHash?: string;
  narSize?: number;
  references?: string[];
  deriver?: string | null;
  ca?: string | null;
  signatures?: string[];
}

/**
 * Parses `nix path-info --json` output in either shape Nix has printed: an
 * array of objects with a `path` field (Nix up to 2.18), or an object keyed
 * by store path (Nix 2.19 and later, where a path that is not valid maps to
 * null). NAR hashes may be SRI, base16 or nix32.
 */
export function parsePathInfoJson(text: string, origin = 'path-info JSON'): PathInfo[] {
  const parser = new PathInfoJsonParser(origin);
  parser.write(text);
  return parser.end();
}

const enum Char {
  Quote = 0x22,
  Backslash = 0x5c,
  Comma = 0x2c,
  OpenBracket = 0x5b,
  CloseBracket = 0x5d,
  OpenBrace = 0x7b,
  CloseBrace = 0x7d,
}

function indexOr(text: string, char: string, from: number, otherwise: number): number {
  const i = text.indexOf(char, from);
  return i < 0 ? otherwise : i;
}

/**
 * {@link parsePathInfoJson} on text given in pieces, as a command prints
 * it: each path is parsed on its own as soon as it is whole, so that the
 * whole text (40 MB for 100,000 paths) is never held, nor the generic
 * objects JSON.parse would make of all of it at once.
 */
export class PathInfoJsonParser {
  private readonly infos: PathInfo[] = [];
  /** The top level: '[' or '{' once seen; anything else is parsed whole at the end. */
  private shape: '[' | '{' | 'other' | undefined;
  private depth = 0;
  private inString = false;
  private escaped = false;
  private closed = false;
  /** The current top-level member's text, in the pieces it came in. */
  private member: string[] = [];

  constructor(private readonly origin: string) {}

  write(text: string): void {
    let from = 0;
    let backslash = -1;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (this.shape === undefined) {
        if (c <= 0x20) continue;
        this.shape = c === Char.OpenBracket ? '[' : c === Char.OpenBrace ? '{' : 'other';
        if (this.shape === 'other') break;
        this.depth = 1;
        from = i + 1;
        continue;
      }
      if (this.shape === 'other') break;
      if (this.closed) {
        if (c > 0x20) this.fail(`unexpected ${JSON.stringify(text[i])} after the end`);
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === Char.Backslash) this.escaped = true;
        else if (c === Char.Quote) this.inString = false;
        else {
          // Most of the text is in strings: on to the next quote or backslash.
          if (backslash <= i) backslash = indexOr(text, '\\', i, text.length);
          i = Math.min(indexOr(text, '"', i, text.length), backslash) - 1;
        }
        continue;
      }
      if (c === Char.Quote) this.inString = true;
      else if (c === Char.OpenBracket || c === Char.OpenBrace) this.depth++;
      else if (c === Char.CloseBracket || c === Char.CloseBrace) {
        if (--this.depth === 0) {
          this.member.push(text.slice(from, i));
          this.endMember(true);
          this.closed = true;
        }
      } else if (c === Char.Comma && this.depth === 1) {
        this.member.push(text.slice(from, i));
        this.endMember(false);
        from = i + 1;
      }
    }
    if (this.shape === 'other' || (this.shape && !this.closed)) this.member.push(this.shape === 'other' ? text : text.slice(from));
  }

  end(): PathInfo[] {
    if (this.shape === 'other') {
      parseJson(this.member.join(''), this.origin);
      throw new NarcacheError(`${this.origin}: expected an array or an object of path infos`);
    }
    if (!this.closed) this.fail('unexpected end of input');
    return this.infos;
  }

  private endMember(last: boolean): void {
    const text = this.member.join('').trim();
    this.member = [];
    // `[]`, `{}`: no member; otherwise an empty one is a stray comma.
    if (!text && last && !this.infos.length) return;
    if (this.shape === '[') {
      const v = parseJson(text, this.origin) as PathInfoJson | null;
      this.infos.push(pathInfoFromJson(v?.path, v, this.origin));
    } else {
      const entries = Object.entries(parseJson(`{${text}}`, this.origin) as Record<string, PathInfoJson | null>);
      if (entries.length !== 1) this.fail('expected one path per member');
      this.infos.push(pathInfoFromJson(entries[0][0], entries[0][1], this.origin));
    }
  }

  private fail(message: string): never {
    throw new NarcacheError(`${this.origin}: not JSON (${message})`);
  }
}

/** Parses JSON text; a syntax error becomes one line naming `origin`. */
export function parseJson(text: string, origin: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new NarcacheError(`${origin}: not JSON (${(e as Error).message})`);
  }
}

/** One JSON path info as a PathInfo; only the fields the JSON has are set. */
export function pathInfoFromJson(path: string | undefined, v: PathInfoJson | null | undefined, origin: string): PathInfo {
  if (typeof path === 'string' && v === null) throw new NarcacheError(`${origin}: ${path} is not a valid store path`);
  if (typeof path !== 'string' || !v || typeof v.narHash !== 'string' || typeof v.narSize !== 'number') {
    throw new NarcacheError(`${origin}: entry ${path ?? '(without path)'} lacks path, narHash or narSize`);
  }
  return {
    path,
    narHash: narHashFrom(v.narHash, path, origin),
    narSize: v.narSize,
    references: [...(v.references ?? [])].sort(),
    ...(v.deriver ? { deriver: v.deriver } : {}),
    ...(v.ca ? { ca: v.ca } : {}),
    sigs: v.signatures ?? [],
  };
}
