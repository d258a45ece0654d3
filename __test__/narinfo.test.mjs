// narinfo files: narcache's cache vs the one `nix copy --to file://…` writes for the same
// closure with the same compression. Every line must be equal except URL/FileHash/FileSize
// (compressed bytes may legitimately differ from Nix's encoder); those must be right for
// our own files. With compression none, every line (and every NAR) must be equal.
import test from 'ava';
import fsp from 'node:fs/promises';
import path from 'node:path';

import lib from '../dist/index.js';
import {
  EXT,
  NIX32_RE,
  hashDecompressed,
  hashFile,
  hashPart,
  listTree,
  narinfoFields,
  narinfoLines,
  readNarinfos,
} from './helpers/cache.mjs';
import {
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  dumpDb,
  makeTempDir,
  nixCopyTo,
  pathInfo,
} from './helpers/nix.mjs';

const { buildCache, parseNarinfo } = lib;

const fx = await buildFixtures();
const paths = await closure([fx.root]);
const db = await dumpDb(paths);
const info = await pathInfo(paths);

test.after.always(cleanupTempDirs);

const FILE_KEYS = new Set(['URL', 'FileHash', 'FileSize']);
const CACHE_DIRS = ['realisations', 'log', 'debuginfo', 'build-trace-v2'];

/** ours (narcache CLI) and theirs (nix copy) for one compression, built once per file. */
const built = new Map();
function caches(compression) {
  if (!built.has(compression)) {
    built.set(
      compression,
      (async () => {
        const ours = makeTempDir(`narcache-ours-${compression}-`);
        const theirs = makeTempDir(`narcache-nix-${compression}-`);
        const [{ summary }] = await Promise.all([
          cliBuild([fx.root], ours, { compression }),
          nixCopyTo(theirs, [fx.root], compression),
        ]);
        return { ours, theirs, summary };
      })(),
    );
  }
  return built.get(compression);
}

async function checkCacheLayout(t, ours, compression) {
  const tree = await listTree(ours);
  // nix-cache-info: Nix writes exactly "StoreDir: /nix/store\n"; readers also accept
  // WantMassQuery and Priority.
  const cacheInfo = await fsp.readFile(path.join(ours, 'nix-cache-info'), 'utf8');
  const ciLines = narinfoLines(cacheInfo);
  t.deepEqual(ciLines[0], ['StoreDir', '/nix/store'], 'nix-cache-info starts with StoreDir: /nix/store');
  for (const [k, v] of ciLines.slice(1)) {
    t.true(
      (k === 'WantMassQuery' && /^[01]$/.test(v)) || (k === 'Priority' && /^\d+$/.test(v)),
      `unexpected nix-cache-info line ${k}: ${v}`,
    );
  }
  for (const d of CACHE_DIRS) t.is(tree.get(d)?.type, 'dir', `${d}/ exists`);
  t.is(tree.get('nar')?.type, 'dir', 'nar/ exists');

  // exactly one narinfo per path of the closure, and nothing else lying around
  const expectNarinfos = new Set(paths.map((p) => `${hashPart(p)}.narinfo`));
  const narinfos = await readNarinfos(ours);
  const urls = new Set();
  for (const text of narinfos.values()) urls.add(narinfoFields(text).URL);
  const expected = new Set(['nix-cache-info', 'nar', ...CACHE_DIRS, ...expectNarinfos, ...urls]);
  const unexpected = [...tree.keys()].filter((k) => !expected.has(k));
  t.deepEqual(unexpected, [], 'no stray files (temporary files, unreferenced NARs) in the cache');
  t.deepEqual([...narinfos.keys()].sort(), paths.map(hashPart).sort(), 'one narinfo per closure path');
  for (const u of urls) {
    t.is(tree.get(u)?.type, 'file', `${u} exists`);
    t.true(u.endsWith(EXT[compression]), `${u} ends with ${EXT[compression]}`);
  }
}

