import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Closure, PathInfo } from '../closure';
import { fileError, NarcacheError } from '../errors';
import { DEFAULT_STORE_DIR, isStorePath } from '../store-path';
import { parsePathInfoJson } from './path-info';
import { parseRegistration } from './registration';

const MAX_SYMLINKS = 40;

/**
 * The closure of `roots` as the local Nix store records it, through the
 * Nix command line: `nix-store --query --requisites`, `nix-store --dump-db`
 * for hashes, sizes, derivers and references, and `nix path-info --json`
 * for what the registration format lacks (content addresses, signatures).
 */
export async function closureFromNix(roots: string[], storeDir = DEFAULT_STORE_DIR): Promise<Closure> {
  if (!roots.length) throw new NarcacheError('no store paths given');
  const storePaths = roots.map((r) => resolveToStorePath(r, storeDir));
  // Both at once: each Nix command spends a few hundred milliseconds, and no
  // path is packed before the closure is known.
  const [registered, ...described] = await Promise.all([
    run('nix-store', ['--query', '--requisites', ...storePaths]).then(async (out) => {
      const requisites = out.split('\n').filter(Boolean);
      return parseRegistration(await run('nix-store', ['--dump-db', ...requisites]), 'nix-store --dump-db');
    }),
    // nix path-info takes a .drv for its outputs, which may not even be
    // built; with --derivation it takes the .drv itself, but any other path
    // for its deriver: each kind is asked for apart.
    ...[storePaths.filter((p) => !p.endsWith('.drv')), storePaths.filter((p) => p.endsWith('.drv'))].map((roots, drv) =>
      roots.length
        ? run('nix', ['--extra-experimental-features', 'nix-command', 'path-info', '--json', '--recursive', ...(drv ? ['--derivation'] : []), ...roots])
        : '[]',
    ),
  ]);
  const extra = new Map(
    described.flatMap((json) => parsePathInfoJson(json, 'nix path-info --json')).map((info) => [info.path, info]),
  );
  const paths: PathInfo[] = registered.map((info) => {
    const more = extra.get(info.path);
    return { ...info, ...(more?.ca ? { ca: more.ca } : {}), sigs: more?.sigs ?? [] };
  });
  return { storeDir, paths };
}

/**
 * Follows symlinks (such as `./result`) until the path lies in the store,
 * without following a store path that is itself a symlink, and returns the
 * top-level store path that contains it.
 */
export function resolveToStorePath(arg: string, storeDir: string): string {
  let p = path.resolve(arg);
  for (let hops = 0; hops <= MAX_SYMLINKS; hops++) {
    const top = topLevelStorePath(p, storeDir);
    if (top) return top;
    let parent: string;
    try {
      parent = fs.realpathSync(path.dirname(p));
    } catch (e) {
      throw fileError(arg, e);
    }
    p = path.join(parent, path.basename(p));
    const inStore = topLevelStorePath(p, storeDir);
    if (inStore) return inStore;
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(p);
    } catch (e) {
      throw fileError(arg, e);
    }
    if (!stat.isSymbolicLink()) throw new NarcacheError(`${arg}: not in the Nix store (${storeDir})`);
    p = path.resolve(path.dirname(p), fs.readlinkSync(p));
  }
  throw new NarcacheError(`${arg}: too many levels of symbolic links`);
}

function topLevelStorePath(p: string, storeDir: string): string | undefined {
  if (!p.startsWith(storeDir + '/')) return undefined;
  const top = path.join(storeDir, p.slice(storeDir.length + 1).split('/')[0]);
  return isStorePath(top, storeDir) ? top : undefined;
}

/** Runs a Nix command and returns its stdout; its failure becomes one line. */
function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new NarcacheError(
          e.code === 'ENOENT' ? `${command} not found: Nix must be installed and on PATH` : `${command}: ${e.message}`,
        ),
      ),
    );
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(Buffer.concat(out).toString('utf8'));
      const message = Buffer.concat(err)
        .toString('utf8')
        .split('\n')
        .map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').replace(/^error: /, '').trim())
        .filter(Boolean)
        .filter((l) => !l.startsWith('warning:'))
        .at(-1);
      reject(new NarcacheError(`${command} failed: ${message ?? (signal ? `killed by ${signal}` : `exit code ${code}`)}`));
    });
  });
}
