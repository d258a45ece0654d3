/**
 * The debug-info index of a binary cache (`nix copy --to '…?index-debug-info=true'`):
 * for each ELF debug file `lib/debug/.build-id/<2 hex>/<38 hex>.debug` of a
 * NAR, a file `debuginfo/<40 hex>.debug` holding
 * `{"archive":"../nar/<file>","member":"lib/debug/.build-id/…"}`, as Nix
 * writes it (NixOS/nix src/libstore/binary-cache-store.cc); a link already
 * there is never replaced, since a build ID may occur in several paths.
 */
import type { Cache } from './cache';
import type { CompanionFile } from './publish/destination';
import { runWithBudget } from './schedule';

export const DEBUG_INFO_DIR = 'debuginfo/';
// A link is two short strings; a larger file is not one.
const MAX_LINK_BYTES = 64 << 10;
// Reading links waits on the disk or the network, not the CPU.
const READ_CONCURRENCY = 32;

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

/**
 * Reads every debug-info link of the cache, a few at once: `onLink` gets
 * each one that parses, with its bytes as read; `onBad` each one that
 * cannot be read or does not parse (one gone meanwhile included).
 */
export async function forEachDebugInfoLink(
  cache: Cache,
  onLink: (file: string, link: DebugInfoLink, bytes: Buffer) => void,
  onBad: (file: string, e: Error) => void = () => {},
): Promise<void> {
  const files = await cache.files(DEBUG_INFO_DIR, '.debug');
  await runWithBudget(files, READ_CONCURRENCY, () => 1, async (file) => {
    let bytes: Buffer;
    let link: DebugInfoLink;
    try {
      bytes = await cache.readFile(file, MAX_LINK_BYTES);
      link = parseDebugInfoLink(bytes.toString('utf8'));
    } catch (e) {
      onBad(file, e as Error);
      return;
    }
    onLink(file, link, bytes);
  }, () => false);
}
