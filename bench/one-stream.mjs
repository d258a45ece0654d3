#!/usr/bin/env node
// node bench/one-stream.mjs FILE DEST THREADS
//
// Packs one file (the bench gives it the closure's NARs concatenated) with
// narcache's library as zstd into DEST/nar/, durable, and prints the result
// as JSON: narcache's pipeline (read, SHA-256 of the NAR, zstd, SHA-256 of
// the file, write, sync) without any of a closure's per-path costs.
import { createRequire } from 'node:module';
import path from 'node:path';

import { REPO } from '../__test__/helpers/nix.mjs';

const { packPath } = createRequire(import.meta.url)(path.join(REPO, 'dist', 'index.js'));
const [file, dest, threads] = process.argv.slice(2);
const packed = await packPath(file, dest, { compression: 'zstd', threads: Number(threads) });
process.stdout.write(JSON.stringify(packed) + '\n');
