// Seeded mutations of narinfos and NARs for the hostile-input campaign
// (reliability-parsers.test.mjs): truncations, flipped and inserted bytes, huge length
// fields, wrong tokens, and values that Nix reads differently or not at all.

const NARINFO_KEYS = ['StorePath', 'URL', 'Compression', 'FileHash', 'FileSize', 'NarHash', 'NarSize', 'References', 'Deriver', 'Sig', 'CA'];
const ODD_CHARS = ['\0', '\r', '\n', ' ', ':', '-', '/', '.', '\t', 'é', '\uFFFD', 'a', '0', 'Z', '!', '\u2028'];

/**
 * Values to put in place of a narinfo field's value: numbers beyond 2^53 and 2^64, signs,
 * empty values, paths out of the cache, bad store paths, and `hashes` (other spellings of
 * the field's own hash, some that Nix reads and some it does not).
 */
function hostileValues(original, hashes) {
  return [
    '',
    ' ',
    '0',
    '-1',
    '+5',
    '1e3',
    '0x10',
    ' 12',
    '12 ',
    '9007199254740993',
    '18446744073709551615',
    '18446744073709551616',
    '99999999999999999999999999',
    'unknown-deriver',
    'garbage',
    'bad!name',
    '../../etc/passwd',
    '/etc/passwd',
    'nar/../nix-cache-info',
    'nar/',
    'file:///etc/passwd',
    '/nix/store/',
    '/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x',
    '/nix/store/00000000000000000000000000000000-x',
    'text:sha256:',
    'fixed:r:sha256:00',
    'fixed:md5:0',
    'texx:sha256:1wip12cq0by26b0853jypyvf1yb7xbs0qjmixpg31nbbk26i55dw',
    'sha256:',
    'md5:00000000000000000000000000000000',
    original.slice(0, -1),
    original + original,
    original.toUpperCase(),
    'x'.repeat(100_000),
    ...hashes,
  ];
}

/** A narinfo hash field's value in every spelling: prefixed base16/nix32/base64, SRI, bare. */
export function hashSpellings(value, nix32Decode) {
  const m = /^sha256:([0-9a-z]{52})$/.exec(value);
  if (!m) return [];
  const bytes = nix32Decode(m[1]);
  return [
    `sha256:${bytes.toString('hex')}`,
    `sha256:${bytes.toString('base64')}`,
    `sha256-${bytes.toString('base64')}`,
    m[1],
    bytes.toString('hex'),
    `sha512:${m[1]}`,
    `SHA256:${m[1]}`,
  ];
}

/**
 * One seeded mutation of narinfo text `text` (rng from helpers/reliability.mjs random()).
 * Returns { text, op }.
 */
export function mutateNarinfo(text, rng, nix32Decode) {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const line = rng.int(lines.length);
  const join = (ls) => ls.join('\n') + '\n';
  const at = rng.int(text.length + 1);
  const ops = {
    flipChar: () => text.slice(0, at) + rng.pick(ODD_CHARS) + text.slice(at + 1),
    deleteChars: () => text.slice(0, at) + text.slice(at + 1 + rng.int(8)),
    insertChars: () => text.slice(0, at) + Array.from({ length: 1 + rng.int(4) }, () => rng.pick(ODD_CHARS)).join('') + text.slice(at),
    truncate: () => text.slice(0, rng.int(text.length)),
    deleteLine: () => join(lines.filter((_, i) => i !== line)),
    duplicateLine: () => join([...lines.slice(0, line + 1), lines[line], ...lines.slice(line + 1)]),
    swapLines: () => {
      const other = rng.int(lines.length);
      const ls = [...lines];
      [ls[line], ls[other]] = [ls[other], ls[line]];
      return join(ls);
    },
    emptyLine: () => join([...lines.slice(0, line), '', ...lines.slice(line)]),
    renameKey: () => {
      const ls = [...lines];
      const colon = ls[line].indexOf(': ');
      ls[line] = rng.pick([...NARINFO_KEYS, 'narhash', 'Foo', '', ' NarHash', 'NarHash ', 'System']) + ls[line].slice(Math.max(colon, 0));
      return join(ls);
    },
    hostileValue: () => {
      const ls = [...lines];
      const colon = ls[line].indexOf(': ');
      const value = colon < 0 ? ls[line] : ls[line].slice(colon + 2);
      ls[line] = `${colon < 0 ? ls[line] : ls[line].slice(0, colon)}: ${rng.pick(hostileValues(value, hashSpellings(value, nix32Decode)))}`;
      return join(ls);
    },
    crlf: () => text.replaceAll('\n', '\r\n'),
    noFinalNewline: () => text.replace(/\n$/, ''),
    unknownKey: () => join([...lines.slice(0, line), rng.pick(['Foo: bar', 'System: x86_64-linux', 'Sig: ', 'References: ', 'CA: ']), ...lines.slice(line)]),
  };
  const op = rng.pick(Object.keys(ops));
  return { text: ops[op](), op };
}

