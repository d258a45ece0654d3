// narcache as a user gets it from npm: the tarballs of scripts/pack.sh installed into a
// fresh project with `npm install --offline`, in a network namespace with no network, with a
// PATH that has node, npm, sh and Nix but no cargo or rustc — so the prebuilt binary is the
// only way the native core can load. Then the command (`npx narcache`), the library from
// CommonJS and from ES modules, and TypeScript against the shipped types; every cache built
// is substituted from by real Nix.
import test from 'ava';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

import {
  CLOSURE_NIX,
  NIX_CONFIG,
  REPO,
  cleanupTempDirs,
  closure,
  dumpDb,
  makeTempDir,
  nixBuild,
  run,
  runOk,
  substitute,
} from './helpers/nix.mjs';

const TSC = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
const PLATFORM = 'linux-x64-gnu';
// What a user's machine has: Node and npm, a shell, Nix. No Rust.
const TOOLS = ['node', 'npm', 'npx', 'sh', 'nix', 'nix-store'];

/** The absolute path of `name` on the test's own PATH. */
function which(name) {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      /* not here */
    }
  }
  throw new Error(`${name} is not on PATH`);
}

const UNSHARE = which('unshare');

// ---------------------------------------------------------------------------------------
// the tarballs, the user's machine, the installs

const work = makeTempDir('narcache-install-');
const packed = await runOk('bash', [path.join(REPO, 'scripts', 'pack.sh'), path.join(work, 'pack')]);
const tarballs = packed.stdout.split('\n').filter(Boolean);
const mainTarball = tarballs.find((f) => path.basename(f) === `narcache-${version()}.tgz`);
const platformTarball = tarballs.find((f) => path.basename(f) === `narcache-${PLATFORM}-${version()}.tgz`);

function version() {
  return JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version;
}

const bin = path.join(work, 'bin');
fs.mkdirSync(bin);
for (const tool of TOOLS) fs.symlinkSync(which(tool), path.join(bin, tool));
const home = path.join(work, 'home');
fs.mkdirSync(home);
const userEnv = {
  PATH: bin,
  HOME: home,
  NIX_CONFIG,
  npm_config_update_notifier: 'false',
};

/** Run as the user: their PATH and HOME, and no network (a network namespace of its own). */
function runAsUser(cmd, args, { cwd, env = userEnv } = {}) {
  return run(UNSHARE, ['-n', '--', cmd, ...args], { cwd, env });
}

// The user's npm cache, primed by the same install run with the network: npm resolves the
// dependencies' ranges to what the registry serves today (not to this repository's lockfile)
// and keeps their metadata and tarballs in the cache. The user's installs below run offline,
// in a namespace with no network, so they must find everything they need there, and nothing
// but npm packages can be in it.
const npmCache = (await runOk('npm', ['config', 'get', 'cache'])).stdout.trim();
const primer = path.join(work, 'primer');
fs.mkdirSync(primer);
fs.writeFileSync(path.join(primer, 'package.json'), JSON.stringify({ name: 'primer', version: '1.0.0', private: true }));
await runOk('npm', ['install', '--cache', npmCache, '--no-audit', '--no-fund', platformTarball, mainTarball], { cwd: primer });

/** A fresh project with `npm install --offline` of `tgzs`; returns its directory and npm's result. */
async function install(name, tgzs) {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  const npm = await runAsUser('npm', ['install', '--offline', '--cache', npmCache, '--no-audit', '--no-fund', ...tgzs], {
    cwd: dir,
  });
  return { dir, npm };
}

const app = await install('app', [platformTarball, mainTarball]);
const [root] = await nixBuild(CLOSURE_NIX, 'extra');
const rootClosure = await closure([root]);

// Declared only now: ava starts the tests once the first one is declared.
test.after.always(cleanupTempDirs);

// ---------------------------------------------------------------------------------------

test('the user machine has no cargo, no rustc and no network', async (t) => {
  const rust = await runAsUser('sh', ['-c', 'command -v cargo || command -v rustc']);
  t.not(rust.code, 0, `found ${rust.stdout}`);
  const net = await runAsUser('node', [
    '-e',
    "fetch('https://registry.npmjs.org/commander').then(() => process.exit(0), () => process.exit(3))",
  ]);
  t.is(net.code, 3, 'the registry answered from inside the sandbox');
});

