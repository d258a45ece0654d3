import type { PruneProgress, PruneRemoval, PruneSummary } from '../prune';
import { formatBytes, plural } from './format';
import { bar, liveLine } from './progress';

/**
 * Shows a prune on `stream`: a bar on a terminal, otherwise one line per
 * file removed; in a dry run, one line per file that would go on `list`
 * (none without it).
 */
export function pruneReporter(
  stream: NodeJS.WriteStream,
  dryRun: boolean,
  list?: NodeJS.WritableStream,
): { onProgress: (p: PruneProgress) => void; onRemove: (r: PruneRemoval) => void; done: () => void } {
  const live = liveLine(stream);
  const onProgress = (p: PruneProgress) => {
    if (!stream.isTTY) return;
    live.draw(
      p.toRemove
        ? `${bar(p.removed / p.toRemove)} ${p.removed}/${p.toRemove} files removed`
        : `${bar(p.narinfosRead / (p.narinfosTotal || 1))} ${p.narinfosRead}/${p.narinfosTotal} narinfos read`,
    );
  };
  const onRemove = (r: PruneRemoval) => {
    const what = `${r.storePath ?? r.file}${r.size ? ` (${formatBytes(r.size)})` : ''}`;
    if (dryRun) list?.write(`would remove ${what}\n`);
    else if (!stream.isTTY) stream.write(`narcache: removed ${what}\n`);
  };
  return { onProgress, onRemove, done: live.clear };
}

export function formatPruneSummary(s: PruneSummary): string {
  const verb = s.dryRun ? 'would remove' : 'removed';
  return (
    `narcache: ${verb} ${plural(s.removedNarinfos, 'narinfo')}, ${plural(s.removedNarFiles, 'NAR file')}` +
    (s.removedListings + s.removedDebugInfoLinks
      ? `, ${plural(s.removedListings, 'listing')}, ${plural(s.removedDebugInfoLinks, 'debug-info link')}`
      : '') +
    ` and ` +
    `${plural(s.removedTemporary, 'temporary file')} (${formatBytes(s.freedBytes)}); kept ${plural(s.kept, 'narinfo')} ` +
    `of ${s.narinfos} in ${s.cache}, in ${s.seconds.toFixed(1)} s\n` +
    (s.missing.length ? `narcache: ${plural(s.missing.length, 'path')} to keep ${s.missing.length === 1 ? 'was' : 'were'} not in the cache\n` : '')
  );
}
