// Hostile content: directories outside the store (which `nix-store --dump` archives too)
// holding what no store path should, packed with packPath. What Nix archives, narcache
// archives to the same bytes (hash and size of `nix-store --dump`): a symlink loop, names
// with a newline and other odd bytes, 100,000 entries in one directory, a 4 GiB sparse
// file (compressed with zstd, so that 4 GiB are never written). What Nix refuses, narcache
// refuses in one line naming the file, leaving nothing in nar/: a FIFO, a socket, a file
// and a directory root cannot read (capabilities dropped with setpriv, since root ignores
// modes). Files whose reads fail or whose size lies (a dead process's /proc file and
// /proc/version, bind-mounted in a private mount namespace) are refused too, where Nix
// trusts the size it stats and archives them as empty.
import test from 'ava';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

import lib from '../dist/index.js';
import native from '../dist/native.js';
import { REPO, cleanupTempDirs, makeTempDir, nixDumpHash, run } from './helpers/nix.mjs';
import { scratchDir } from './helpers/reliability.mjs';

const { packPath } = lib;
const { verifyNar } = native;

test.after.always(cleanupTempDirs);

/** packPath(dir) into a fresh cache with `compression`, and Nix's dump of dir: both identities. */
async function packAndDump(t, dir, compression = 'none') {
  const dest = makeTempDir('narcache-hostile-dest-');
  const [ours, theirs] = await Promise.all([packPath(dir, dest, { compression }), nixDumpHash(dir)]);
  t.is(ours.narHash, `sha256:${theirs.nix32}`, 'NarHash as nix-store --dump');
  t.is(ours.narSize, theirs.size, 'NarSize as nix-store --dump');
  return { ours, dest };
}

/** Nix's refusal to dump `dir` (its stderr), or undefined if it dumps it. */
async function nixRefusal(dir, wrap = []) {
  const r = await run(wrap[0] ?? 'nix-store', [...wrap.slice(1), ...(wrap.length ? ['nix-store'] : []), '--dump', dir]);
  return r.code === 0 ? undefined : r.stderr.trim();
}

/** Asserts packPath refuses `dir` in one line naming `culprit`, and leaves nar/ empty. */
async function assertRefused(t, dir, culprit, pattern) {
  const dest = makeTempDir('narcache-hostile-dest-');
  const error = await t.throwsAsync(packPath(dir, dest, { compression: 'zstd' }));
  t.false(error.message.includes('\n'), `one line: ${error.message}`);
  t.true(error.message.includes(culprit), `names ${culprit}: ${error.message}`);
  t.regex(error.message, pattern);
  t.deepEqual(await fsp.readdir(path.join(dest, 'nar')), [], 'nothing left in nar/');
  return error.message;
}

test('a FIFO is refused, naming it, as Nix refuses it', async (t) => {
  const dir = makeTempDir('narcache-hostile-fifo-');
  await fsp.writeFile(path.join(dir, 'before'), 'x');
  const fifo = path.join(dir, 'pipe');
  await run('mkfifo', [fifo]);
  const ours = await assertRefused(t, dir, fifo, /cannot archive a FIFO/);
  const theirs = await nixRefusal(dir);
  t.regex(theirs ?? 'dumped', /file '.*pipe' has an unsupported type/);
  t.log(`narcache: ${ours}\nNix:      ${theirs}`);
});

test('a socket is refused, naming it, as Nix refuses it', async (t) => {
  const dir = makeTempDir('narcache-hostile-socket-');
  const socket = path.join(dir, 'sock');
  const server = net.createServer().listen(socket);
  await new Promise((r) => server.once('listening', r));
  t.teardown(() => server.close());
  const ours = await assertRefused(t, dir, socket, /cannot archive a socket/);
  const theirs = await nixRefusal(dir);
  t.regex(theirs ?? 'dumped', /file '.*sock' has an unsupported type/);
  t.log(`narcache: ${ours}\nNix:      ${theirs}`);
});