for (const compression of ['zstd', 'xz', 'none']) {
  test(`${compression}: every narinfo line equals nix copy's (except URL/FileHash/FileSize)`, async (t) => {
    const { ours, theirs } = await caches(compression);
    const ourInfos = await readNarinfos(ours);
    const nixInfos = await readNarinfos(theirs);
    t.deepEqual([...nixInfos.keys()].sort(), paths.map(hashPart).sort(), 'sanity: nix copy wrote the closure');

    for (const p of paths) {
      const hp = hashPart(p);
      const mine = ourInfos.get(hp);
      const nix = nixInfos.get(hp);
      if (mine === undefined) {
        t.fail(`no narinfo for ${p}`);
        continue;
      }
      let mineLines;
      try {
        mineLines = narinfoLines(mine);
      } catch (e) {
        t.fail(`${hp}.narinfo: ${e.message}`);
        continue;
      }
      const nixLines = narinfoLines(nix);
      // same keys in the same order (URL/FileHash/FileSize included)
      t.deepEqual(
        mineLines.map(([k]) => k),
        nixLines.map(([k]) => k),
        `${hp}.narinfo: keys and their order`,
      );
      // every other line byte-identical (StorePath, Compression, NarHash, NarSize,
      // References incl. "References: " when empty, Deriver, CA, Sig)
      const keep = (lines) => lines.filter(([k]) => compression === 'none' || !FILE_KEYS.has(k));
      t.deepEqual(keep(mineLines), keep(nixLines), `${hp}.narinfo vs nix copy`);
      if (compression === 'none') t.is(mine, nix, `${hp}.narinfo is byte-identical to nix copy's`);
    }
  });

  test(`${compression}: URL/FileHash/FileSize describe our own files, which decompress to the NAR`, async (t) => {
    const { ours } = await caches(compression);
    const ourInfos = await readNarinfos(ours);
    for (const p of paths) {
      const text = ourInfos.get(hashPart(p));
      if (text === undefined) {
        t.fail(`no narinfo for ${p}`);
        continue;
      }
      const f = narinfoFields(text);
      const m = /^sha256:([0-9a-df-np-sv-z]{52})$/.exec(f.FileHash ?? '');
      t.truthy(m, `${p}: FileHash ${f.FileHash} is sha256:<nix32>`);
      if (!m) continue;
      t.is(f.URL, `nar/${m[1]}${EXT[compression]}`, `${p}: URL is nar/<FileHash>${EXT[compression]}`);
      const file = path.join(ours, f.URL);
      const h = await hashFile(file);
      t.is(f.FileHash, `sha256:${h.nix32}`, `${p}: FileHash is the hash of ${f.URL}`);
      t.is(f.FileSize, String(h.size), `${p}: FileSize is the size of ${f.URL}`);
      const nar = await hashDecompressed(file, compression);
      t.is(`sha256:${nar.nix32}`, db.get(p).narHash, `${p}: ${f.URL} decompresses to the NAR (hash)`);
      t.is(nar.size, db.get(p).narSize, `${p}: ${f.URL} decompresses to the NAR (size)`);
    }
  });

  test(`${compression}: cache layout and --json summary`, async (t) => {
    const { ours, summary } = await caches(compression);
    await checkCacheLayout(t, ours, compression);
    const narinfos = [...(await readNarinfos(ours)).values()].map(narinfoFields);
    const narSum = narinfos.reduce((a, f) => a + Number(f.NarSize), 0);
    const fileSum = narinfos.reduce((a, f) => a + Number(f.FileSize), 0);
    const uniqueFiles = new Map(narinfos.map((f) => [f.URL, Number(f.FileSize)]));
    const uniqueFileSum = [...uniqueFiles.values()].reduce((a, b) => a + b, 0);
    t.is(summary.paths, paths.length, 'paths');
    t.is(summary.written, paths.length, 'written');
    t.is(summary.skipped, 0, 'skipped');
    t.is(summary.narBytes, narSum, 'narBytes = sum of NarSize');
    // dup-a and dup-b share one NAR file: accept per-path or per-file accounting
    t.true(
      summary.fileBytes === fileSum || summary.fileBytes === uniqueFileSum,
      `fileBytes ${summary.fileBytes} is ${fileSum} (per path) or ${uniqueFileSum} (per file)`,
    );
    t.is(typeof summary.seconds, 'number');
    t.true(summary.seconds >= 0);
  });
}

