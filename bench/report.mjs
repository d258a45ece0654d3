// The benchmark's results as a text table, JSON and an SVG bar chart.

const SPARK = '▁▂▃▄▅▆▇█';

function fixed(n, digits) {
  return n === null || n === undefined || Number.isNaN(n) ? '-' : n.toFixed(digits);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let u = 0;
  for (; n >= 1024 && u < units.length - 1; u++) n /= 1024;
  return `${n.toFixed(u ? 2 : 0)} ${units[u]}`;
}

/** Cores busy over the run, one character per slice ('·' for a slice without a sample). */
export function sparkline(slices, cores) {
  return slices
    .map((c) => (c === null ? '·' : SPARK[Math.max(0, Math.min(SPARK.length - 1, Math.round((c / cores) * (SPARK.length - 1))))]))
    .join('');
}

function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/**
 * The table of runs: one row each, with narcache's wall time divided by the
 * row's (same compression). idle-core s: time with half a core or more idle
 * on the whole machine (sampled runs only). passes: how many passes the wall
 * and CPU times are the median of (peak RSS and disk reads: the highest).
 */
export function formatRuns(runs) {
  const header = ['run', 'compr.', 'passes', 'wall s', 'MB/s', 'CPU s', 'cores busy', 'idle-core s', 'other CPU s', 'peak RSS MiB', 'disk read MiB', 'output bytes', 'narcache ÷ this', 'jobs 1 = jobs 2'];
  const rows = runs.map((r) => (r.error ? { ...r, mbPerSecond: null, cpuSeconds: null, coresBusy: null, underusedSeconds: null } : r)).map((r) => [
    r.id,
    r.compression,
    r.passes?.length ?? 1,
    r.error ? 'FAILED' : fixed(r.wallSeconds, 2),
    fixed(r.mbPerSecond, 1),
    fixed(r.cpuSeconds, 1),
    fixed(r.coresBusy, 2),
    fixed(r.underusedSeconds, 1),
    fixed(r.otherCpuSeconds, 1),
    fixed(r.peakRssMiB, 0),
    fixed(r.diskReadMiB, 0),
    r.outputBytes ?? '-',
    fixed(r.narcacheRatio, 3),
    r.identical === undefined ? '' : r.identical === null ? 'not run' : r.identical ? 'yes' : 'NO',
  ]);
  return table(header, rows);
}

export function formatTargets(targets) {
  return table(
    ['target (issue 10)', 'measured', 'limit', 'result'],
    targets.map((t) => [t.what, t.measured === null ? 'not run' : fixed(t.measured, 3), t.limit, t.measured === null ? '-' : t.informational ? (t.met ? 'below' : 'above') : t.met ? 'met' : 'MISSED']),
  );
}

/** Horizontal bars of wall time, one panel per compression, each with its own scale. */
export function svgChart(runs, title) {
  const groups = ['none', 'zstd', 'xz', 'xz-copy']
    .map((c) => ({ c, runs: runs.filter((r) => r.compression === c && !r.error) }))
    .filter((g) => g.runs.length);
  const barH = 20;
  const labelW = 200;
  const barW = 480;
  const width = labelW + barW + 170;
  const esc = (s) => String(s).replace(/[<>&]/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[ch]);
  const parts = [];
  let y = 40;
  for (const g of groups) {
    parts.push(`<text x="10" y="${y}" font-weight="bold">${esc(g.c)}</text>`);
    y += 10;
    const max = Math.max(...g.runs.map((r) => r.wallSeconds));
    for (const r of g.runs) {
      const w = Math.max(1, (r.wallSeconds / max) * barW);
      const fill = r.tool === 'narcache' ? '#d9480f' : r.tool === 'limit' ? '#868e96' : '#1c7ed6';
      parts.push(
        `<text x="${labelW - 8}" y="${y + 14}" text-anchor="end">${esc(r.id)}</text>`,
        `<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH - 4}" fill="${fill}"/>`,
        `<text x="${(labelW + w + 6).toFixed(1)}" y="${y + 14}">${fixed(r.wallSeconds, 1)} s · ${fixed(r.mbPerSecond, 0)} MB/s</text>`,
      );
      y += barH;
    }
    y += 16;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14">${esc(title)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