// Root reads any file whatever its mode; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
// (dropped from the bounding set before exec, so the new program never gets them) it
// cannot.
const WITHOUT_DAC = ['setpriv', '--inh-caps=-all', '--bounding-set=-dac_override,-dac_read_search'];
// `node -e PACK_SCRIPT DIR DEST`: packPath in a process of its own (one without those
// capabilities, in another mount namespace, or to measure its peak resident memory).
const PACK_SCRIPT = `
  const { packPath } = require(${JSON.stringify(path.join(REPO, 'dist', 'index.js'))});
  packPath(process.argv[1], process.argv[2], { compression: 'zstd' }).then(
    (r) => console.log(JSON.stringify({ ok: r, maxRss: process.resourceUsage().maxRSS * 1024 })),
    (e) => console.log(JSON.stringify({ error: e.message })),
  );`;

for (const kind of ['file', 'directory']) {
  test(`an unreadable ${kind} is refused, naming it, as Nix refuses it`, async (t) => {
    const dir = makeTempDir(`narcache-hostile-unreadable-${kind}-`);
    const culprit = path.join(dir, 'secret');
    if (kind === 'file') await fsp.writeFile(culprit, 'no\n');
    else await fsp.mkdir(culprit);
    await fsp.chmod(culprit, 0);
    t.teardown(() => fsp.chmod(culprit, 0o755).catch(() => undefined));
    const dest = makeTempDir('narcache-hostile-dest-');
    const r = await run(WITHOUT_DAC[0], [...WITHOUT_DAC.slice(1), process.execPath, '-e', PACK_SCRIPT, dir, dest]);
    const outcome = JSON.parse(r.stdout || '{}');
    t.truthy(outcome.error, `refused: ${r.stdout} ${r.stderr}`);
    t.regex(outcome.error ?? '', new RegExp(`^${culprit}: Permission denied`));
    t.false((outcome.error ?? '').includes('\n'));
    t.deepEqual(await fsp.readdir(path.join(dest, 'nar')), [], 'nothing left in nar/');
    const theirs = await nixRefusal(dir, WITHOUT_DAC);
    t.regex(theirs ?? 'dumped', new RegExp(`opening ${kind} '.*secret': Permission denied`));
    // With its capabilities root reads it, and both archive the same bytes.
    await packAndDump(t, dir);
    t.log(`narcache: ${outcome.error}\nNix:      ${theirs}`);
  });
}

test('files whose read fails or whose size lies (bind-mounted /proc files) are refused, where Nix archives them as empty', async (t) => {
  const dir = makeTempDir('narcache-hostile-proc-');
  const dead = path.join(dir, 'dead', 'status');
  const lying = path.join(dir, 'lying', 'version');
  for (const f of [dead, lying]) {
    await fsp.mkdir(path.dirname(f));
    await fsp.writeFile(f, '');
  }
  const dests = [makeTempDir('narcache-hostile-dest-'), makeTempDir('narcache-hostile-dest-')];
  // /proc/self of the short-lived `mount` process: reading it later fails with ESRCH.
  const script = `
    mount --bind /proc/self/status "$1" && mount --bind /proc/version "$2" || exit 99
    "$5" -e "$6" "$(dirname "$1")" "$3"
    "$5" -e "$6" "$(dirname "$2")" "$4"
    nix-store --dump "$(dirname "$1")" | sha256sum
    nix-store --dump "$(dirname "$2")" | sha256sum`;
  const r = await run('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', dead, lying, ...dests, process.execPath, PACK_SCRIPT]);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const [deadOutcome, lyingOutcome] = lines.slice(0, 2).map((l) => JSON.parse(l));
  t.regex(deadOutcome.error ?? '', new RegExp(`^${dead}: No such process`));
  t.regex(lyingOutcome.error ?? '', new RegExp(`^${lying}: file changed while being read \\(expected 0 bytes, got \\d+\\)`));
  for (const d of dests) t.deepEqual(await fsp.readdir(path.join(d, 'nar')).catch(() => []), [], 'nothing left in nar/');
  // Nix reads as many bytes as stat says (none): its archives are those of empty files.
  const nixHashes = lines.slice(2).map((l) => l.split(' ')[0]);
  const empty = [(await nixDumpHash(path.dirname(dead))).hex, (await nixDumpHash(path.dirname(lying))).hex];
  t.deepEqual(nixHashes, empty, 'Nix archives both as empty files');
  t.log(`narcache: ${deadOutcome.error}\nnarcache: ${lyingOutcome.error}\nNix: archives both as empty regular files, exit 0`);
});

