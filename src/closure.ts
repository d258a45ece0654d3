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
