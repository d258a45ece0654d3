import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Closure } from '../closure';
import { fileError, NarcacheError } from '../errors';
import { DEFAULT_STORE_DIR, isStorePath } from '../store-path';
import { PathInfoJsonParser } from './path-info';

const MAX_SYMLINKS = 40;

/**
 * The closure of `roots` as the local Nix store records it, through the
 * Nix command line: `nix path-info --json --recursive`, which gives every
 * field a narinfo takes from the store (hashes, sizes, references,
 * deriver, content address, signatures) in one command, in whichever of
 * its JSON shapes the Nix at hand prints.
 */
export async function closureFromNix(roots: string[], storeDir = DEFAULT_STORE_DIR): Promise<Closure> {
  if (!roots.length) throw new NarcacheError('no store paths given');
  const storePaths = roots.map((r) => resolveToStorePath(r, storeDir));
  // nix path-info takes a .drv for its outputs, which may not even be
  // built; with --derivation it takes the .drv itself, but any other path
  // for its deriver: each kind is asked for apart.
  const described = await Promise.all(
    [storePaths.filter((p) => !p.endsWith('.drv')), storePaths.filter((p) => p.endsWith('.drv'))].map(async (roots, drv) => {
      if (!roots.length) return [];
      const parser = new PathInfoJsonParser('nix path-info --json');
      const args = ['--extra-experimental-features', 'nix-command', 'path-info', '--json', '--recursive', ...(drv ? ['--derivation'] : []), ...roots];
      await run('nix', args, (chunk) => parser.write(chunk));
      return parser.end();
    }),
  );
  // A path in both closures (a source a derivation and an output share) is taken once.
  const paths = new Map(described.flat().map((info) => [info.path, info]));
  return { storeDir, paths: [...paths.values()] };
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

/**
 * Runs a Nix command, handing its stdout to `onStdout` as it comes; its
 * failure becomes one line.
 */
function run(command: string, args: string[], onStdout: (chunk: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.setEncoding('utf8');
    const err: Buffer[] = [];
    let failure: unknown;
    child.stdout.on('data', (d: string) => {
      if (failure !== undefined) return;
      try {
        onStdout(d);
      } catch (e) {
        // Told once the command has ended, rather than leaving it writing into a closed pipe.
        failure = e;
      }
    });
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new NarcacheError(
          e.code === 'ENOENT' ? `${command} not found: Nix must be installed and on PATH` : `${command}: ${e.message}`,
        ),
      ),
    );
    child.on('close', (code, signal) => {
      if (code === 0) return failure === undefined ? resolve() : reject(failure);
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
