#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { buildCache } from './build';
import type { Compression } from './pack';
import { formatSummary, progressReporter } from './report/progress';

// The CLI only parses flags and prints; all behaviour lives in the library.

const { version } = require('../package.json') as { version: string };

function integer(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || n < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    return n;
  };
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
  .option('--json', 'print a JSON summary on stdout instead of the text summary')
  .action(async (paths: string[], opts: { output: string; compression: Compression; level?: number; jobs?: number; json?: boolean }) => {
    const reporter = progressReporter(process.stderr);
    try {
      const summary = await buildCache({
        paths,
        dest: opts.output,
        compression: opts.compression,
        level: opts.level,
        jobs: opts.jobs,
        onProgress: reporter.onProgress,
      });
      reporter.done();
      if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else process.stderr.write(formatSummary(summary, opts.output));
    } finally {
      reporter.done();
    }
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`narcache: ${message.split('\n')[0]}\n`);
  if (process.env.NARCACHE_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  process.exitCode = 1;
});
