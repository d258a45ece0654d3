/**
 * NAR listings, `<hash>.ls` beside a narinfo (`nix copy --to '…?write-nar-listing=true'`):
 * the JSON tree of a NAR's entries, with each file's size, executable bit
 * and offset in the NAR. The Rust core writes them as Nix 2.8 does, byte for
 * byte; here one that a cache holds is checked against its NAR.
 */

// A listing takes some 100 bytes per entry: this allows millions.
export const MAX_LISTING_BYTES = 512 << 20;

/** The listing of the store path whose hash part is `hashPart`, relative to the cache. */
export function listingName(hashPart: string): string {
  return `${hashPart}.ls`;
}

interface ListedNode {
  type?: unknown;
  size?: unknown;
  executable?: unknown;
  narOffset?: unknown;
  target?: unknown;
  entries?: unknown;
}

/**
 * Why the listing `stored` does not describe the NAR whose listing (as
 * the Rust core makes it from the NAR) is `expected`, or undefined if it
 * does. Byte-identical is the rule for listings narcache and Nix 2.8 write;
 * another writer's (a newer Nix always writes `executable`) passes if it
 * says the same: every entry, type, size, executable bit, offset and target.
 */
export function listingMismatch(stored: Buffer, expected: Buffer): string | undefined {
  if (stored.equals(expected)) return undefined;
  // Names are raw bytes, not always UTF-8: read as Latin-1, a byte is a character.
  let found: { version?: unknown; root?: unknown } | null;
  try {
    found = JSON.parse(stored.toString('latin1')) as typeof found;
  } catch (e) {
    return `does not parse as JSON (${(e as Error).message})`;
  }
  if (found?.version !== 1) return `has version ${JSON.stringify(found?.version)}, not 1`;
  const want = JSON.parse(expected.toString('latin1')) as { root: ListedNode };
  const mismatch = nodeMismatch(found.root, want.root, '');
  return mismatch && `does not agree with the NAR: ${mismatch}`;
}

function nodeMismatch(found: unknown, want: ListedNode, at: string): string | undefined {
  const where = at ? `entry ${show(at)}` : 'the root';
  if (!isObject(found)) return `${where} is not a JSON object`;
  const listed = found as ListedNode;
  const differs = (field: string, value: unknown, actual: unknown) =>
    `${where}: ${field} is ${show(value)} in the listing, ${show(actual)} in the NAR`;
  if (listed.type !== want.type) return differs('type', listed.type, want.type);
  if (want.type === 'regular') {
    if (listed.size !== want.size) return differs('size', listed.size, want.size);
    if ((listed.executable === true) !== (want.executable === true)) return differs('executable', listed.executable ?? false, want.executable ?? false);
    if (listed.narOffset !== want.narOffset) return differs('narOffset', listed.narOffset, want.narOffset);
    return undefined;
  }
  if (want.type === 'symlink') return listed.target === want.target ? undefined : differs('target', listed.target, want.target);
  if (!isObject(listed.entries)) return `${where}: entries is not a JSON object`;
  const listedEntries = listed.entries as Record<string, unknown>;
  const wantEntries = want.entries as Record<string, ListedNode>;
  const child = (name: string) => (at ? `${at}/${name}` : name);
  for (const name of Object.keys(wantEntries)) {
    if (!Object.hasOwn(listedEntries, name)) return `entry ${show(child(name))} is missing from the listing`;
    const mismatch = nodeMismatch(listedEntries[name], wantEntries[name], child(name));
    if (mismatch) return mismatch;
  }
  const extra = Object.keys(listedEntries).find((name) => !Object.hasOwn(wantEntries, name));
  return extra === undefined ? undefined : `entry ${show(child(extra))} is in the listing but not in the NAR`;
}

function isObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A value of the listing as JSON, its strings' bytes read back as UTF-8 where they are. */
function show(value: unknown): string {
  const json = JSON.stringify(value) ?? 'absent';
  return typeof value === 'string' ? Buffer.from(json, 'latin1').toString('utf8') : json;
}
