#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import { buildCache } from './build';
import { systemReason } from './errors';
import type { Compression } from './pack';
import { formatSummary, progressReporter } from './report/progress';
import { copyCache } from './copy';
import { copyReporter, formatCopySummary } from './report/copy';
import { formatPruneSummary, pruneReporter } from './report/prune';
import { formatFindings, formatRepaired, formatVerifySummary, verifyReporter } from './report/verify';
import { repairCache, type RepairReport } from './repair';
import { pruneCache } from './prune';
import { signCache } from './sign-cache';
import { formatPublicKey, keygen, parsePublicKey, readSecretKeyFile } from './signing';
import type { ClosureSource } from './sources/load';
import { DEFAULT_STORE_DIR } from './store-path';
import { verifyCache, type VerifyReport } from './verify';

// The CLI only parses flags and prints; all behaviour lives in the library.

// Under Node < 22 the AWS SDK warns on every run that its releases of 2027 will need a newer
// Node: advice for whoever packages narcache, noise in front of the user's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
// A build holds its closure for its whole length (about 40 MB for 100,000 paths) and makes
// garbage per path that outlives a young-generation collection. V8 otherwise lets the heap
// grow to several times what is live before a full collection: a build of 100,000 paths
// peaked at 300 MiB RSS, 196 MB of it heap with 61 MB live. Growing by half at most: 250 MiB,
// in the same time. The command's own process only: the library leaves V8 as its host set it.
v8.setFlagsFromString('--heap-growing-percent=50');

const { version } = require('../package.json') as { version: string };

function integer(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || n < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    return n;
  };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

interface BuildFlags {
  output: string;
  compression: Compression;
  level?: number;
  jobs?: number;
  signKeyFile?: string[];
  json?: boolean;
  fromAttrs?: string;
  fromRegistration?: string;
  fromPathInfo?: string;
  db?: string;
  fromNix?: boolean;
  scan?: boolean;
  storeDir: string;
  storeRoot?: string;
  writeNarListing?: boolean;
  indexDebugInfo?: boolean;
  priority?: number;
  wantMassQuery?: boolean;
}

const SOURCE_OPTIONS = ['fromAttrs', 'fromRegistration', 'fromPathInfo', 'db', 'fromNix', 'scan'];

/** An option that says where the closure comes from; at most one may be given. */
function sourceOption(flags: string, description: string): Option {
  const option = new Option(flags, description);
  return option.conflicts(SOURCE_OPTIONS.filter((name) => name !== option.attributeName()));
}

type SourceFlags = Pick<BuildFlags, 'fromAttrs' | 'fromRegistration' | 'fromPathInfo' | 'db' | 'fromNix' | 'scan'>;

function sourceOf(opts: SourceFlags): ClosureSource {
  if (opts.fromAttrs !== undefined) return { kind: 'attrs', file: opts.fromAttrs };
  if (opts.fromRegistration !== undefined) return { kind: 'registration', file: opts.fromRegistration };
  if (opts.fromPathInfo !== undefined) return { kind: 'path-info', file: opts.fromPathInfo };
  if (opts.db !== undefined) return { kind: 'db', db: opts.db };
  if (opts.fromNix) return { kind: 'nix' };
  if (opts.scan) return { kind: 'scan' };
  return { kind: 'local' };
}

function storeDirectory(value: string): string {
  if (!value.startsWith('/')) throw new InvalidArgumentError('expected an absolute directory');
  return value.replace(/(.)\/+$/, '$1');
}

const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
// What a shell reports for a process killed by SIGPIPE (128 + 13), as `ls`
// is in `ls | head`; Node ignores SIGPIPE, so narcache exits so itself.
const CLOSED_PIPE_EXIT_CODE = 141;

/** Stops the work in progress (build, sign) on a signal or a failed write. */
const stop = new AbortController();
/** The exit status a signal or a failed write imposes, whatever the command's outcome. */
let imposedExitCode: number | undefined;

function impose(code: number): void {
  imposedExitCode = code;
  process.exitCode = code;
}

let outputFailed = false;

/**
 * A reader that goes away (`narcache verify C | head`) ends the command
 * quietly, as it ends `ls`; any other failed write (a full disk) is one
 * line on stderr, status 1. Either way the work in progress stops as on
 * SIGINT, leaving no temporary file, and nothing more is printed.
 */
