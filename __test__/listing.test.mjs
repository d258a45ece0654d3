// What nix copy writes beside the narinfos when asked: NAR listings (<hash>.ls,
// write-nar-listing=true), the debug-info index (debuginfo/<build-id>.debug,
// index-debug-info=true), and nix-cache-info's Priority and WantMassQuery. Each file must
// be byte-identical to what Nix 2.8 writes for the same paths, and Nix must read it.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';

import {
  buildFixtures,
  cleanupTempDirs,
  CLOSURE_NIX,
  cliBuild,
  closure,
  makeTempDir,
  nixBuild,
  nixCopyTo,
  run,
  runCli,
  runOk,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const [debugInfo, debugInfoAgain] = await nixBuild(CLOSURE_NIX, ['debugInfo', 'debugInfoAgain']);
// `tree` holds names that are not UTF-8, `debugInfo` control characters, quotes and
// backslashes; `debugInfoAgain` repeats a build ID of `debugInfo`.
const first = [...(await closure([fx.root])), debugInfo];
const NIX_PARAMS = { 'write-nar-listing': 'true', 'index-debug-info': 'true' };
const FLAGS = ['--write-nar-listing', '--index-debug-info'];

test.after.always(cleanupTempDirs);

const hashPartOf = (storePath) => path.basename(storePath).slice(0, 32);

/** name → bytes of the files in `dir` whose names pass `keep`. */
async function filesOf(dir, keep = () => true) {
  const names = (await fs.readdir(dir)).filter(keep).sort();
  return new Map(await Promise.all(names.map(async (n) => [n, await fs.readFile(path.join(dir, n))])));
}

function sameFiles(t, ours, theirs, what) {
  t.deepEqual([...ours.keys()], [...theirs.keys()], `${what}: the same files`);
  for (const [name, bytes] of theirs) t.true(bytes.equals(ours.get(name) ?? Buffer.alloc(0)), `${what}: ${name} is byte-identical`);
}

// Uncompressed, so that the NAR files, and with them the debug-info links' archives, have
// the same names in both caches. Two steps, so that a build ID that two paths share is
// linked from the path copied first in both (one `nix copy` may copy them in any order).
async function bothCaches() {
  const theirs = makeTempDir('narcache-ls-nix-');
  const ours = makeTempDir('narcache-ls-ours-');
  for (const paths of [first, [debugInfoAgain]]) {
    await nixCopyTo(theirs, paths, 'none', { params: NIX_PARAMS });
    await cliBuild(paths, ours, { compression: 'none', args: FLAGS });
  }
  return { theirs, ours };
}
const caches = bothCaches();

test('listings are byte-identical to those nix copy writes, odd names included', async (t) => {
  const { theirs, ours } = await caches;
  const isListing = (n) => n.endsWith('.ls');
  const listings = await filesOf(theirs, isListing);
  t.is(listings.size, first.length + 1, 'Nix lists every path copied');
  sameFiles(t, await filesOf(ours, isListing), listings, 'listings');
  // The odd names are there, escaped as Nix escapes them.
  const odd = listings.get(`${hashPartOf(debugInfo)}.ls`).toString('latin1');
  t.true(odd.includes('"ctl\\u0001\\u001f\x7f":'), odd);
  t.true(odd.includes('"new\\nline":') && odd.includes('"q\\"uote":') && odd.includes('"back\\\\slash":'), odd);
  const tree = listings.get(`${hashPartOf(first.find((p) => p.endsWith('-tree')))}.ls`);
  t.true(tree.includes(Buffer.from('"bad\xffname":', 'latin1')), 'a name that is not UTF-8 is kept as its bytes');
});

test('debug-info links are those nix copy writes, the first of a build ID kept', async (t) => {
  const { theirs, ours } = await caches;
  const links = await filesOf(path.join(theirs, 'debuginfo'));
  t.deepEqual([...links.keys()], ['0f00112233445566778899aabbccddeeff001122.debug', 'abcdef0123456789abcdef0123456789abcdef01.debug']);
  sameFiles(t, await filesOf(path.join(ours, 'debuginfo')), links, 'debuginfo/');
  const link = JSON.parse(links.get('abcdef0123456789abcdef0123456789abcdef01.debug'));
  t.is(link.member, 'lib/debug/.build-id/ab/cdef0123456789abcdef0123456789abcdef01.debug');
  const narinfo = await fs.readFile(path.join(ours, `${hashPartOf(debugInfo)}.narinfo`), 'utf8');
  t.is(link.archive, `../${/^URL: (.*)$/m.exec(narinfo)[1]}`, 'the link names the NAR of the path copied first');
});

test('without the flags, no listing and no link is written', async (t) => {
  const dir = makeTempDir('narcache-ls-none-');
  const { summary } = await cliBuild([debugInfo], dir, { compression: 'none' });
  t.like(summary, { written: 1, listings: 0, debugInfo: 0 });
  t.deepEqual((await fs.readdir(dir)).filter((n) => n.endsWith('.ls')), []);
  t.deepEqual(await fs.readdir(path.join(dir, 'debuginfo')), []);
});

// Nix 2.8 reads a listing where it keeps NARs it fetched (the store's local-nar-cache):
// with `<hash>.nar` there, `nix store ls` and `nix store cat` answer from `<hash>.ls`
// alone, reading a file's contents at the narOffset it gives. That file is the listing's
// root object, without the {"version":1,"root":…} around it.
test('Nix lists and reads files through our listing', async (t) => {
  const { ours } = await caches;
  const narCache = makeTempDir('narcache-ls-local-');
  const hash = hashPartOf(debugInfo);
  const listing = await fs.readFile(path.join(ours, `${hash}.ls`));
  const prefix = Buffer.from('{"version":1,"root":');
  t.true(listing.subarray(0, prefix.length).equals(prefix));
  await fs.writeFile(path.join(narCache, `${hash}.ls`), listing.subarray(prefix.length, -1));
  // Nix takes every type, size and mode from the listing and reads a file's bytes from
  // this NAR at the listing's narOffset: a wrong offset gives other bytes.
  await runOk('sh', ['-c', 'nix-store --dump "$1" > "$2"', 'sh', debugInfo, path.join(narCache, `${hash}.nar`)]);
  const store = `file://${ours}?local-nar-cache=${narCache}`;
  const viaListing = await runOk('nix', ['store', 'ls', '--store', store, '--recursive', '--long', debugInfo]);
  const local = await runOk('nix', ['store', 'ls', '--recursive', '--long', debugInfo]);
  t.is(viaListing.stdout, local.stdout);
  t.true(viaListing.stdout.includes('-r-xr-xr-x'), 'the executable bit comes through');
  for (const file of ['bin/hi', 'lib/debug/.build-id/0f/00112233445566778899aabbccddeeff001122.debug', 'odd/q"uote']) {
    const cat = await runOk('nix', ['store', 'cat', '--store', store, `${debugInfo}/${file}`]);
    t.is(cat.stdout, await fs.readFile(path.join(debugInfo, file), 'utf8'), file);
  }
});

test('--priority and --want-mass-query go into a new nix-cache-info, and an existing one must agree', async (t) => {
  const dir = makeTempDir('narcache-ls-info-');
  await cliBuild([fx.extra], dir, { args: ['--priority', '30', '--want-mass-query'] });
  t.is(await fs.readFile(path.join(dir, 'nix-cache-info'), 'utf8'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n');
  // The same again, or nothing said: fine.
  await cliBuild([fx.extra], dir, { args: ['--priority', '30', '--want-mass-query'] });
  await cliBuild([fx.extra], dir);
  const other = await runCli(['build', fx.extra, '-o', dir, '--priority', '40']);
  t.is(other.code, 1);
  t.is(other.stderr, `narcache: ${dir} has Priority 30 in its nix-cache-info, not 40\n`);
  const plain = makeTempDir('narcache-ls-plain-');
  await cliBuild([fx.extra], plain);
  const noMass = await runCli(['build', fx.extra, '-o', plain, '--want-mass-query']);
  t.is(noMass.code, 1);
  t.is(noMass.stderr, `narcache: ${plain} has no WantMassQuery in its nix-cache-info, not 1\n`);
  const bad = await runCli(['build', fx.extra, '-o', plain, '--priority', 'high']);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^narcache: option '--priority <n>' argument 'high' is invalid/);
});

// Nix tries substituters lowest Priority first, whatever their order in `substituters`.
test('Nix substitutes from the cache of lower priority', async (t) => {
  const target = fx.extra;
  const [a, b] = [makeTempDir('narcache-prio-a-'), makeTempDir('narcache-prio-b-')];
  const from = async (priorities) => {
    for (const [dir, priority] of [
      [a, priorities[0]],
      [b, priorities[1]],
    ]) {
      await fs.rm(dir, { recursive: true, force: true });
      await cliBuild([target], dir, { args: ['--priority', String(priority)] });
    }
    const store = path.join(makeTempDir('narcache-prio-store-'), 'root');
    const r = await run('nix-store', [
      '--store',
      store,
      '--realise',
      target,
      '--option',
      'substituters',
      `file://${a} file://${b}`,
      '--option',
      'require-sigs',
      'false',
    ]);
    t.is(r.code, 0, r.stderr);
    return /copying path '.*-extra' from 'file:\/\/(.*)'/.exec(r.stderr)?.[1];
  };
  t.is(await from([50, 10]), b);
  t.is(await from([10, 50]), a);
});

/** A copy of a cache, to damage. */
async function copyOf(dir) {
  const copy = path.join(makeTempDir('narcache-ls-copy-'), 'cache');
  await runOk('cp', ['-a', dir, copy]);
  return copy;
}

async function verifyJson(dir) {
  const r = await runCli(['verify', dir, '--json']);
  return { code: r.code, report: JSON.parse(r.stdout) };
}

test('verify checks listings and debug-info links, ours and Nix’s alike', async (t) => {
  const { theirs, ours } = await caches;
  for (const dir of [ours, theirs]) {
    const { code, report } = await verifyJson(dir);
    t.is(code, 0, JSON.stringify(report.problems));
    t.like(report, { ok: true, listings: first.length + 1, debugInfoLinks: 2 });
  }
});

test('verify reports a listing that disagrees with its NAR, and accepts one that says the same otherwise', async (t) => {
  const { ours } = await caches;
  const dir = await copyOf(ours);
  const name = `${hashPartOf(debugInfo)}.ls`;
  const file = path.join(dir, name);
  const original = await fs.readFile(file, 'latin1');
  const cases = [
    [original.replace('"size":3,"executable":true', '"size":4,"executable":true'), 'entry "bin/hi": size is 4 in the listing, 3 in the NAR'],
    [original.replace(/("hi":\{[^}]*"narOffset":)(\d+)/, (_, a, n) => `${a}${Number(n) + 8}`), 'entry "bin/hi": narOffset is'],
    [original.replace('"size":3,"executable":true', '"size":3'), 'entry "bin/hi": executable is false in the listing, true in the NAR'],
    [original.replace('"target":"hi"', '"target":"ho"'), 'entry "bin/link": target is "ho" in the listing, "hi" in the NAR'],
    [original.replace('"link":{"type":"symlink","target":"hi"}', '"link":{"type":"regular","size":0,"narOffset":8}'), 'entry "bin/link": type is "regular"'],
    [original.replace(',"link":{"type":"symlink","target":"hi"}', ''), 'entry "bin/link" is missing from the listing'],
    [original.replace('"link":', '"extra":{"type":"directory","entries":{}},"link":'), 'entry "bin/extra" is in the listing but not in the NAR'],
    [original.slice(0, -10), 'does not parse as JSON'],
  ];
  for (const [text, problem] of cases) {
    t.not(text, original);
    await fs.writeFile(file, text, 'latin1');
    const { code, report } = await verifyJson(dir);
    t.is(code, 1, problem);
    t.is(report.problems.length, 1, JSON.stringify(report.problems));
    t.is(report.problems[0]?.file, name);
    t.is(report.problems[0]?.storePath, debugInfo);
    t.true(report.problems[0]?.problem.includes(problem), `${report.problems[0]?.problem} ⊇ ${problem}`);
  }
  // As a newer Nix writes it: `executable` always, another layout.
  const parsed = JSON.parse(original);
  const addExecutable = (node) => {
    if (node.type === 'regular') node.executable ??= false;
    for (const child of Object.values(node.entries ?? {})) addExecutable(child);
  };
  addExecutable(parsed.root);
  await fs.writeFile(file, JSON.stringify(parsed, null, 2), 'latin1');
  const { code, report } = await verifyJson(dir);
  t.is(code, 0, JSON.stringify(report.problems));
});

test('verify reports a dangling debug-info link and one whose member is not in its NAR', async (t) => {
  const { ours } = await caches;
  const dir = await copyOf(ours);
  const links = path.join(dir, 'debuginfo');
  const key = '0f00112233445566778899aabbccddeeff001122.debug';
  const link = JSON.parse(await fs.readFile(path.join(links, key), 'utf8'));
  const missing = 'nar/0000000000000000000000000000000000000000000000000000.nar';
  await fs.writeFile(path.join(links, key), JSON.stringify({ ...link, archive: `../${missing}` }));
  const stranger = 'aa00112233445566778899aabbccddeeff001122.debug';
  await fs.writeFile(path.join(links, stranger), JSON.stringify({ ...link, member: 'lib/debug/.build-id/aa/00112233445566778899aabbccddeeff001122.debug' }));
  await fs.writeFile(path.join(links, 'ffff.debug'), '{"archive":"../../etc/passwd","member":"x/y"}');
  const { code, report } = await verifyJson(dir);
  t.is(code, 1);
  t.deepEqual(
    report.problems.map((p) => [p.file, p.problem]),
    [
      [`debuginfo/${key}`, `its archive ../${missing} is missing`],
      [`debuginfo/${stranger}`, `its archive ${link.archive} has no debug-info file lib/debug/.build-id/aa/00112233445566778899aabbccddeeff001122.debug`],
      ['debuginfo/ffff.debug', 'its archive "../../etc/passwd" does not name a file inside nar/'],
    ],
  );
});

test('verify follows a debug-info link into a NAR that no narinfo names, as an interrupted build leaves it', async (t) => {
  const { ours } = await caches;
  const dir = await copyOf(ours);
  // The path's narinfo was never published: its NAR, listing and links are there.
  await fs.rm(path.join(dir, `${hashPartOf(debugInfo)}.narinfo`));
  const sound = await verifyJson(dir);
  t.is(sound.code, 0, JSON.stringify(sound.report.problems));
  t.is(sound.report.orphans.length, 1);
  const key = '0f00112233445566778899aabbccddeeff001122.debug';
  const link = JSON.parse(await fs.readFile(path.join(dir, 'debuginfo', key), 'utf8'));
  const member = 'lib/debug/.build-id/0f/00112233445566778899aabbccddeeff001199.debug';
  await fs.writeFile(path.join(dir, 'debuginfo', '0f00112233445566778899aabbccddeeff001199.debug'), JSON.stringify({ ...link, member }));
  const { code, report } = await verifyJson(dir);
  t.is(code, 1);
  t.deepEqual(
    report.problems.map((p) => [p.file, p.problem]),
    [['debuginfo/0f00112233445566778899aabbccddeeff001199.debug', `its archive ${link.archive} has no debug-info file ${member}`]],
  );
});