test('a symlink loop is archived as symlinks, as Nix archives it', async (t) => {
  const dir = makeTempDir('narcache-hostile-loop-');
  await fsp.symlink('b', path.join(dir, 'a'));
  await fsp.symlink('a', path.join(dir, 'b'));
  await fsp.symlink('self', path.join(dir, 'self'));
  await fsp.symlink('.', path.join(dir, 'here'));
  await fsp.symlink('..', path.join(dir, 'up'));
  const { ours, dest } = await packAndDump(t, dir);
  const check = await verifyNar(path.join(dest, ours.url), 'none');
  t.is(check.narHash, ours.narHash);
});

test('odd names (newline, CR, tab, backslash, non-UTF-8, 255 bytes) are archived as Nix archives them', async (t) => {
  const dir = makeTempDir('narcache-hostile-names-');
  const names = ['a\nb', 'trailing\n', '\r', 'tab\there', 'back\\slash', ' ', '-', '--x', '\u{1F600}', 'n'.repeat(255)];
  for (const n of names) await fsp.writeFile(path.join(dir, n), n);
  await fsp.writeFile(Buffer.concat([Buffer.from(dir + '/'), Buffer.from([0xff, 0x0a, 0xc3])]), 'latin');
  await fsp.mkdir(path.join(dir, 'dir\nwith newline'));
  await fsp.symlink('target\nwith newline', path.join(dir, 'dir\nwith newline', 'link\n'));
  const { ours, dest } = await packAndDump(t, dir);
  const check = await verifyNar(path.join(dest, ours.url), 'none');
  t.is(check.narHash, ours.narHash);
});

test('100,000 entries in one directory are archived as Nix archives them', async (t) => {
  // In memory where possible: 100,000 files are slow to create on a busy disk.
  const dir = scratchDir('narcache-hostile-wide-');
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const r = await run('sh', ['-c', 'cd "$1" && seq 0 99999 | sed "s/^/f/" | xargs touch && ls | wc -l', 'sh', dir]);
  t.is(r.stdout.trim(), '100000');
  const started = performance.now();
  const { ours } = await packAndDump(t, dir);
  t.log(`NAR ${ours.narSize} bytes, packed and dumped in ${((performance.now() - started) / 1000).toFixed(1)} s`);
});

test('a 4 GiB sparse file is archived as Nix archives it (zstd, streamed, bounded memory)', async (t) => {
  const dir = makeTempDir('narcache-hostile-sparse-');
  const file = path.join(dir, 'sparse');
  // Past 4 GiB, and not a multiple of 8, so that padding follows the contents.
  const size = 4 * 2 ** 30 + 5;
  const handle = await fsp.open(file, 'w');
  await handle.truncate(size - 4);
  await handle.write('tail', size - 4);
  await handle.close();
  t.is(fs.statSync(file).size, size);
  const dest = makeTempDir('narcache-hostile-dest-');
  const started = performance.now();
  const [packed, theirs] = await Promise.all([run(process.execPath, ['-e', PACK_SCRIPT, dir, dest]), nixDumpHash(dir)]);
  const { ok: ours, maxRss, error } = JSON.parse(packed.stdout || '{}');
  t.falsy(error, packed.stderr);
  t.is(ours.narHash, `sha256:${theirs.nix32}`, 'NarHash as nix-store --dump');
  t.is(ours.narSize, theirs.size, 'NarSize as nix-store --dump');
  t.true(ours.fileSize < 2 ** 20, `compressed to ${ours.fileSize} bytes`);
  t.log(`NAR ${ours.narSize} bytes → zstd ${ours.fileSize} in ${((performance.now() - started) / 1000).toFixed(1)} s; peak RSS of the packing process ${(maxRss / 2 ** 20).toFixed(0)} MiB`);
  t.true(maxRss < 300 * 2 ** 20, `peak RSS ${maxRss}`);
});
