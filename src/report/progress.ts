import type { BuildProgress, BuildSummary } from '../build';
import { formatBytes, formatDuration, plural } from './format';

const BAR_WIDTH = 24;

/** `[#####.....]`: a bar `fraction` full. */
export function bar(fraction: number): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
}

/** One line on a terminal, redrawn in place and cut to its width. */
export function liveLine(stream: NodeJS.WriteStream): { draw: (line: string) => void; clear: () => void } {
  let drawn = false;
  return {
    draw: (line) => {
      stream.write(`\r\x1b[K${line.slice(0, (stream.columns || 80) - 1)}`);
      drawn = true;
    },
    clear: () => {
      if (drawn) stream.write('\r\x1b[K');
      drawn = false;
    },
  };
}

/**
 * Shows a build's progress on `stream`: a bar redrawn in place on a
 * terminal, one line per path written otherwise.
 */
export function progressReporter(stream: NodeJS.WriteStream): {
  onProgress: (p: BuildProgress) => void;
  done: () => void;
} {
  const live = liveLine(stream);
  const onProgress = (p: BuildProgress) => {
    if (!stream.isTTY) {
      if (p.written) {
        stream.write(
          `narcache: wrote ${p.written.path} (${formatBytes(p.written.narSize)} → ${formatBytes(p.written.fileSize)})\n`,
        );
      }
      return;
    }
    const fraction = p.narBytesTotal ? p.narBytesDone / p.narBytesTotal : 1;
    const rate = p.elapsedSeconds > 0 ? p.narBytesDone / p.elapsedSeconds : 0;
    const eta = rate > 0 ? formatDuration((p.narBytesTotal - p.narBytesDone) / rate) : '?';
    const line =
      `${bar(fraction)} ` +
      `${p.pathsDone}/${p.pathsTotal} paths  ` +
      `${formatBytes(p.narBytesDone)} → ${formatBytes(p.fileBytesDone)}  ` +
      `${formatBytes(rate)}/s  ETA ${eta}`;
    live.draw(line);
  };
  return { onProgress, done: live.clear };
}

/** The one-paragraph summary printed at the end of a build. */
export function formatSummary(s: BuildSummary, dest: string): string {
  const ratio = s.narBytes ? ` (${((100 * s.fileBytes) / s.narBytes).toFixed(1)}%)` : '';
  return (
    `narcache: ${plural(s.written, 'path')} written, ${s.skipped} already present, into ${dest}\n` +
    `narcache: NAR ${formatBytes(s.narBytes)} → ${s.compression} ${formatBytes(s.fileBytes)}${ratio} in ${s.seconds.toFixed(1)} s` +
    `${s.requests !== undefined ? `, ${plural(s.requests, 'request')}` : ''}\n`
  );
}