test('the tarballs hold what a user needs and nothing else', async (t) => {
  t.truthy(mainTarball, `pack.sh printed ${tarballs.join(' ')}`);
  t.truthy(platformTarball, `pack.sh printed ${tarballs.join(' ')}`);
  const list = async (tgz) => (await runOk('tar', ['-tzf', tgz])).stdout.split('\n').filter(Boolean).sort();

  const main = await list(mainTarball);
  const forbidden = /^package\/(target|crates|src|__test__|npm|scripts|bench|examples|node_modules|\.ci)\/|\.node$|\.map$|(?<!\.d)\.(ts|mts|rs)$/;
  t.deepEqual(main.filter((f) => forbidden.test(f)), []);
  const allowed =
    /^package\/((package\.json|README\.md|LICENSE|CHANGELOG\.md|index\.d\.ts|index\.mjs|index\.d\.mts|native\/index\.js|native\/index\.d\.ts|nix\/mk-binary-cache\.nix)|dist\/[\w/-]+\.(js|d\.ts))$/;
  t.deepEqual(main.filter((f) => !allowed.test(f)), []);
  for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/bin.js', 'native/index.js', 'native/index.d.ts', 'index.mjs', 'index.d.mts', 'index.d.ts', 'LICENSE', 'CHANGELOG.md']) {
    t.true(main.includes(`package/${f}`), `${f} is missing from ${path.basename(mainTarball)}`);
  }
  t.deepEqual(await list(platformTarball), [
    'package/README.md',
    `package/narcache.${PLATFORM}.node`,
    'package/package.json',
  ]);

  const pkg = JSON.parse(fs.readFileSync(path.join(app.dir, 'node_modules', 'narcache', 'package.json'), 'utf8'));
  const platformPkg = JSON.parse(
    fs.readFileSync(path.join(app.dir, 'node_modules', `narcache-${PLATFORM}`, 'package.json'), 'utf8'),
  );
  t.is(pkg.optionalDependencies[platformPkg.name], platformPkg.version);
  t.deepEqual([platformPkg.os, platformPkg.cpu, platformPkg.libc], [['linux'], ['x64'], ['glibc']]);
  t.is(pkg.license, 'MIT');

  const sizes = Object.fromEntries(tarballs.map((f) => [path.basename(f), fs.statSync(f).size]));
  t.log('tarball sizes (bytes):', sizes);
});

test('npm install --offline of the tarballs takes every dependency from the npm cache', (t) => {
  t.is(app.npm.code, 0, app.npm.stderr);
  // npm's record of the tree it installed: every package and its version.
  const tree = (dir) => {
    const { packages } = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', '.package-lock.json'), 'utf8'));
    return Object.fromEntries(Object.entries(packages).map(([where, p]) => [where, p.version]));
  };
  const installed = tree(app.dir);
  t.deepEqual(installed, tree(primer), 'the offline install resolved what the install with the network did');
  for (const dependency of Object.keys(JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).dependencies)) {
    t.truthy(installed[`node_modules/${dependency}`], `${dependency} is installed`);
  }
  t.is(installed['node_modules/narcache'], version());
  t.is(installed[`node_modules/narcache-${PLATFORM}`], version());
});

test('npx narcache --version and --help', async (t) => {
  const v = await runAsUser('npx', ['narcache', '--version'], { cwd: app.dir });
  t.is(v.code, 0, v.stderr);
  t.is(v.stdout, `${version()}\n`);
  const h = await runAsUser('npx', ['narcache', '--help'], { cwd: app.dir });
  t.is(h.code, 0, h.stderr);
  t.regex(h.stdout, /^Usage: narcache /);
  t.regex(h.stdout, /\n {2}build \[options\] \[paths\.\.\.\]/);
});

test('npx narcache build writes a cache that Nix substitutes from', async (t) => {
  const cache = path.join(work, 'cli-cache');
  const r = await runAsUser('npx', ['narcache', 'build', root, '-o', cache, '--json'], { cwd: app.dir });
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  t.is(summary.paths, rootClosure.length);
  t.is(summary.written, rootClosure.length);
  await substituted(t, cache);
});

