/**
 * An error caused by the user's input or environment (a missing path, an
 * unwritable destination, a corrupt store), reported as one line.
 */
export class NarcacheError extends Error {
  override name = 'NarcacheError';
}
