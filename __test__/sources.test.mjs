// Every source of closure metadata gives the narinfos the Nix-CLI source gives (narcache build
// PATHS, which asks nix-store and nix path-info), byte for byte, but for the lines a source
// does not carry: .attrs.json has no Deriver nor Sig, registration files no CA nor Sig
// (closureInfo's not even a Deriver), a scan none of the three. The inputs are made by real
// Nix: a derivation's own .attrs.json, nix-store --dump-db, nix path-info --json.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

import lib from '../dist/index.js';
import { PathInfoJsonParser, pathInfoFromJson } from '../dist/sources/path-info.js';
import { hashPart, nix32Encode, readNarinfos, withoutFields } from './helpers/cache.mjs';
import {
  CLI,
  CLOSURE_NIX,
  buildFixtures,
  cleanupTempDirs,
  cliBuild,
  closure,
  makeTempDir,
  nixBuild,
  nixEnv,
  run,
  runOk,
} from './helpers/nix.mjs';

const fx = await buildFixtures();
const [hashOnly] = await nixBuild(CLOSURE_NIX, 'hashOnly');
const ROOTS = [fx.root, fx.root2, hashOnly];
const CLOSURE = await closure(ROOTS);


// The reference: the Nix-CLI source.
const referenceDir = makeTempDir('narcache-sources-ref-');
await cliBuild(ROOTS, referenceDir, { args: ['--from-nix'] });
const REFERENCE = await readNarinfos(referenceDir);

const inputs = makeTempDir('narcache-sources-in-');

// A derivation that keeps the .attrs.json Nix gave it; two graphs, whose union is the closure.
const attrsExpr = `
  let fx = import ${CLOSURE_NIX}; in
  derivation {
    name = "attrs-json";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/cat .attrs.json > \${builtins.placeholder "out"}" ];
    __structuredAttrs = true;
    exportReferencesGraph = { first = [ fx.root ]; second = [ fx.root2 fx.hashOnly ]; };
  }`;
const ATTRS = (await runOk('nix-build', ['-E', attrsExpr, '--no-out-link'])).stdout.trim();
const attrsDoc = JSON.parse(await fsp.readFile(ATTRS, 'utf8'));

const DUMP_DB = path.join(inputs, 'dump-db');
await fsp.writeFile(DUMP_DB, (await runOk('nix-store', ['--dump-db', ...CLOSURE])).stdout);

// closureInfo's registration file, made from .attrs.json as nixpkgs' closureInfo does with jq:
// path, narHash as given (sha256:<nix32>), narSize, an empty deriver, the reference count, references.
const CLOSURE_INFO = path.join(inputs, 'registration');
const graph = [...new Map([...attrsDoc.first, ...attrsDoc.second].map((e) => [e.path, e])).values()];
await fsp.writeFile(
  CLOSURE_INFO,
  graph.flatMap((e) => [e.path, e.narHash, e.narSize, '', e.references.length, ...e.references]).join('\n') + '\n',
);

const PATH_INFO_TEXT = (await runOk('nix', ['path-info', '--json', '--recursive', ...ROOTS])).stdout;
const PATH_INFO = path.join(inputs, 'path-info.json');
await fsp.writeFile(PATH_INFO, PATH_INFO_TEXT);

/** Nix ≥ 2.19's shape: an object keyed by path; hashes given in base16, nix32 and SRI in turn. */
function newerPathInfo() {
  const forms = [
    (b) => `sha256:${b.toString('hex')}`,
    (b) => `sha256:${nix32Encode(b)}`,
    (b) => `sha256-${b.toString('base64')}`,
  ];
  return JSON.stringify(
    Object.fromEntries(
      JSON.parse(PATH_INFO_TEXT).map(({ path: p, ...info }, i) => {
        const bytes = Buffer.from(info.narHash.replace(/^sha256-/, ''), 'base64');
        return [p, { ...info, narHash: forms[i % forms.length](bytes) }];
      }),
    ),
  );
}

test.after.always(cleanupTempDirs);

/** Runs `narcache build ARGS -o <fresh dir>`; returns the run and the narinfos written. */
async function build(args, { input, env } = {}) {
  const dir = makeTempDir('narcache-sources-');
  const r = await run(process.execPath, [CLI, 'build', ...args, '-o', dir, '--json'], { input, env });
  return { r, dir, narinfos: await readNarinfos(dir) };
}