function outputFailure(stream: NodeJS.WriteStream, e: NodeJS.ErrnoException): void {
  if (outputFailed) return;
  outputFailed = true;
  if (e.code !== 'EPIPE' && stream === process.stdout) {
    try {
      fs.writeSync(2, `narcache: cannot write to standard output: ${systemReason(e)}\n`);
    } catch {
      // stderr fails too: the status says it.
    }
  }
  // Node's standard streams stay open after an error and would fail again
  // on each write: writing is over.
  for (const s of [process.stdout, process.stderr]) s.write = () => true;
  impose(e.code === 'EPIPE' ? CLOSED_PIPE_EXIT_CODE : 1);
  stop.abort();
}

for (const stream of [process.stdout, process.stderr]) stream.on('error', (e) => outputFailure(stream, e));

/**
 * Writes what a command prints and resolves once it is written, so that a
 * failed write is known before anything else is printed.
 */
function print(stream: NodeJS.WriteStream, text: string): Promise<void> {
  if (outputFailed) return Promise.resolve();
  return new Promise((resolve) =>
    stream.write(text, (e) => {
      if (e) outputFailure(stream, e);
      resolve();
    }),
  );
}

const program = new Command('narcache')
  .description('Turn the closure of Nix store paths into a flat-file Nix binary cache.')
  .version(version, '-V, --version', 'print the version')
  .helpOption('-h, --help', 'show help')
  .configureOutput({ outputError: (message, write) => write(`narcache: ${message.replace(/^error: /, '')}`) })
  .showHelpAfterError('(run with --help for usage)')
  // Help and usage errors end through the same path as a command, so that
  // a failed write of the help still sets the status.
  .exitOverride();

program
  .command('build')
  .description(
    'write the closure of PATHS (store paths, or symlinks into the store such as ./result) ' +
      'as a binary cache in a directory or an S3 bucket; paths already there are skipped, so re-running resumes',
  )
  .argument(
    '[paths...]',
    'store paths, symlinks into the store, or paths below --store-root; ' +
      'optional with --from-attrs, --from-registration and --from-path-info, which then give the whole closure they hold',
  )
  .requiredOption(
    '-o, --output <cache>',
    'the cache: a directory (created if missing, not inside the store), or s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&scheme=http&region=R&profile=P ' +
      '(an existing bucket; parameters as Nix spells them, all optional, buffer-size=BYTES for the upload part size, ' +
      'narinfo-compression and ls-compression=xz|zstd|br to store those compressed with Content-Encoding, storage-class=CLASS)',
  )
  .addOption(
    new Option('-c, --compression <method>', 'how NAR files are compressed')
      .choices(['zstd', 'xz', 'none'])
      .default('zstd'),
  )
  .option('-l, --level <n>', 'compression level: xz 0-9 (default 6), zstd 1-22 (default 3)', integer(0))
  .option('-j, --jobs <n>', 'threads for packing (default: the CPU count): paths run one per thread (two below 1 MiB), those of 4 MiB or more first, largest first, then the rest references first and in the order they lie on the disk; a path larger than one thread\'s share of the work left takes several', integer(1))
  .option('--sign-key-file <file>', 'sign each narinfo written with this secret key (repeatable)', collect)
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .addOption(sourceOption('--from-attrs <file>', "the closure from a derivation's .attrs.json (exportReferencesGraph with __structuredAttrs), without Nix; '-' reads stdin"))
  .addOption(sourceOption('--from-registration <file>', "the closure from closureInfo's registration file or nix-store --dump-db output, without Nix; '-' reads stdin"))
  .addOption(sourceOption('--from-path-info <file>', "the closure from nix path-info --json --recursive output (any Nix version), without Nix; '-' reads stdin"))
  .addOption(
    sourceOption(
      '--db <path>',
      "the closure from Nix's SQLite database (db.sqlite, or its directory such as /nix/var/nix/db), without Nix: " +
        'read-only, no lock, nothing written beside it, rows still in its write-ahead log included',
    ),
  )
  .addOption(
    sourceOption(
      '--from-nix',
      'the closure from nix path-info, even where the local store\'s database could be read directly ' +
        '(by default it is, when it is /nix/var/nix/db/db.sqlite, readable, and no other store is configured)',
    ),
  )
  .addOption(
    sourceOption(
      '--scan',
      'no metadata: find references as Nix does, by searching each path for the hashes of the store paths present, ' +
        'and follow them to the closure (narinfos then have no Deriver, CA nor Sig)',
    ),
  )
  .option('--store-dir <dir>', 'the logical store directory, written into narinfos', storeDirectory, DEFAULT_STORE_DIR)
  .option('--store-root <dir>', "where the store's files are, if not at --store-dir: a chroot store's ROOT/nix/store, a mounted image")
  .option('--write-nar-listing', "write <hash>.ls, the JSON listing of each NAR written, as nix copy's write-nar-listing=true does")
  .option(
    '--index-debug-info',
    "write debuginfo/<build-id>.debug links to each lib/debug/.build-id/ file of the paths written, as nix copy's index-debug-info=true does",
  )
  .option('--priority <n>', "Priority: of a new cache's nix-cache-info (substituters are tried lowest first; cache.nixos.org has 40)", integer(0))
  .option('--want-mass-query', "WantMassQuery: 1 in a new cache's nix-cache-info")
  .action(async (paths: string[], opts: BuildFlags) => {
    const signKeys = await Promise.all((opts.signKeyFile ?? []).map(readSecretKeyFile));
    const reporter = progressReporter(process.stderr);
    stopOnSignals();
    try {
      const summary = await buildCache({
        paths,
        dest: opts.output,
        compression: opts.compression,
        level: opts.level,
        jobs: opts.jobs,
        signKeys,
        onProgress: reporter.onProgress,
        signal: stop.signal,
        source: sourceOf(opts),
        storeDir: opts.storeDir,
        storeRoot: opts.storeRoot,
        writeNarListing: opts.writeNarListing,
        indexDebugInfo: opts.indexDebugInfo,
        priority: opts.priority,
        wantMassQuery: opts.wantMassQuery,
      });
      reporter.done();
      if (opts.json) await print(process.stdout, JSON.stringify(summary) + '\n');
      else await print(process.stderr, formatSummary(summary, opts.output));
    } finally {
      reporter.done();
    }
  });