test('parseNarinfo reads the narinfo files Nix writes', async (t) => {
  const { theirs } = await caches('xz');
  const nixInfos = await readNarinfos(theirs);
  for (const p of paths) {
    const text = nixInfos.get(hashPart(p));
    const f = narinfoFields(text);
    const r = parseNarinfo(text);
    const rec = db.get(p);
    const pi = info.get(p);
    t.is(r.storePath, p);
    t.is(r.url, f.URL);
    t.is(r.compression, 'xz');
    t.is(r.fileHash, f.FileHash);
    t.is(Number(r.fileSize), Number(f.FileSize));
    t.is(r.narHash, rec.narHash);
    t.is(Number(r.narSize), rec.narSize);
    t.deepEqual([...r.references].sort(), rec.references.map((x) => path.basename(x)).sort(), `${p} references`);
    if (rec.deriver) {
      t.true(
        r.deriver === path.basename(rec.deriver) || r.deriver === rec.deriver,
        `${p}: deriver ${r.deriver} vs ${rec.deriver}`,
      );
    } else {
      t.falsy(r.deriver, `${p} has no deriver`);
    }
    t.deepEqual(r.sigs ?? [], []);
    if (pi.ca) t.is(r.ca, pi.ca, `${p} CA`);
    else t.falsy(r.ca, `${p} has no CA`);
  }
});

test('buildCache (library) writes the same narinfos as the CLI', async (t) => {
  const { ours } = await caches('zstd');
  const dest = makeTempDir('narcache-lib-');
  const progress = [];
  const summary = await buildCache({
    paths: [fx.root],
    dest,
    compression: 'zstd',
    jobs: 2,
    onProgress: (e) => progress.push(e),
  });
  t.is(summary.paths, paths.length);
  t.is(summary.written, paths.length);
  t.is(summary.skipped, 0);
  const a = await readNarinfos(ours);
  const b = await readNarinfos(dest);
  t.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const [hp, text] of a) {
    const strip = (s) => narinfoLines(s).filter(([k]) => !FILE_KEYS.has(k));
    t.deepEqual(strip(b.get(hp)), strip(text), `${hp}.narinfo`);
    const f = narinfoFields(b.get(hp));
    t.regex(f.FileHash.slice(7), NIX32_RE);
    const h = await hashFile(path.join(dest, f.URL));
    t.is(f.FileHash, `sha256:${h.nix32}`);
  }
});

test('caches are byte-identical whatever --jobs (FORMATS.md: one multi-threaded encoder)', async (t) => {
  const results = [];
  for (const compression of ['zstd', 'xz']) {
    const one = makeTempDir(`narcache-j1-${compression}-`);
    const four = makeTempDir(`narcache-j4-${compression}-`);
    await cliBuild([fx.root], one, { compression, jobs: 1 });
    await cliBuild([fx.root], four, { compression, jobs: 4 });
    const a = await readNarinfos(one);
    const b = await readNarinfos(four);
    for (const [hp, text] of a) {
      if (b.get(hp) !== text) results.push(`${compression}: ${hp}.narinfo differs between --jobs 1 and --jobs 4`);
    }
  }
  t.deepEqual(results, []);
});

test('--level: other compression levels still give correct files and the same narinfo lines', async (t) => {
  const { theirs } = await caches('xz');
  const nixInfos = await readNarinfos(theirs);
  for (const [compression, level] of [
    ['zstd', 19],
    ['xz', 0],
  ]) {
    const dest = makeTempDir(`narcache-level-${compression}-`);
    const { summary } = await cliBuild([fx.root], dest, { compression, level });
    t.is(summary.written, paths.length);
    const ours = await readNarinfos(dest);
    for (const p of paths) {
      const text = ours.get(hashPart(p));
      if (!text) {
        t.fail(`${compression} level ${level}: no narinfo for ${p}`);
        continue;
      }
      const strip = (s) => narinfoLines(s).filter(([k]) => !FILE_KEYS.has(k) && k !== 'Compression');
      t.deepEqual(strip(text), strip(nixInfos.get(hashPart(p))), `${compression} ${level}: ${p}`);
      const f = narinfoFields(text);
      t.is(f.Compression, compression);
      const file = path.join(dest, f.URL);
      const h = await hashFile(file);
      t.is(f.FileHash, `sha256:${h.nix32}`);
      t.is(f.FileSize, String(h.size));
      const nar = await hashDecompressed(file, compression);
      t.is(`sha256:${nar.nix32}`, db.get(p).narHash, `${compression} ${level}: ${p} decompresses to the NAR`);
    }
  }
});