/** A non-zero exit with one error line (besides progress lines and commander's usage hint). */
function checkOneLineError(t, r, pattern) {
  t.not(r.code, 0, 'exit code');
  const lines = r.stderr
    .trimEnd()
    .split('\n')
    .filter((l) => !l.startsWith('narcache: wrote ') && l !== '(run with --help for usage)');
  t.is(lines.length, 1, `one error line on stderr, got:\n${r.stderr}`);
  t.regex(lines[0], pattern);
  t.false(r.stderr.includes('    at '), 'no stack trace');
}

/** The narinfos equal the reference's for `paths`, less the lines of `dropped`. */
function sameAsReference(t, narinfos, dropped, paths = CLOSURE) {
  t.deepEqual([...narinfos.keys()].sort(), paths.map(hashPart).sort(), 'one narinfo per path of the closure');
  for (const p of paths) {
    t.is(narinfos.get(hashPart(p)), withoutFields(REFERENCE.get(hashPart(p)), new Set(dropped)), p);
  }
}

test('the reference has the lines that some sources leave out', (t) => {
  const all = [...REFERENCE.values()].join('');
  t.regex(all, /^Deriver: /m);
  t.regex(all, /^CA: fixed:r:sha256:/m);
  t.regex(all, /^CA: text:sha256:/m);
  t.is(REFERENCE.size, CLOSURE.length);
});

const SOURCES = [
  ['--from-attrs .attrs.json (two graphs)', ['--from-attrs', ATTRS], ['Deriver', 'Sig']],
  ['--from-registration (nix-store --dump-db)', ['--from-registration', DUMP_DB], ['CA', 'Sig']],
  ["--from-registration (closureInfo's registration)", ['--from-registration', CLOSURE_INFO], ['Deriver', 'CA', 'Sig']],
  ['--from-path-info (Nix 2.8 array, SRI hashes)', ['--from-path-info', PATH_INFO], []],
  ['--db /nix/var/nix/db', ['--db', '/nix/var/nix/db', ...ROOTS], []],
  ['--db …/db.sqlite', ['--db', '/nix/var/nix/db/db.sqlite', ...ROOTS], []],
  ['--scan', ['--scan', ...ROOTS], ['Deriver', 'CA', 'Sig']],
];

/**
 * A `nix` first on PATH that logs its arguments to `log`, then runs the real one; or, with
 * `missing`, no nix at all.
 */
function nixOnPath({ log, missing } = {}) {
  const bin = makeTempDir('narcache-sources-bin-');
  if (!missing) {
    const real = execFileSync('sh', ['-c', 'command -v nix'], { encoding: 'utf8' }).trim();
    fs.writeFileSync(path.join(bin, 'nix'), `#!/bin/sh\necho "$*" >> ${log}\nexec ${real} "$@"\n`, { mode: 0o755 });
  }
  return { ...nixEnv, PATH: missing ? bin : `${bin}:${process.env.PATH}` };
}

test('the default source reads the local database itself: no nix command run, the narinfos of the Nix-CLI source', async (t) => {
  const log = path.join(makeTempDir('narcache-sources-log-'), 'nix.log');
  const logged = await build(ROOTS, { env: nixOnPath({ log }) });
  t.is(logged.r.code, 0, logged.r.stderr);
  t.false(fs.existsSync(log), 'nix was run');
  sameAsReference(t, logged.narinfos, []);
  // Not even installed.
  const without = await build(ROOTS, { env: nixOnPath({ missing: true }) });
  t.is(without.r.code, 0, without.r.stderr);
  sameAsReference(t, without.narinfos, []);
});

test('the default source asks nix where another store is configured, and with --from-nix', async (t) => {
  for (const [what, args, env] of [
    ['a store setting', ROOTS, { NIX_CONFIG: `${nixEnv.NIX_CONFIG}\nstore = local\n` }],
    ['NIX_REMOTE', ROOTS, { NIX_REMOTE: 'local?root=/' }],
    ['--from-nix', ['--from-nix', ...ROOTS], {}],
  ]) {
    const log = path.join(makeTempDir('narcache-sources-log-'), 'nix.log');
    const { r, narinfos } = await build(args, { env: { ...nixOnPath({ log }), ...env } });
    t.is(r.code, 0, `${what}: ${r.stderr}`);
    t.regex(fs.readFileSync(log, 'utf8'), /path-info --json --recursive/, what);
    sameAsReference(t, narinfos, []);
  }
  // Where the database cannot answer (a path it lacks), Nix's words are told.
  const invalid = `/nix/store/${'0'.repeat(32)}-not-there`;
  const { r } = await build([invalid], { env: nixOnPath({ log: '/dev/null' }) });
  checkOneLineError(t, r, /nix failed: path '.*-not-there' is not valid/);
});