program
  .command('keygen')
  .description(
    'generate an ed25519 key pair for signing caches, in the format of nix-store --generate-binary-cache-key; ' +
      'prints the public key, to add to trusted-public-keys',
  )
  .argument('<name>', 'the key name, conventionally the cache host name and a number: cache.example.org-1')
  .requiredOption('--secret-key-file <file>', 'where to write the secret key (mode 0600)')
  .requiredOption('--public-key-file <file>', 'where to write the public key')
  .option('--force', 'replace key files that exist')
  .action(async (name: string, opts: { secretKeyFile: string; publicKeyFile: string; force?: boolean }) => {
    const publicKey = await keygen({ name, ...opts });
    await print(process.stdout, formatPublicKey(publicKey) + '\n');
  });

program
  .command('sign')
  .description(
    'add a signature by each key to the narinfos of CACHE (a directory or s3:// URL) that lack one, each narinfo replaced ' +
      'atomically; signing vouches for what the narinfos say, so verify the cache first',
  )
  .argument('<cache>', 'the cache: a directory, or s3://BUCKET[/PREFIX]?… as for build -o')
  .requiredOption('--sign-key-file <file>', 'secret key to sign with (repeatable)', collect)
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .action(async (cache: string, opts: { signKeyFile: string[]; json?: boolean }) => {
    const keys = await Promise.all(opts.signKeyFile.map(readSecretKeyFile));
    stopOnSignals();
    const summary = await signCache(cache, { keys, signal: stop.signal });
    if (opts.json) await print(process.stdout, JSON.stringify(summary) + '\n');
    else await print(process.stderr, `narcache: signed ${summary.signed} narinfos, ${summary.alreadySigned} were signed already, in ${summary.cache}\n`);
  });

