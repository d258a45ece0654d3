import { plural } from './report/format';

/**
 * An error caused by the user's input or environment (a missing path, an
 * unwritable destination, a corrupt store), reported as one line.
 */
export class NarcacheError extends Error {
  override name = 'NarcacheError';
}

/** A build (or signing) stopped on request; what it wrote is complete, and a re-run resumes. */
export class InterruptedError extends NarcacheError {
  override name = 'InterruptedError';

  /** `done` says what was written: `writing 3 paths`, `signing 1024 narinfos`. */
  constructor(
    readonly written: number,
    done = `writing ${plural(written, 'path')}`,
  ) {
    super(`interrupted after ${done}; the cache holds only complete entries, and running the same command again resumes`);
  }
}

/** The system's reason for a failed call, without its code and call: `no space left on device`. */
export function systemReason(e: NodeJS.ErrnoException): string {
  return e.message.replace(/^[A-Z]+: /, '').replace(/, \w+(?: '.*')?$/, '');
}

/** A file that cannot be read, as one line naming it. */
export function fileError(file: string, e: unknown): NarcacheError {
  const code = (e as NodeJS.ErrnoException).code;
  return new NarcacheError(`${file}: ${code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
}