// One program for CommonJS and one for ES modules, run by the user's node.
const LIBRARY_USES = {
  'uses.cjs': `
const narcache = require('narcache');
const { buildCache, nix32Encode, parseNarinfo } = narcache;
const fs = require('node:fs');
const [hex, root, dest] = process.argv.slice(2);
buildCache({ paths: [root], dest, compression: 'xz' }).then((summary) => {
  const narinfo = parseNarinfo(fs.readFileSync(dest + '/' + root.slice(11, 43) + '.narinfo', 'utf8'));
  console.log(JSON.stringify({ nix32: nix32Encode(Buffer.from(hex, 'hex')), summary, narinfo, names: Object.keys(narcache) }));
});
`,
  'uses.mjs': `
import narcache, { buildCache, nix32Encode, parseNarinfo, NarcacheError } from 'narcache';
import * as namespace from 'narcache';
import fs from 'node:fs';
import { createRequire } from 'node:module';
const [hex, root, dest] = process.argv.slice(2);
const summary = await buildCache({ paths: [root], dest });
const narinfo = parseNarinfo(fs.readFileSync(dest + '/' + root.slice(11, 43) + '.narinfo', 'utf8'));
const required = createRequire(import.meta.url)('narcache');
console.log(JSON.stringify({
  nix32: nix32Encode(Buffer.from(hex, 'hex')),
  summary,
  narinfo,
  names: Object.keys(namespace).filter((k) => k !== 'default' && k !== '__esModule'),
  sameInstance: narcache === required && NarcacheError === required.NarcacheError,
}));
`,
};