for (const [name, args, dropped] of SOURCES) {
  test(`${name}: the narinfos of the Nix-CLI source${dropped.length ? `, without ${dropped.join(', ')}` : ''}`, async (t) => {
    const { r, narinfos } = await build(args);
    t.is(r.code, 0, r.stderr);
    sameAsReference(t, narinfos, dropped);
  });
}

test('--from-path-info -: the object keyed by path of newer Nix, hashes base16, nix32 and SRI, on stdin', async (t) => {
  const { r, narinfos } = await build(['--from-path-info', '-'], { input: newerPathInfo() });
  t.is(r.code, 0, r.stderr);
  sameAsReference(t, narinfos, []);
});

test('path-info JSON in pieces: each split of Nix\'s output and of mutations of it reads as one JSON.parse of it does', (t) => {
  const whole = (text) => {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch {
      return 'refused';
    }
    if (Array.isArray(doc)) return doc.map((v) => pathInfoFromJson(v?.path, v, 'o'));
    if (doc && typeof doc === 'object') return Object.entries(doc).map(([p, v]) => pathInfoFromJson(p, v, 'o'));
    return 'refused';
  };
  const inPieces = (text, cuts) => {
    const parser = new PathInfoJsonParser('o');
    let from = 0;
    for (const cut of [...cuts, text.length]) {
      parser.write(text.slice(from, cut));
      from = cut;
    }
    return parser.end();
  };
  const outcome = (read) => {
    try {
      return read();
    } catch (e) {
      t.true(e instanceof lib.NarcacheError && !e.message.includes('\n'), String(e));
      // Which error may differ: `[{},]` is an entry without a path read in pieces, not JSON read whole.
      return 'refused';
    }
  };
  let seed = 7;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const texts = [PATH_INFO_TEXT, newerPathInfo(), ` ${PATH_INFO_TEXT}\n`, `${PATH_INFO_TEXT} ]`, `${newerPathInfo()}{}`];
  texts.push('[]', '{}', ' [ ] ', '[,]', '[{}', '[{},]', '5', 'null', '"x"', '');
  for (const base of [PATH_INFO_TEXT, newerPathInfo()]) {
    for (let i = 0; i < 300; i++) {
      const at = rand(base.length);
      const junk = '[]{},"\\: x'[rand(11)];
      texts.push(i % 3 === 0 ? base.slice(0, at) : i % 3 === 1 ? base.slice(0, at) + junk + base.slice(at) : base.slice(0, at) + base.slice(at + 1));
    }
  }
  for (const text of texts) {
    const expected = outcome(() => whole(text));
    const cuts = [...new Set([rand(text.length + 1), rand(text.length + 1), rand(text.length + 1)])].sort((a, b) => a - b);
    t.deepEqual(outcome(() => inPieces(text, cuts)), expected, JSON.stringify(text.slice(0, 80)));
  }
  // Every split point of the real output, one piece each side.
  for (let cut = 0; cut <= PATH_INFO_TEXT.length; cut += 7) t.deepEqual(inPieces(PATH_INFO_TEXT, [cut]), whole(PATH_INFO_TEXT));
});

test('--from-registration -: on stdin', async (t) => {
  const { r, narinfos } = await build(['--from-registration', '-'], { input: await fsp.readFile(DUMP_DB) });
  t.is(r.code, 0, r.stderr);
  sameAsReference(t, narinfos, ['CA', 'Sig']);
});

test('a file source with PATHS: only their closure within the file', async (t) => {
  const extraClosure = await closure([fx.extra]);
  t.true(extraClosure.length > 1 && extraClosure.length < CLOSURE.length);
  for (const args of [['--from-attrs', ATTRS], ['--from-path-info', PATH_INFO]]) {
    const { r, narinfos } = await build([...args, fx.extra]);
    t.is(r.code, 0, r.stderr);
    sameAsReference(t, narinfos, args[0] === '--from-attrs' ? ['Deriver', 'Sig'] : [], extraClosure);
  }
});

