import type { RepairReport } from '../repair';
import type { VerifyProgress, VerifyReport } from '../verify';
import { formatBytes, plural } from './format';
import { bar, liveLine } from './progress';

/** Shows a verification's progress as a bar on a terminal; nothing otherwise. */
export function verifyReporter(stream: NodeJS.WriteStream): {
  onProgress: (p: VerifyProgress) => void;
  done: () => void;
} {
  const live = liveLine(stream);
  const onProgress = (p: VerifyProgress) => {
    if (!stream.isTTY) return;
    const fraction = p.fileBytesTotal ? p.fileBytesDone / p.fileBytesTotal : p.narinfosDone / (p.narinfosTotal || 1);
    live.draw(
      `${bar(fraction)} ${p.narinfosDone}/${p.narinfosTotal} narinfos  ` +
        `${formatBytes(p.fileBytesDone)} of ${formatBytes(p.fileBytesTotal)}  ` +
        plural(p.problems, 'problem'),
    );
  };
  return { onProgress, done: live.clear };
}

/** One line per problem, unchecked NAR file, orphan and leftover, naming the store path where known. */
export function formatFindings(r: VerifyReport): string {
  return [
    ...r.problems.map((p) => `${p.storePath ?? p.file}: ${p.problem}\n`),
    ...r.unchecked.map((u) => `${u.storePath}: NAR file ${u.url} not checked: narcache does not read ${u.compression}\n`),
    ...r.orphans.map((f) => `${f}: orphan, no narinfo names it\n`),
    ...r.leftovers.map((f) => `${f}: leftover of a writer that died, removed by the next build or sign\n`),
  ].join('');
}

/** `a`, `a and b`, `a, b and c`. */
function inWords(items: string[]): string {
  return items.length > 1 ? `${items.slice(0, -1).join(', ')} and ${items.at(-1)}` : (items[0] ?? '');
}

export function formatVerifySummary(r: VerifyReport): string {
  const faulty = r.narinfos - r.valid;
  return (
    `narcache: checked ${inWords([
      plural(r.narinfos, 'narinfo'),
      plural(r.narFiles, 'NAR file'),
      ...(r.listings ? [plural(r.listings, 'listing')] : []),
      ...(r.debugInfoLinks ? [plural(r.debugInfoLinks, 'debug-info link')] : []),
    ])} ` +
    `(${formatBytes(r.fileBytes)} → NAR ${formatBytes(r.narBytes)}) in ${r.seconds.toFixed(1)} s\n` +
    `narcache: ${verdict(r, faulty)}` +
    `${r.orphans.length ? `; ${plural(r.orphans.length, 'orphan NAR file')}` : ''}` +
    `${r.leftovers.length ? `; ${plural(r.leftovers.length, 'leftover temporary file')}` : ''}\n`
  );
}

function verdict(r: VerifyReport, faulty: number): string {
  if (r.ok) return 'the cache is sound';
  const unchecked = r.unchecked.length
    ? `${plural(r.unchecked.length, 'NAR file')} not checked (${[...new Set(r.unchecked.map((u) => u.compression))].join(', ')})`
    : '';
  if (!r.problems.length) return `no problem found, but ${unchecked}`;
  return `${plural(r.problems.length, 'problem')}${faulty ? ` in ${plural(faulty, 'narinfo')}` : ''}${unchecked ? `; ${unchecked}` : ''}`;
}

/** One line per path whose NAR file was written again. */
export function formatRepaired(r: RepairReport): string {
  return r.repaired
    .map((p) => `narcache: repaired ${p.storePath}: wrote ${p.url}${p.narinfoRewritten ? ' and a narinfo naming it' : ''}\n`)
    .join('');
}