program
  .command('verify')
  .description(
    'check that CACHE (a directory or s3:// URL) is sound: every narinfo parses, names a NAR file inside nar/ with the ' +
      'FileSize and FileHash it states, that decompresses to a well-formed NAR with its NarSize and NarHash, ' +
      'and has narinfos for all its references; with keys, one valid signature by a trusted key; NAR listings (<hash>.ls) ' +
      'agree with their NARs and debug-info links (debuginfo/) point to a member of a NAR of the cache. Prints one ' +
      'line per problem and lists NAR files no narinfo names (orphans) and temporary files of writers that died ' +
      '(leftovers), which are not problems, and NAR files whose compression narcache does not read (lz4, lzip, …); ' +
      'exits 0 only if there is no problem (with --repair: none left), 1 if there is one, 2 if there is none but ' +
      'some NAR files were not checked',
  )
  .argument('<cache>', 'the cache: a directory, or s3://BUCKET[/PREFIX]?… as for build -o')
  .option('--trusted-public-key <key>', 'a public key (name:base64) whose signature is required (repeatable)', collect)
  .option('-j, --jobs <n>', 'NAR files checked at once (default: the CPU count)', integer(1))
  .option(
    '--repair',
    'write again, from the local store, every NAR file that is missing or not what its narinfo says, if the store ' +
      "holds the path with the narinfo's NarHash (the narinfo is rewritten if the new file has another name); " +
      'what cannot be repaired is reported',
  )
  .option('--store-root <dir>', "with --repair: where the store's files are, if not at the cache's store directory")
  .option('--json', 'print the report as JSON on stdout instead of the text lines and summary')
  .action(
    async (cache: string, opts: { trustedPublicKey?: string[]; jobs?: number; repair?: boolean; storeRoot?: string; json?: boolean }) => {
      // A value may hold several keys, as trusted-public-keys in nix.conf does.
      const trustedPublicKeys = (opts.trustedPublicKey ?? [])
        .flatMap((v) => v.split(/\s+/).filter(Boolean))
        .map((k) => parsePublicKey(k, `--trusted-public-key ${k}`));
      const reporter = verifyReporter(process.stderr);
      const options = { trustedPublicKeys, jobs: opts.jobs, onProgress: reporter.onProgress, storeRoot: opts.storeRoot };
      let report: VerifyReport | RepairReport;
      try {
        report = await (opts.repair ? repairCache(cache, options) : verifyCache(cache, options));
      } finally {
        reporter.done();
      }
      if (opts.json) await print(process.stdout, JSON.stringify(report) + '\n');
      else {
        if ('repaired' in report) await print(process.stderr, formatRepaired(report as RepairReport));
        await print(process.stdout, formatFindings(report));
        await print(process.stderr, formatVerifySummary(report));
      }
      // 1: a problem; 2: none, but NAR files narcache does not read were not checked.
      if (!report.ok) process.exitCode = report.problems.length ? 1 : 2;
    },
  );

program
  .command('prune')
  .description(
    'remove from CACHE (a directory or s3:// URL) every narinfo outside the closure of the paths to keep, then every NAR ' +
      'file no remaining narinfo names (the listings of the narinfos removed and the debug-info links into the NAR files ' +
      'removed with them), then temporary files and unfinished uploads older than the grace age; referrers go ' +
      'before what they refer to, so the cache stays sound throughout. In a directory, prune waits for builds and copies ' +
      'into it to end, and they wait for it',
  )
  .argument('<cache>', 'the cache: a directory, or s3://BUCKET[/PREFIX]?… as for build -o')
  .option('--keep <paths...>', 'store paths (or symlinks into the store such as ./result) whose closures stay')
  .option('--keep-from <file>', "a file of store paths to keep, one a line; '-' reads stdin (repeatable)", collect)
  .addOption(sourceOption('--from-attrs <file>', "keep the closure a derivation's .attrs.json holds (with --keep: of those paths)"))
  .addOption(sourceOption('--from-registration <file>', "keep the closure a closureInfo registration file or nix-store --dump-db output holds"))
  .addOption(sourceOption('--from-path-info <file>', 'keep the closure nix path-info --json --recursive output holds'))
  .addOption(sourceOption('--db <path>', "keep the closures of the --keep paths as Nix's SQLite database records them"))
  .option('--ignore-missing', 'prune even if a path to keep is not in the cache (otherwise nothing is removed)')
  .option('--grace <seconds>', 'leave unnamed NAR files and temporary files younger than this (a writer may still name them)', integer(0), 3600)
  .option('--dry-run', 'list what would be removed (on stdout) and how many bytes, remove nothing')
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .action(
    async (
      cache: string,
      opts: SourceFlags & { keep?: string[]; keepFrom?: string[]; ignoreMissing?: boolean; grace: number; dryRun?: boolean; json?: boolean },
    ) => {
      // With --json, stdout holds the summary alone.
      const reporter = pruneReporter(process.stderr, !!opts.dryRun, opts.json ? undefined : process.stdout);
      let summary;
      try {
        summary = await pruneCache(cache, {
          keep: opts.keep,
          keepFrom: opts.keepFrom,
          source: sourceOf(opts).kind === 'local' ? undefined : sourceOf(opts),
          ignoreMissing: opts.ignoreMissing,
          graceSeconds: opts.grace,
          dryRun: opts.dryRun,
          onProgress: reporter.onProgress,
          onRemove: reporter.onRemove,
          onWait: () => void print(process.stderr, `narcache: waiting for the builds writing into ${cache} to end\n`),
        });
      } finally {
        reporter.done();
      }
      if (opts.json) await print(process.stdout, JSON.stringify(summary) + '\n');
      else await print(process.stderr, formatPruneSummary(summary));
    },
  );

