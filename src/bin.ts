#!/usr/bin/env node
// The `narcache` command (package.json "bin"): cli.ts, guarded against the one
// user-facing failure that happens while its modules load — a native core
// that does not load — so that it too is reported as one line.
import { NarcacheError } from './errors';

try {
  require('./cli');
} catch (e) {
  if (!(e instanceof NarcacheError)) throw e;
  process.stderr.write(`narcache: ${e.message}\n`);
  process.exitCode = 1;
}
