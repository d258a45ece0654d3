/**
 * The debug-info index of a binary cache (`nix copy --to '…?index-debug-info=true'`):
 * for each ELF debug file `lib/debug/.build-id/<2 hex>/<38 hex>.debug` of a
 * NAR, a file `debuginfo/<40 hex>.debug` holding
 * `{"archive":"../nar/<file>","member":"lib/debug/.build-id/…"}`, as Nix
 * writes it (NixOS/nix src/libstore/binary-cache-store.cc); a link already
 * there is never replaced, since a build ID may occur in several paths.
 */
import type { CompanionFile } from './publish/destination';

export const DEBUG_INFO_DIR = 'debuginfo/';

export interface DebugInfoLink {
  archive: string;
  member: string;
}

/** The link to `member` of the NAR file at `url` (`nar/…`, relative to the cache). */
export function debugInfoLink(member: string, url: string): CompanionFile {
  const [dir, file] = member.split('/').slice(-2);
  // nlohmann::json's dump: keys sorted, no spaces; the values are plain ASCII.
  const link: DebugInfoLink = { archive: `../${url}`, member };
  return { name: `${DEBUG_INFO_DIR}${dir}${file}`, data: JSON.stringify(link), keepExisting: true };
}

/** A link's JSON read back; throws on anything else. */
export function parseDebugInfoLink(text: string): DebugInfoLink {
  const link = JSON.parse(text) as Partial<DebugInfoLink> | null;
  if (typeof link?.archive !== 'string' || typeof link.member !== 'string') {
    throw new Error('not {"archive": string, "member": string}');
  }
  return { archive: link.archive, member: link.member };
}
