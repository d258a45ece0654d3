import * as os from 'node:os';
import * as path from 'node:path';
import type { Cache } from './cache';
import { NarcacheError } from './errors';
import { formatNarinfo, type Narinfo } from './narinfo';
import type { Compression } from './pack';
import { withCache } from './publish/open';
import { storeDirOf } from './publish/destination';
import { DEFAULT_STORE_DIR } from './store-path';
import { verifyCache, type VerifyOptions, type VerifyProblem, type VerifyReport } from './verify';

export interface RepairOptions extends VerifyOptions {
  /** Where the store's files are, if not at the cache's store directory. */
  storeRoot?: string;
}

export interface RepairedPath {
  /** The narinfo, `<hash>.narinfo`. */
  file: string;
  storePath: string;
  /** The NAR file written, relative to the cache. */
  url: string;
  /** Whether the narinfo was rewritten too (the new file's hash differs from the old one's). */
  narinfoRewritten: boolean;
}

/** What verify found, less what was repaired: `problems` and `ok` say what is still wrong. */
export interface RepairReport extends VerifyReport {
  repaired: RepairedPath[];
}

const SUPPORTED: string[] = ['zstd', 'xz', 'none'];

/**
 * Verifies the cache at `location` (see verifyCache), then writes again,
 * from the local store, the NAR file of every narinfo whose NAR file is
 * missing or not what the narinfo says: packed from the store path and
 * accepted only if its NarHash and NarSize are the narinfo's, so a path the
 * store lacks or holds otherwise is not repaired. The new NAR file is
 * written as build writes one (complete and durable before anything names
 * it); if its FileHash differs from the narinfo's (another compressor, or
 * a compression narcache does not write), the narinfo is replaced with one
 * naming it, its other lines (signatures included, which do not cover the
 * file) as they were. The old file, if any, is left for prune.
 */
export function repairCache(location: string | Cache, options: RepairOptions = {}): Promise<RepairReport> {
  return withCache(location, (cache) => repair(cache, options));
}

async function repair(cache: Cache, options: RepairOptions): Promise<RepairReport> {
  const report = await verifyCache(cache, options);
  const broken = [...new Set(report.problems.filter((p) => p.nar && p.storePath).map((p) => p.file))];
  const repaired: RepairedPath[] = [];
  const failures: VerifyProblem[] = [];
  if (broken.length) {
    const storeDir = storeDirOf((await cache.readCacheInfo()) ?? '') ?? DEFAULT_STORE_DIR;
    await cache.open({ storeDir });
    const storeRoot = options.storeRoot ?? storeDir;
    for (const file of broken) {
      try {
        repaired.push(await repairOne(cache, file, storeDir, storeRoot));
      } catch (e) {
        if (!(e instanceof NarcacheError)) throw e;
        failures.push({ file, storePath: report.problems.find((p) => p.file === file)?.storePath, problem: `not repaired: ${e.message}` });
      }
    }
    await cache.flush();
  }
  const fixed = new Set(repaired.map((r) => r.file));
  const problems = [...report.problems.filter((p) => !(p.nar && fixed.has(p.file))), ...failures].sort((a, b) =>
    a.file < b.file ? -1 : a.file > b.file ? 1 : 0,
  );
  const faulty = new Set(problems.map((p) => p.file));
  return {
    ...report,
    ok: problems.length === 0,
    valid: report.narinfos - [...faulty].filter((f) => f.endsWith('.narinfo')).length,
    problems,
    repaired,
  };
}

async function repairOne(cache: Cache, file: string, storeDir: string, storeRoot: string): Promise<RepairedPath> {
  const n: Narinfo = await cache.readNarinfo(file);
  const source = path.join(storeRoot, path.posix.relative(storeDir, n.storePath));
  const compression = (SUPPORTED.includes(n.compression) ? n.compression : 'zstd') as Compression;
  let packed;
  try {
    packed = await cache.writeNar(source, {
      compression,
      threads: os.availableParallelism(),
      expected: { narHash: n.narHash, narSize: n.narSize },
    });
  } catch (e) {
    const message = (e as Error).message.split('\n')[0];
    throw new NarcacheError(/no such file|ENOENT/i.test(message) ? `${n.storePath} is not in the local store` : message);
  }
  const same = packed.url === n.url && packed.fileHash === n.fileHash && packed.fileSize === n.fileSize;
  // Written in any case, as build writes one, so that the new file is durable before the
  // narinfo naming it is (re)published; unchanged if the file has the name it had.
  const text = same
    ? await cache.readNarinfoText(file)
    : formatNarinfo({ ...n, url: packed.url, compression: packed.compression, fileHash: packed.fileHash, fileSize: packed.fileSize });
  await cache.writeNarinfos([{ hashPart: file.slice(0, -'.narinfo'.length), text, references: [] }]);
  return { file, storePath: n.storePath, url: packed.url, narinfoRewritten: !same };
}