for (const [file, source] of Object.entries(LIBRARY_USES)) {
  test(`${file.endsWith('.cjs') ? 'require' : 'import'}('narcache') calls the API`, async (t) => {
    fs.writeFileSync(path.join(app.dir, file), source);
    const hex = (await dumpDb([root])).get(root).narHashBase16;
    const cache = path.join(work, `${file}-cache`);
    const r = await runAsUser('node', [file, hex, root, cache], { cwd: app.dir });
    t.is(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const nixNix32 = (await runOk('nix-hash', ['--type', 'sha256', '--to-base32', hex])).stdout.trim();
    t.is(out.nix32, nixNix32);
    t.is(out.summary.written, rootClosure.length);
    t.is(out.narinfo.storePath, root);
    t.is(out.narinfo.narHash, `sha256:${nixNix32}`);
    const cjsNames = Object.keys(createRequire(import.meta.url)(path.join(app.dir, 'node_modules', 'narcache'))).sort();
    t.deepEqual([...out.names].sort(), cjsNames);
    if (file.endsWith('.mjs')) t.true(out.sameInstance, 'import and require gave different instances');
    await substituted(t, cache);
  });
}

/** Real Nix substitutes the closure from `cache` into a fresh store and verifies it. */
async function substituted(t, cache) {
  const s = await substitute(cache, root);
  t.is(s.copy.code, 0, s.copy.stderr);
  t.is(s.verify.code, 0, s.verify.stderr);
  t.deepEqual(await closure([root], { store: s.store }), rootClosure);
}

// ---------------------------------------------------------------------------------------
// TypeScript

const TS_USES = {
  'esm.mts': `
import narcache, { buildCache, nix32Encode, parseNarinfo, NarcacheError, type BuildSummary, type Narinfo } from 'narcache';
export const hash: string = nix32Encode(Buffer.alloc(32));
export const info: Narinfo = parseNarinfo('StorePath: /nix/store/x');
export const summary: Promise<BuildSummary> = buildCache({ paths: ['./result'], dest: './cache', compression: 'xz' });
export const viaDefault: string = narcache.nix32Encode(Buffer.alloc(20));
export const isError = (e: unknown): boolean => e instanceof NarcacheError;
// @ts-expect-error nix32Encode takes bytes
nix32Encode('abc');
// @ts-expect-error narcache writes no gzip
buildCache({ paths: [], dest: 'x', compression: 'gzip' });
`,
  'cjs.cts': `
import narcache = require('narcache');
export const hash: string = narcache.nix32Encode(Buffer.alloc(32));
export const summary: Promise<narcache.BuildSummary> = narcache.buildCache({ paths: ['./result'], dest: './cache' });
// @ts-expect-error dest is required
narcache.buildCache({ paths: [] });
`,
  'legacy.ts': `
import { buildCache, type BuildSummary } from 'narcache';
export const summary: Promise<BuildSummary> = buildCache({ paths: ['./result'], dest: './cache', jobs: 2 });
// @ts-expect-error jobs is a number
buildCache({ paths: [], dest: 'x', jobs: 'two' });
`,
};

// How TypeScript finds the types: Node's ESM and CommonJS (exports map, import and require
// conditions), bundlers (import condition), and the old resolution ("types").
const TS_CONFIGS = {
  nodenext: { options: { module: 'nodenext', moduleResolution: 'nodenext' }, files: ['esm.mts', 'cjs.cts'] },
  bundler: { options: { module: 'esnext', moduleResolution: 'bundler' }, files: ['esm.mts'] },
  node10: { options: { module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true }, files: ['legacy.ts'] },
};

test('tsc --noEmit type-checks TypeScript consumers against the shipped types', async (t) => {
  const dir = path.join(app.dir, 'ts');
  fs.mkdirSync(dir);
  for (const [file, source] of Object.entries(TS_USES)) fs.writeFileSync(path.join(dir, file), source);
  const results = await Promise.all(
    Object.entries(TS_CONFIGS).map(async ([name, { options, files }]) => {
      const config = {
        compilerOptions: {
          ...options,
          target: 'es2022',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          // The user's own @types/node (the shipped types use Buffer); here, the repository's.
          typeRoots: [path.join(REPO, 'node_modules', '@types')],
          types: ['node'],
        },
        files,
      };
      fs.writeFileSync(path.join(dir, `tsconfig.${name}.json`), JSON.stringify(config));
      return [name, await runAsUser('node', [TSC, '-p', `tsconfig.${name}.json`, '--listFiles'], { cwd: dir })];
    }),
  );
  const shipped = path.join(app.dir, 'node_modules', 'narcache');
  const entry = { nodenext: ['index.d.mts', 'index.d.ts'], bundler: ['index.d.mts'], node10: ['index.d.ts'] };
  for (const [name, r] of results) {
    t.is(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
    const listed = r.stdout.split('\n');
    for (const f of [...entry[name], 'dist/index.d.ts', 'native/index.d.ts']) {
      t.true(listed.includes(path.join(shipped, f)), `${name}: tsc did not read ${f} of the installed package`);
    }
  }
});

// ---------------------------------------------------------------------------------------
// no binary for the platform

/** The command's output when it cannot load the native core: exit 1, one line. */
async function oneLineFailure(t, cwd, env = userEnv) {
  const r = await runAsUser('npx', ['narcache', 'build', root, '-o', path.join(work, 'never')], { cwd, env });
  t.is(r.code, 1, r.stderr);
  t.is(r.stdout, '');
  t.is(r.stderr.split('\n').length, 2, r.stderr); // one line and its newline
  t.false(fs.existsSync(path.join(work, 'never')));
  return r.stderr.trimEnd();
}

test('without a binary for the platform, one line names it and what to do', async (t) => {
  // A platform narcache publishes no binary for: the loader looks for narcache-linux-riscv64-gnu.
  const preload = path.join(work, 'riscv64.cjs');
  fs.writeFileSync(preload, "Object.defineProperty(process, 'arch', { value: 'riscv64' });\n");
  const line = await oneLineFailure(t, app.dir, { ...userEnv, NODE_OPTIONS: `--require ${preload}` });
  t.regex(line, /^narcache: no prebuilt binary for linux-riscv64-gnu \(there are for [^)]*\blinux-x64-gnu\b[^)]*\); build the native core from source .*NAPI_RS_NATIVE_LIBRARY_PATH/);

  // The platform's package left out (--omit=optional, or npm's optional-dependency bug).
  const bare = await install('bare', [mainTarball]);
  t.is(bare.npm.code, 0, bare.npm.stderr);
  t.false(fs.existsSync(path.join(bare.dir, 'node_modules', `narcache-${PLATFORM}`)));
  t.regex(
    await oneLineFailure(t, bare.dir),
    new RegExp(`^narcache: no prebuilt binary for ${PLATFORM} installed; its package narcache-${PLATFORM} .*--omit=optional`),
  );

  // The package there, its binary broken.
  const broken = path.join(bare.dir, 'node_modules', `narcache-${PLATFORM}`);
  await fsp.mkdir(broken);
  await fsp.copyFile(path.join(REPO, 'npm', PLATFORM, 'package.json'), path.join(broken, 'package.json'));
  await fsp.writeFile(path.join(broken, `narcache.${PLATFORM}.node`), 'not a shared object\n');
  t.regex(
    await oneLineFailure(t, bare.dir),
    new RegExp(`^narcache: the prebuilt binary for ${PLATFORM} \\(narcache-${PLATFORM}\\) does not load: .*narcache\\.${PLATFORM}\\.node`),
  );

  // The library says the same, as a NarcacheError.
  const r = await runAsUser('node', ['-e', "try { require('narcache') } catch (e) { console.log(e.name) }"], {
    cwd: bare.dir,
  });
  t.is(r.stdout, 'NarcacheError\n');
});