// ---------------------------------------------------------------------------------------
// NARs: a NAR is a flat sequence of strings (u64 little-endian length, bytes, zero padding
// to 8), which makes token-level mutations easy.

const VOCABULARY = ['nix-archive-1', '(', ')', 'type', 'regular', 'symlink', 'directory', 'executable', '', 'contents', 'target', 'entry', 'name', 'node'];
const HUGE_LENGTHS = [2n ** 64n - 1n, 2n ** 62n, 2n ** 63n, 2n ** 32n, 2n ** 32n + 8n, 2n ** 31n];

const padded = (n) => n + ((8 - (n % 8)) % 8);

/** The strings of a well-formed NAR, as [{ at, bytes }]. */
export function narStrings(nar) {
  const out = [];
  for (let at = 0; at < nar.length; ) {
    const len = Number(nar.readBigUInt64LE(at));
    out.push({ at, bytes: nar.subarray(at + 8, at + 8 + len) });
    at += 8 + padded(len);
  }
  return out;
}

/** Serialises strings as a NAR does. */
export function narOf(strings) {
  return Buffer.concat(
    strings.flatMap((s) => {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(s.length));
      return [len, s, Buffer.alloc(padded(s.length) - s.length)];
    }),
  );
}

const BYTE_OPS = ['truncate', 'flipByte', 'flipBit', 'insertBytes', 'deleteBytes', 'appendGarbage'];

/**
 * One seeded mutation of the NAR `nar` (its strings `strings`, from narStrings; without
 * them, of its bytes only). Returns { bytes, op }.
 */
export function mutateNar(nar, strings, rng) {
  const at = rng.int(nar.length);
  const s = strings ? rng.int(strings.length) : 0;
  const tokens = strings?.map((x) => x.bytes);
  const withTokens = (f) => {
    const ts = [...tokens];
    f(ts);
    return narOf(ts);
  };
  const ops = {
    truncate: () => nar.subarray(0, rng.int(nar.length)),
    flipByte: () => {
      const b = Buffer.from(nar);
      b[at] ^= 1 + rng.int(255);
      return b;
    },
    flipBit: () => {
      const b = Buffer.from(nar);
      b[at] ^= 1 << rng.int(8);
      return b;
    },
    hugeLength: () => {
      const b = Buffer.from(nar);
      b.writeBigUInt64LE(rng.pick(HUGE_LENGTHS), strings[s].at);
      return b;
    },
    offLength: () => {
      const b = Buffer.from(nar);
      const len = BigInt(strings[s].bytes.length);
      b.writeBigUInt64LE(BigInt.asUintN(64, len + BigInt(rng.pick([-9, -8, -1, 1, 7, 8, 9, 4096]))), strings[s].at);
      return b;
    },
    wrongToken: () => withTokens((ts) => (ts[s] = Buffer.from(rng.pick(VOCABULARY)))),
    oddName: () =>
      withTokens(
        (ts) => (ts[s] = Buffer.from(rng.pick(['.', '..', 'a/b', 'x\0y', '/', 'n'.repeat(5000), 'Z', '\xff']), 'latin1')),
      ),
    deleteToken: () => withTokens((ts) => ts.splice(s, 1)),
    duplicateToken: () => withTokens((ts) => ts.splice(s, 0, ts[s])),
    swapTokens: () => withTokens((ts) => s + 1 < ts.length && ([ts[s], ts[s + 1]] = [ts[s + 1], ts[s]])),
    insertToken: () => withTokens((ts) => ts.splice(s, 0, Buffer.from(rng.pick(VOCABULARY)))),
    insertBytes: () => Buffer.concat([nar.subarray(0, at), Buffer.from(Array.from({ length: 1 + rng.int(16) }, () => rng.int(256))), nar.subarray(at)]),
    deleteBytes: () => Buffer.concat([nar.subarray(0, at), nar.subarray(at + 1 + rng.int(16))]),
    appendGarbage: () => Buffer.concat([nar, rng.pick([Buffer.alloc(8), Buffer.from(')'), narOf([Buffer.from(')')]), Buffer.from([rng.int(256)])])]),
  };
  const op = rng.pick(strings ? Object.keys(ops) : BYTE_OPS);
  return { bytes: ops[op](), op };
}