program
  .command('copy')
  .description(
    'copy the binary cache FROM to TO (each a directory or s3:// URL), narinfos and NAR files as they are, never ' +
      "recompressing, with their listings and debug-info links; each NAR file's FileSize and FileHash are checked as it " +
      "streams. In build's order: a narinfo " +
      'after its NAR file and its references, paths TO has are skipped, so re-running resumes. Bucket to bucket on ' +
      'one endpoint, the service copies the NAR files itself (only their size is checked: verify TO after). ' +
      'Exits 1 if a path could not be copied',
  )
  .argument('<from>', 'the cache to copy: a directory, or s3://BUCKET[/PREFIX]?… as for build -o')
  .argument('<to>', 'where to copy it: a directory (created if missing), or s3://BUCKET[/PREFIX]?…')
  .option('--keep <paths...>', 'copy only the closures of these store paths (or symlinks into the store)')
  .option('--sign-key-file <file>', 'sign each narinfo copied with this secret key, if not signed by it yet (repeatable)', collect)
  .option('-j, --jobs <n>', 'NAR files copied at once (default 4)', integer(1))
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .action(async (from: string, to: string, opts: { keep?: string[]; signKeyFile?: string[]; jobs?: number; json?: boolean }) => {
    const signKeys = await Promise.all((opts.signKeyFile ?? []).map(readSecretKeyFile));
    const reporter = copyReporter(process.stderr);
    let summary;
    try {
      summary = await copyCache(from, to, { keep: opts.keep, signKeys, jobs: opts.jobs, onProgress: reporter.onProgress });
    } finally {
      reporter.done();
    }
    if (opts.json) await print(process.stdout, JSON.stringify(summary) + '\n');
    else await print(process.stderr, formatCopySummary(summary));
    if (summary.problems.length) process.exitCode = 1;
  });

/**
 * Turns the first SIGINT or SIGTERM into an abort of `stop`, so the work
 * stops cleanly; a second one exits at once. The handlers stay until the
 * process ends: a signal during the last moments still sets the status.
 */
function stopOnSignals(): void {
  for (const [name, code] of Object.entries(SIGNAL_EXIT_CODES)) {
    process.on(name, () => {
      if (stop.signal.aborted) process.exit(imposedExitCode ?? code);
      // Even if the work is done by then: a shell waiting on us must see
      // that the user stopped it.
      impose(code);
      stop.abort();
    });
  }
}

program.parseAsync(process.argv).then(
  () => {
    if (imposedExitCode !== undefined) process.exitCode = imposedExitCode;
  },
  (e: unknown) => {
    // Commander has printed its message (or the help) already.
    if (e instanceof CommanderError) {
      process.exitCode = imposedExitCode ?? e.exitCode;
      return;
    }
    const message = e instanceof Error ? e.message : String(e);
    process.stderr.write(`narcache: ${message.split('\n')[0]}\n`);
    if (process.env.NARCACHE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exitCode = imposedExitCode ?? 1;
  },
);
