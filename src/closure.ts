/**
 * The one record every source of closure information produces and every
 * later stage consumes.
 */
export interface PathInfo {
  /** Full store path. */
  path: string;
  /** `sha256:<nix32>`, whatever form the source gave. */
  narHash: string;
  narSize: number;
  /** Full store paths, sorted; may include `path` itself. */
  references: string[];
  /** Full store path of the deriver, when the source knows it. */
  deriver?: string;
  /** Content address (`fixed:…`, `text:…`), for content-addressed paths. */
  ca?: string;
  /** Signatures the source already holds for this path (`name:base64`). */
  sigs: string[];
}

export interface Closure {
  /** The logical store directory written into narinfos. */
  storeDir: string;
  paths: PathInfo[];
}

/**
 * Makes each reference the same string as the path it names, where the
 * closure holds that path: a closure is kept for a whole build, and parsed
 * references are strings of their own (100,000 paths have some 370,000,
 * about 23 MB as copies).
 */
export function shareReferenceStrings(paths: PathInfo[]): void {
  const byPath = new Map(paths.map((info) => [info.path, info.path]));
  for (const info of paths) info.references = info.references.map((r) => byPath.get(r) ?? r);
}
