// The summaries printed at the end of a build and of a verification: counts
// with their nouns in the right number.
import test from 'ava';

import progress from '../dist/report/progress.js';
import verify from '../dist/report/verify.js';

const build = (written, skipped) => ({
  paths: written + skipped,
  written,
  skipped,
  narBytes: 1024,
  fileBytes: 512,
  compression: 'zstd',
  seconds: 0.5,
});

test('a build summary says 1 path, 2 paths', (t) => {
  t.is(
    progress.formatSummary(build(1, 0), '/c'),
    'narcache: 1 path written, 0 already present, into /c\nnarcache: NAR 1.00 KiB → zstd 512 B (50.0%) in 0.5 s\n',
  );
  t.regex(progress.formatSummary(build(2, 1), '/c'), /^narcache: 2 paths written, 1 already present, into \/c\n/);
});

test('a verification summary counts narinfos, NAR files and problems in the right number', (t) => {
  const report = { narinfos: 1, valid: 0, narFiles: 2, fileBytes: 10, narBytes: 20, seconds: 1, ok: false, problems: [{}], orphans: [] };
  t.is(
    verify.formatVerifySummary(report),
    'narcache: checked 1 narinfo and 2 NAR files (10 B → NAR 20 B) in 1.0 s\nnarcache: 1 problem in 1 narinfo\n',
  );
  t.regex(
    verify.formatVerifySummary({ ...report, listings: 1, debugInfoLinks: 3 }),
    /^narcache: checked 1 narinfo, 2 NAR files, 1 listing and 3 debug-info links \(/,
  );
});
