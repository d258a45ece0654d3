// Standard output and error that fail: every command that prints, with its stdout or
// stderr a pipe whose reader has gone (`narcache verify C | head`) or a full disk
// (/dev/full). A closed pipe ends the command quietly with the status a shell gives `ls`
// killed by SIGPIPE (141); a full disk on stdout is one line on stderr and status 1;
// never a stack trace, never a temporary file left in the cache.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { listTree } from './helpers/cache.mjs';
import { buildFixtures, CLI, cleanupTempDirs, closure, makeTempDir, nixEnv, runCli } from './helpers/nix.mjs';

const fx = await buildFixtures();
const SINGLE = (await closure([fx.root])).find((p) => p.endsWith('-single-file'));
const keyDir = makeTempDir('narcache-output-keys-');
const SECRET = path.join(keyDir, 'k.secret');
await runCli(['keygen', 'output-1', '--secret-key-file', SECRET, '--public-key-file', path.join(keyDir, 'k.public')]);

/** A good cache of the fixture root, and a copy with one NAR file deleted (so verify prints findings). */
const good = makeTempDir('narcache-output-good-');
await runCli(['build', fx.root, '-o', good]);

test.after.always(cleanupTempDirs);
async function damaged() {
  const dir = makeTempDir('narcache-output-damaged-');
  await fsp.cp(good, dir, { recursive: true });
  const nars = await fsp.readdir(path.join(dir, 'nar'));
  await fsp.rm(path.join(dir, 'nar', nars[0]));
  return dir;
}

/**
 * Runs the CLI with `which` (1: stdout, 2: stderr) failing as `how` says: 'closed' (a pipe
 * whose reader is gone before the command writes) or 'full' (/dev/full). The other stream
 * is captured.
 */
function runBroken(args, which, how) {
  return new Promise((resolve, reject) => {
    const full = how === 'full' ? fs.openSync('/dev/full', 'w') : undefined;
    const stdio = ['ignore', 'pipe', 'pipe'];
    if (full !== undefined) stdio[which] = full;
    const child = spawn(process.execPath, [CLI, ...args], { env: nixEnv, stdio });
    if (full !== undefined) fs.closeSync(full);
    else child.stdio[which].destroy();
    const captured = [];
    child.stdio[3 - which].on('data', (b) => captured.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, other: Buffer.concat(captured).toString('utf8') }));
  });
}

const commands = {
  '--help': async () => ({ args: ['--help'] }),
  '--version': async () => ({ args: ['--version'] }),
  keygen: async () => {
    const dir = makeTempDir('narcache-output-keygen-');
    return { args: ['keygen', 'k-1', '--secret-key-file', path.join(dir, 's'), '--public-key-file', path.join(dir, 'p')] };
  },
  'build --json': async () => {
    const dest = makeTempDir('narcache-output-build-');
    return { args: ['build', SINGLE, '-o', dest, '--json'], cache: dest };
  },
  build: async () => {
    const dest = makeTempDir('narcache-output-build-');
    return { args: ['build', fx.root, '-o', dest], cache: dest, stderrOnly: true };
  },
  verify: async () => ({ args: ['verify', await damaged()] }),
  'verify --json': async () => ({ args: ['verify', good, '--json'] }),
  'sign --json': async () => {
    const dir = makeTempDir('narcache-output-sign-');
    await fsp.cp(good, dir, { recursive: true });
    return { args: ['sign', dir, '--sign-key-file', SECRET, '--json'], cache: dir };
  },
  sign: async () => {
    const dir = makeTempDir('narcache-output-sign-');
    await fsp.cp(good, dir, { recursive: true });
    return { args: ['sign', dir, '--sign-key-file', SECRET], cache: dir, stderrOnly: true };
  },
};

/** No temporary file, and what is there is sound. */
async function checkCache(t, cache, what) {
  if (!cache) return;
  const temps = [...(await listTree(cache)).keys()].filter((f) => path.basename(f).startsWith('.tmp-narcache-'));
  t.deepEqual(temps, [], `${what}: temporary files left`);
  const v = await runCli(['verify', cache]);
  t.is(v.code, 0, `${what}: the cache is sound\n${v.stdout}${v.stderr}`);
}

for (const [name, setup] of Object.entries(commands)) {
  test(`${name}: a closed pipe ends it quietly, with SIGPIPE's status`, async (t) => {
    const { args, cache, stderrOnly } = await setup();
    const which = stderrOnly ? 2 : 1;
    const r = await runBroken(args, which, 'closed');
    t.is(r.code, 141, r.other);
    t.is(r.signal, null);
    if (which === 1) t.false(/EPIPE|Error|    at |narcache: (?!wrote )/.test(r.other), `nothing said of it on stderr: ${r.other}`);
    await checkCache(t, cache, name);
  });

  test(`${name}: a full disk is one line and status 1`, async (t) => {
    const { args, cache, stderrOnly } = await setup();
    const which = stderrOnly ? 2 : 1;
    const r = await runBroken(args, which, 'full');
    t.is(r.code, 1, r.other);
    if (which === 1) {
      const lines = r.other.split('\n').filter((l) => l && !l.startsWith('narcache: wrote '));
      t.deepEqual(lines, ['narcache: cannot write to standard output: no space left on device']);
    } else {
      t.is(r.other, '', 'nothing on stdout');
    }
    await checkCache(t, cache, name);
  });
}
