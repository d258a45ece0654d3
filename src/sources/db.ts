import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Closure, PathInfo } from '../closure';
import { fileError, NarcacheError } from '../errors';
import { narHashFrom } from '../hash';
import { readStoreDb } from '../native';

/**
 * The closure of `roots` as Nix's SQLite database records it, read without
 * Nix and strictly read-only (no lock, nothing written beside it, rows still
 * in its write-ahead log included), so that it works on a store mounted
 * read-only. `db` is a `db.sqlite`, or the directory holding it
 * (`/nix/var/nix/db`). Derivers, content addresses and signatures come along.
 */
export async function closureFromDb(db: string, roots: string[], storeDir: string): Promise<Closure> {
  if (!roots.length) throw new NarcacheError('no store paths given');
  const file = await databaseFile(db);
  const rows = await readStoreDb(file, roots).catch((e: Error) => {
    throw new NarcacheError(e.message);
  });
  const paths = rows.map(
    (row): PathInfo => ({
      path: row.path,
      narHash: narHashFrom(row.narHash, row.path, file),
      narSize: row.narSize,
      references: row.references.map((i) => rows[i].path),
      ...(row.deriver ? { deriver: row.deriver } : {}),
      ...(row.ca ? { ca: row.ca } : {}),
      sigs: row.sigs,
    }),
  );
  return { storeDir, paths };
}

async function databaseFile(db: string): Promise<string> {
  const stat = await fs.stat(db).catch((e: unknown) => {
    throw fileError(db, e);
  });
  return stat.isDirectory() ? path.join(db, 'db.sqlite') : db;
}
