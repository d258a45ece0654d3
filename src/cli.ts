#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { buildCache } from './build';
import type { Compression } from './pack';
import { formatSummary, progressReporter } from './report/progress';
import { formatFindings, formatVerifySummary, verifyReporter } from './report/verify';
import { signCache } from './sign-cache';
import { formatPublicKey, keygen, parsePublicKey, readSecretKeyFile } from './signing';
import { verifyCache } from './verify';

// The CLI only parses flags and prints; all behaviour lives in the library.

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

const program = new Command('narcache')
  .description('Turn the closure of Nix store paths into a flat-file Nix binary cache.')
  .version(version, '-V, --version', 'print the version')
  .helpOption('-h, --help', 'show help')
  .configureOutput({ outputError: (message, write) => write(`narcache: ${message.replace(/^error: /, '')}`) })
  .showHelpAfterError('(run with --help for usage)');

program
  .command('build')
  .description(
    'write the closure of PATHS (store paths, or symlinks into the store such as ./result) ' +
      'as a binary cache in DIR; paths already in DIR are skipped, so re-running resumes',
  )
  .argument('<paths...>', 'store paths or symlinks into the store')
  .requiredOption('-o, --output <dir>', 'the cache directory (created if missing)')
  .addOption(
    new Option('-c, --compression <method>', 'how NAR files are compressed')
      .choices(['zstd', 'xz', 'none'])
      .default('zstd'),
  )
  .option('-l, --level <n>', 'compression level: xz 0-9 (default 6), zstd 1-22 (default 3)', integer(0))
  .option('-j, --jobs <n>', 'threads for packing: paths packed at once, a large path taking several (default: the CPU count)', integer(1))
  .option('--sign-key-file <file>', 'sign each narinfo written with this secret key (repeatable)', collect)
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .action(async (paths: string[], opts: { output: string; compression: Compression; level?: number; jobs?: number; signKeyFile?: string[]; json?: boolean }) => {
    const signKeys = await Promise.all((opts.signKeyFile ?? []).map(readSecretKeyFile));
    const reporter = progressReporter(process.stderr);
    try {
      const summary = await buildCache({
        paths,
        dest: opts.output,
        compression: opts.compression,
        level: opts.level,
        jobs: opts.jobs,
        signKeys,
        onProgress: reporter.onProgress,
      });
      reporter.done();
      if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else process.stderr.write(formatSummary(summary, opts.output));
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
    process.stdout.write(formatPublicKey(publicKey) + '\n');
  });

program
  .command('sign')
  .description(
    'add a signature by each key to the narinfos of the cache in DIR that lack one, each narinfo replaced ' +
      'atomically; signing vouches for what the narinfos say, so verify the cache first',
  )
  .argument('<dir>', 'the cache directory')
  .requiredOption('--sign-key-file <file>', 'secret key to sign with (repeatable)', collect)
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .action(async (dir: string, opts: { signKeyFile: string[]; json?: boolean }) => {
    const keys = await Promise.all(opts.signKeyFile.map(readSecretKeyFile));
    const summary = await signCache(dir, { keys });
    if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
    else process.stderr.write(`narcache: signed ${summary.signed} narinfos, ${summary.alreadySigned} were signed already, in ${summary.cache}\n`);
  });

program
  .command('verify')
  .description(
    'check that the cache in DIR is sound: every narinfo parses, names a NAR file inside nar/ with the ' +
      'FileSize and FileHash it states, that decompresses to a well-formed NAR with its NarSize and NarHash, ' +
      'and has narinfos for all its references; with keys, one valid signature by a trusted key. Prints one ' +
      'line per problem and lists NAR files no narinfo names (orphans, which are not problems); ' +
      'exits 0 only if there is no problem',
  )
  .argument('<dir>', 'the cache directory')
  .option('--trusted-public-key <key>', 'a public key (name:base64) whose signature is required (repeatable)', collect)
  .option('-j, --jobs <n>', 'NAR files checked at once (default: the CPU count)', integer(1))
  .option('--json', 'print the report as JSON on stdout instead of the text lines and summary')
  .action(async (dir: string, opts: { trustedPublicKey?: string[]; jobs?: number; json?: boolean }) => {
    // A value may hold several keys, as trusted-public-keys in nix.conf does.
    const trustedPublicKeys = (opts.trustedPublicKey ?? [])
      .flatMap((v) => v.split(/\s+/).filter(Boolean))
      .map((k) => parsePublicKey(k, `--trusted-public-key ${k}`));
    const reporter = verifyReporter(process.stderr);
    let report;
    try {
      report = await verifyCache(dir, { trustedPublicKeys, jobs: opts.jobs, onProgress: reporter.onProgress });
    } finally {
      reporter.done();
    }
    if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      process.stdout.write(formatFindings(report));
      process.stderr.write(formatVerifySummary(report));
    }
    if (!report.ok) process.exitCode = 1;
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`narcache: ${message.split('\n')[0]}\n`);
  if (process.env.NARCACHE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  process.exitCode = 1;
});
