import type { CopyProgress, CopySummary } from '../copy';
import { formatBytes, formatDuration, plural } from './format';
import { bar, liveLine } from './progress';

/** Shows a copy's progress on `stream`: a bar on a terminal, one line per path copied otherwise. */
export function copyReporter(stream: NodeJS.WriteStream): { onProgress: (p: CopyProgress) => void; done: () => void } {
  const live = liveLine(stream);
  const onProgress = (p: CopyProgress) => {
    if (!stream.isTTY) {
      if (p.copied) stream.write(`narcache: copied ${p.copied.path} (${formatBytes(p.copied.fileSize)})\n`);
      return;
    }
    const rate = p.elapsedSeconds > 0 ? p.fileBytesDone / p.elapsedSeconds : 0;
    const eta = rate > 0 ? formatDuration((p.fileBytesTotal - p.fileBytesDone) / rate) : '?';
    live.draw(
      `${bar(p.fileBytesTotal ? p.fileBytesDone / p.fileBytesTotal : p.pathsDone / (p.pathsTotal || 1))} ` +
        `${p.pathsDone}/${p.pathsTotal} paths  ${formatBytes(p.fileBytesDone)} of ${formatBytes(p.fileBytesTotal)}  ` +
        `${formatBytes(rate)}/s  ETA ${eta}`,
    );
  };
  return { onProgress, done: live.clear };
}

/** One line per path not copied, then the summary. */
export function formatCopySummary(s: CopySummary): string {
  const serverSide = s.serverSide ? `, ${s.serverSide} of them by the storage service` : '';
  return (
    s.problems.map((p) => `narcache: ${p.storePath ?? p.file}: ${p.problem}\n`).join('') +
    `narcache: ${plural(s.copied, 'path')} copied, ${s.skipped} already present, from ${s.from} to ${s.to}\n` +
    `narcache: ${plural(s.narFiles, 'NAR file')} (${formatBytes(s.fileBytes)})${serverSide} in ${s.seconds.toFixed(1)} s` +
    `${s.problems.length ? `; ${plural(s.problems.length, 'path')} not copied` : ''}\n`
  );
}
