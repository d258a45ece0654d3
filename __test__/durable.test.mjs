// A narinfo is never renamed into place before its own bytes, its NAR and the NAR's
// name are on disk. Watched under strace: the NAR file, nar/ and the narinfo's
// temporary file were each synced (one by one, or all at once by a syncfs of the
// cache's file system) after they were complete and before the narinfo's rename;
// and the build ends by syncing the cache directory after its last rename. So not even a power loss can leave a narinfo that points to a short
// or missing file.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';

import { narinfoFields, readNarinfos } from './helpers/cache.mjs';
import { buildFixtures, CLI, CLOSURE_NIX, cleanupTempDirs, closure, makeTempDir, nixBuild, run } from './helpers/nix.mjs';

const fx = await buildFixtures();
const [debugInfo] = await nixBuild(CLOSURE_NIX, 'debugInfo');

test.after.always(cleanupTempDirs);

/**
 * The completed calls of an `strace -f` log, in the order they completed, split calls
 * joined; except close, placed where it began: its descriptor is free for another
 * thread's open from then on.
 */
function calls(log) {
  const pending = new Map();
  const out = [];
  for (const line of log.split('\n')) {
    const m = /^(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    let [, pid, text] = m;
    if (text.endsWith('<unfinished ...>')) {
      const begun = text.slice(0, -'<unfinished ...>'.length);
      const close = /^close\((\d+)\s*$/.exec(begun);
      if (close) out.push({ name: 'close', args: close[1], ret: 0 });
      else pending.set(pid, begun);
      continue;
    }
    if (/^<\.\.\. close resumed>/.test(text)) continue;
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(text);
    if (resumed) {
      text = (pending.get(pid) ?? '') + resumed[1];
      pending.delete(pid);
    }
    const call = /^(\w+)\((.*)\)\s+= (-?\d+)/.exec(text);
    if (call) out.push({ name: call[1], args: call[2], ret: Number(call[3]) });
  }
  return out;
}

const CASES = [
  { compression: 'zstd', roots: [fx.root], flags: [] },
  { compression: 'none', roots: [fx.root], flags: [] },
  // Listings and debug-info links are published as the narinfos are, before them.
  { compression: 'zstd', roots: [fx.root, debugInfo], flags: ['--write-nar-listing', '--index-debug-info'] },
  // NAR files are written unnamed (O_TMPFILE) and linked by descriptor, which takes
  // CAP_DAC_READ_SEARCH; without it (as any other user than root), through /proc/self/fd.
  { compression: 'zstd', roots: [fx.root], flags: [], wrap: ['setpriv', '--bounding-set=-dac_read_search'], linkedFrom: /^\/proc\/self\/fd\/\d+$/ },
];

for (const { compression, roots, flags, wrap = [], linkedFrom = /^$/ } of CASES) {
  test(`${[...wrap, compression, ...flags].join(' ')}: each narinfo is renamed into place only once it, its NAR and their names are on disk`, async (t) => {
    const paths = await closure(roots);
    const dest = makeTempDir('narcache-durable-');
    const trace = path.join(makeTempDir('narcache-durable-trace-'), 'trace');
    const r = await run('strace', [
      '-f', '-e', 'trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,link,linkat,openat,close', '-o', trace,
      ...wrap, process.execPath, CLI, 'build', ...roots, '-o', dest, '--compression', compression, ...flags,
    ]);
    t.is(r.code, 0, r.stderr);

    const renames = new Map(); // final name → [{ at, from }], a name may be written twice
    const closedAt = new Map(); // file → position of its first close: the end of its writing
    const syncedAt = new Map(); // file or directory → positions of its syncs
    const syncfsAt = []; // positions of syncs of the cache's whole file system
    const openFds = new Map();
    calls(await fs.readFile(trace, 'utf8')).forEach((c, i) => {
      const names = [...c.args.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const fd = Number(c.args.split(',')[0]);
      if (c.ret < 0) return;
      if (/^(rename|link)/.test(c.name)) {
        renames.set(names[1], [...(renames.get(names[1]) ?? []), { at: i, from: names[0] }]);
      } else if (c.name === 'openat' && names[0]?.startsWith(dest)) {
        openFds.set(c.ret, path.normalize(names[0]));
      } else if (c.name === 'close' && openFds.has(fd)) {
        if (!closedAt.has(openFds.get(fd))) closedAt.set(openFds.get(fd), i);
        openFds.delete(fd);
      } else if (c.name === 'syncfs' && openFds.has(fd)) {
        syncfsAt.push(i);
      } else if ((c.name === 'fsync' || c.name === 'fdatasync') && openFds.has(fd)) {
        const file = openFds.get(fd);
        syncedAt.set(file, [...(syncedAt.get(file) ?? []), i]);
      }
    });
    const syncedBetween = (file, after, before) =>
      [...(syncedAt.get(file) ?? []), ...syncfsAt].some((s) => s > after && s < before);
    // The rename that put the file now under `name` in place, as of position `at`.
    const lastRename = (name, at) => (renames.get(name) ?? []).filter((r) => r.at < at).pop();

    const narinfos = await readNarinfos(dest);
    t.is(narinfos.size, paths.length);
    for (const [hash, text] of narinfos) {
      const file = path.join(dest, `${hash}.narinfo`);
      const { at, from: temp } = renames.get(file)?.at(-1) ?? {};
      const nar = path.join(dest, narinfoFields(text).URL);
      const narRename = lastRename(nar, at);
      t.true(at !== undefined && narRename !== undefined && closedAt.has(temp), `${hash}: renames or writes not seen`);
      // Its NAR: synced, name and all, after it got its name; or, when it replaced a file of
      // the same name (the same bytes, packed for another path), synced before it did.
      const narDurable =
        (syncedBetween(nar, narRename.at, at) && syncedBetween(path.dirname(nar), narRename.at, at)) ||
        syncedBetween(narRename.from, -1, narRename.at);
      t.true(narDurable, `${hash}.narinfo renamed (call ${at}) before its NAR, renamed at ${narRename.at}, was on disk`);
      // Written once: linked from an unnamed file. (A second write of the same bytes, for
      // another path, finds the name taken, and renames over it what it synced first.)
      const narWrites = renames.get(nar);
      if (narWrites.length === 1) t.regex(narWrites[0].from, linkedFrom, `${hash}: its NAR file not linked from an unnamed file`);
      t.true(syncedBetween(temp, closedAt.get(temp), at), `${hash}.narinfo renamed before its own bytes were synced`);
      if (flags.length) {
        const listing = lastRename(path.join(dest, `${hash}.ls`), at);
        t.truthy(listing, `${hash}.ls not in place before its narinfo`);
        t.true(syncedBetween(listing?.from, closedAt.get(listing?.from), listing?.at), `${hash}.ls renamed before its bytes were synced`);
      }
    }
    const links = flags.length ? await fs.readdir(path.join(dest, 'debuginfo')) : [];
    t.is(links.length, flags.length ? 2 : 0);
    for (const link of links) {
      const { at, from } = renames.get(path.join(dest, 'debuginfo', link))?.at(-1) ?? {};
      t.true(syncedBetween(from, closedAt.get(from), at), `debuginfo/${link} linked before its bytes were synced`);
      t.true(syncedBetween(path.join(dest, 'debuginfo'), at, Infinity), 'debuginfo/ was not synced after its links');
    }
    const last = Math.max(...[...renames.values()].flat().map((r) => r.at));
    t.true(syncedBetween(path.normalize(dest), last, Infinity), 'the cache directory was not synced after the last rename');
  });
}