test('a NarHash given that the store does not match is refused, and nothing refers to the missing path', async (t) => {
  const victim = CLOSURE.find((p) => p.endsWith('-single-file'));
  const forged = JSON.parse(PATH_INFO_TEXT).map((e) =>
    e.path === victim ? { ...e, narHash: `sha256-${Buffer.alloc(32, 7).toString('base64')}` } : e,
  );
  const { r, narinfos } = await build(['--from-path-info', '-'], { input: JSON.stringify(forged) });
  checkOneLineError(t, r, /single-file: NAR does not match the store's record/);
  t.false(narinfos.has(hashPart(victim)), 'no narinfo for the refused path');
  for (const [h, text] of narinfos) {
    t.false(text.includes(path.basename(victim)), `${h}.narinfo refers to the refused path`);
  }
});

test('bad source input: one line each, no cache entry', async (t) => {
  const notInFile = await build(['--from-attrs', ATTRS, fx.big]);
  checkOneLineError(t, notInFile.r, new RegExp(`${path.basename(fx.big)} is not in ${ATTRS.replace(/[.]/g, '\\.')}`));
  t.is(notInFile.narinfos.size, 0);

  const twoSources = await build(['--db', '/nix/var/nix/db', '--scan', fx.root]);
  checkOneLineError(t, twoSources.r, /cannot be used with/);

  const noPaths = await build(['--db', '/nix/var/nix/db']);
  checkOneLineError(t, noPaths.r, /^narcache: no store paths given$/);

  const notJson = await build(['--from-path-info', '-'], { input: '[{"path": ' });
  checkOneLineError(t, notJson.r, /^narcache: standard input: not JSON/);

  const noGraph = await build(['--from-attrs', '-'], { input: '{"name": "x"}' });
  checkOneLineError(t, noGraph.r, /no exportReferencesGraph/);

  const truncated = await build(['--from-registration', '-'], { input: `${fx.root}\n` });
  checkOneLineError(t, truncated.r, /truncated/);

  const missing = await build(['--from-attrs', path.join(inputs, 'nope.json')]);
  checkOneLineError(t, missing.r, /nope\.json: no such file or directory/);

  const otherStore = await build(['--from-path-info', PATH_INFO, '--store-dir', '/gnu/store']);
  checkOneLineError(t, otherStore.r, /not a store path in \/gnu\/store/);

  const notValid = await build(['--db', '/nix/var/nix/db', '/nix/store/00000000000000000000000000000000-nope']);
  checkOneLineError(t, notValid.r, /00000000000000000000000000000000-nope is not a valid path in the store database/);
});

test('a store not at /nix/store: --store-dir with --db, and with --scan where its files moved (--store-root); Nix substitutes', async (t) => {
  const tmp = makeTempDir('narcache-storedir-');
  await fsp.chmod(tmp, 0o755); // Nix's build users write into the store below it
  const storeDir = path.join(tmp, 'store');
  const store = `local?store=${storeDir}&state=${tmp}/var&log=${tmp}/log`;
  const expr = `
    let mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
        a = mk "a" "echo a > $out";
    in mk "b" "echo \${a} > $out"`;
  const b = (await runOk('nix-build', ['--store', store, '-E', expr, '--no-out-link'])).stdout.trim();
  t.true(b.startsWith(`${storeDir}/`));

  // What Nix writes for this store, less what depends on the compressor.
  const nixCache = makeTempDir('narcache-storedir-nix-');
  await runOk('nix', ['copy', '--from', store, '--to', `file://${nixCache}?compression=none&store=${storeDir}`, b]);
  const nixNarinfos = await readNarinfos(nixCache);
  const fileFields = new Set(['URL', 'Compression', 'FileHash', 'FileSize']);

  const fromDb = await build(['--store-dir', storeDir, '--db', path.join(tmp, 'var', 'db'), b]);
  t.is(fromDb.r.code, 0, fromDb.r.stderr);
  t.is(await fsp.readFile(path.join(fromDb.dir, 'nix-cache-info'), 'utf8'), `StoreDir: ${storeDir}\n`);
  t.is(fromDb.narinfos.size, 2);
  for (const [h, text] of nixNarinfos) t.is(withoutFields(fromDb.narinfos.get(h), fileFields), withoutFields(text, fileFields), h);

  const moved = path.join(tmp, 'moved');
  await runOk('cp', ['-a', storeDir, moved]);
  const scanned = await build(['--store-dir', storeDir, '--store-root', moved, '--scan', path.join(moved, path.basename(b))]);
  t.is(scanned.r.code, 0, scanned.r.stderr);
  for (const [h, text] of fromDb.narinfos) t.is(scanned.narinfos.get(h), withoutFields(text, new Set(['Deriver'])), h);

  const target = `local?root=${tmp}/fresh&store=${storeDir}`;
  await runOk('nix', ['copy', '--from', `file://${scanned.dir}?store=${storeDir}`, '--to', target, '--no-check-sigs', b]);
  await runOk('nix', ['store', 'verify', '--store', target, '--all', '--no-trust']);
  t.is((await runOk('nix-store', ['--store', target, '--query', '--requisites', b])).stdout.trim().split('\n').length, 2);
});
