import type { BuildProgress, BuildSummary } from '../build';
import { formatBytes, formatDuration } from './format';

const BAR_WIDTH = 24;

/**
 * Shows a build's progress on `stream`: a bar redrawn in place on a
 * terminal, one line per path written otherwise.
 */
export function progressReporter(stream: NodeJS.WriteStream): {
  onProgress: (p: BuildProgress) => void;
  done: () => void;
} {
  let drawn = false;
  const onProgress = (p: BuildProgress) => {
    if (!stream.isTTY) {
      if (p.written) {
        stream.write(
          `narcache: wrote ${p.written.path} (${formatBytes(p.written.narSize)} → ${formatBytes(p.written.fileSize)})\n`,
        );
      }
      return;
    }
    const fraction = p.narBytesTotal ? Math.min(1, p.narBytesDone / p.narBytesTotal) : 1;
    const filled = Math.round(fraction * BAR_WIDTH);
    const rate = p.elapsedSeconds > 0 ? p.narBytesDone / p.elapsedSeconds : 0;
    const eta = rate > 0 ? formatDuration((p.narBytesTotal - p.narBytesDone) / rate) : '?';
    const line =
      `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ` +
      `${p.pathsDone}/${p.pathsTotal} paths  ` +
      `${formatBytes(p.narBytesDone)} → ${formatBytes(p.fileBytesDone)}  ` +
      `${formatBytes(rate)}/s  ETA ${eta}`;
    stream.write(`\r\x1b[K${line.slice(0, (stream.columns || 80) - 1)}`);
    drawn = true;
  };
  const done = () => {
    if (drawn) stream.write('\r\x1b[K');
  };
  return { onProgress, done };
}

/** The one-paragraph summary printed at the end of a build. */
export function formatSummary(s: BuildSummary, dest: string): string {
  const ratio = s.narBytes ? ` (${((100 * s.fileBytes) / s.narBytes).toFixed(1)}%)` : '';
  return (
    `narcache: ${s.written} paths written, ${s.skipped} already present, into ${dest}\n` +
    `narcache: NAR ${formatBytes(s.narBytes)} → ${s.compression} ${formatBytes(s.fileBytes)}${ratio} in ${s.seconds.toFixed(1)} s\n`
  );
}
