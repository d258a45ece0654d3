//! Reading a NAR: one streaming pass that checks it is well formed by the
//! rules of Nix's own parser (NixOS/nix src/libutil/archive.cc) and yields
//! its SHA-256 and size, optionally showing each entry to a [`Visit`].
//!
//! What the input claims never decides what is allocated: names and symlink
//! targets are refused above fixed bounds before they are read, file
//! contents pass through one fixed buffer, and directories are walked with
//! an explicit stack of bounded depth, so a hostile NAR can neither exhaust
//! memory nor overflow the thread's stack.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use thiserror::Error;

use super::NarIdentity;
use crate::digest::Hashed;

/// Longest entry name accepted. Nix sets no bound; no file system Nix runs
/// on allows names anywhere near this long (Linux: 255 bytes, macOS: 255
/// UTF-16 units).
pub const MAX_NAME: usize = 4096;
/// Longest symlink target accepted: Linux's `PATH_MAX`, counting the NUL
/// that a target cannot contain.
pub const MAX_TARGET: usize = 4096;
/// Longest path of an entry below the root (names joined by `/`): 16 ×
/// `PATH_MAX`, far beyond any path Nix could have read or can restore.
pub const MAX_PATH: usize = 64 * 1024;
/// Deepest nesting of directories accepted, twice what fits in `PATH_MAX`.
pub const MAX_DEPTH: usize = 4096;

const BUFFER: usize = 256 * 1024;
/// The longest token the grammar fixes ("nix-archive-1" has 13 bytes);
/// where one of those is expected, a longer one is refused unread.
const KEYWORD_MAX: usize = 16;

const MAGIC: &[&str] = &["nix-archive-1"];
const OPEN: &[&str] = &["("];
const CLOSE: &[&str] = &[")"];
const TYPE: &[&str] = &["type"];
const TYPES: &[&str] = &["regular", "symlink", "directory"];
const EXECUTABLE_OR_CONTENTS: &[&str] = &["executable", "contents"];
const EMPTY: &[&str] = &[""];
const CONTENTS: &[&str] = &["contents"];
const TARGET: &[&str] = &["target"];
const ENTRY_OR_CLOSE: &[&str] = &["entry", ")"];
const NAME: &[&str] = &["name"];
const NODE: &[&str] = &["node"];

/// Sees the entries of a NAR as it is parsed. Nodes come in NAR order,
/// parents before their children; the contents of a regular file follow the
/// [`Visit::node`] call that announced it, in order, in chunks of any size.
/// A NAR that turns out to be malformed later may already have been
/// partly visited.
pub trait Visit {
    fn node(&mut self, _node: &Node<'_>) {}
    fn contents(&mut self, _chunk: &[u8]) {}
}

/// Visits nothing: parsing then only checks and hashes.
impl Visit for () {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node<'a> {
    /// Names from the root down, joined by `/`; empty for the root itself.
    pub path: &'a [u8],
    pub kind: NodeKind<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind<'a> {
    Regular {
        executable: bool,
        size: u64,
        /// Where the file's contents start in the NAR (the `narOffset` of
        /// Nix's NAR listings).
        offset: u64,
    },
    Symlink {
        target: &'a [u8],
    },
    Directory,
}

/// What the grammar called for where a NAR went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// One of these tokens.
    Tokens(&'static [&'static str]),
    Name,
    Target,
    Contents,
    Padding,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Tokens(tokens) => {
                for (i, token) in tokens.iter().enumerate() {
                    let separator = match i {
                        0 => "",
                        i if i == tokens.len() - 1 => " or ",
                        _ => ", ",
                    };
                    write!(f, "{separator}{token:?}")?;
                }
                Ok(())
            }
            Expected::Name => f.write_str("an entry name"),
            Expected::Target => f.write_str("a symlink target"),
            Expected::Contents => f.write_str("the contents of a file"),
            Expected::Padding => f.write_str("padding"),
        }
    }
}

/// A token found where another was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Token(Vec<u8>),
    /// Longer than any token that could have been meant; not read.
    Long(u64),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Token(bytes) => write!(f, "{}", Quoted(bytes)),
            Found::Long(len) => write!(f, "a string of {len} bytes"),
        }
    }
}

/// Bytes from a NAR, quoted with anything but printable ASCII escaped, so
/// that an error message stays one line of text.
struct Quoted<B>(B);

impl<B: AsRef<[u8]>> fmt::Display for Quoted<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.as_ref().escape_ascii())
    }
}

/// Why a NAR was refused. Offsets count bytes of the (uncompressed) NAR
/// from its start; they point at the token at fault, or at where the input
/// ended or failed.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("reading the NAR at byte {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("not a NAR: it does not start with \"nix-archive-1\"")]
    NotANar,
    #[error("NAR ends early at byte {offset} (expected {expected})")]
    Truncated { offset: u64, expected: Expected },
    #[error("NAR has {found} at byte {offset}, expected {expected}")]
    Unexpected {
        offset: u64,
        expected: Expected,
        found: Found,
    },
    #[error("NAR has non-zero padding at byte {offset}")]
    NonZeroPadding { offset: u64 },
    #[error("NAR has a {len}-byte string at byte {offset} where {expected} of at most {max} bytes belongs")]
    TooLong {
        offset: u64,
        expected: Expected,
        len: u64,
        max: usize,
    },
    #[error("NAR entry name {} at byte {offset} is not a valid file name", Quoted(.name))]
    InvalidName { offset: u64, name: Vec<u8> },
    #[error("NAR entry names not sorted at byte {offset}: {} after {}", Quoted(.name), Quoted(.previous))]
    Unsorted {
        offset: u64,
        name: Vec<u8>,
        previous: Vec<u8>,
    },
    #[error("NAR entry name {} repeated at byte {offset}", Quoted(.name))]
    Duplicate { offset: u64, name: Vec<u8> },
    #[error("NAR path at byte {offset} is longer than {MAX_PATH} bytes")]
    PathTooLong { offset: u64 },
    #[error("NAR nests directories more than {MAX_DEPTH} deep at byte {offset}")]
    TooDeep { offset: u64 },
    #[error("NAR has data after its end at byte {offset}")]
    TrailingData { offset: u64 },
}

type Result<T, E = ParseError> = std::result::Result<T, E>;

/// Reads a whole NAR from `reader` and checks it, reading until `reader`
/// ends: anything after the NAR is an error. Every byte read is added to
/// each of `progress`. Resolves to the NAR's SHA-256 and size.
pub fn parse<R: Read>(
    reader: R,
    visitor: &mut impl Visit,
    progress: Vec<Arc<AtomicU64>>,
) -> Result<NarIdentity> {
    Parser {
        input: Input {
            reader: Hashed::new(reader).with_progress(progress),
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
        },
        visitor,
        path: Vec::new(),
        scratch: Vec::new(),
    }
    .nar()
}

/// A directory whose entries are being read.
struct Dir {
    /// Length of the directory's own path in `Parser::path`.
    prefix: usize,
    /// Where the previous entry's name ends in `Parser::path`, once there is
    /// one: entries must come in strictly increasing byte order.
    previous_end: Option<usize>,
}

impl Dir {
    /// Where the names of entries start in `Parser::path`.
    fn names_start(&self) -> usize {
        if self.prefix == 0 {
            0
        } else {
            self.prefix + 1
        }
    }
}

struct Parser<'v, R, V> {
    input: Input<R>,
    visitor: &'v mut V,
    /// Path of the current node.
    path: Vec<u8>,
    /// The last string read: a keyword, name or symlink target.
    scratch: Vec<u8>,
}

impl<R: Read, V: Visit> Parser<'_, R, V> {
    fn nar(mut self) -> Result<NarIdentity> {
        match self.keyword(MAGIC) {
            Err(ParseError::Unexpected { .. }) => return Err(ParseError::NotANar),
            other => other?,
        };
        self.expect(OPEN)?;
        self.expect(TYPE)?;
        let mut dirs: Vec<Dir> = Vec::new();
        // Each turn reads one node, from its type on.
        loop {
            let mut closed = match TYPES[self.keyword(TYPES)?] {
                "regular" => {
                    self.regular()?;
                    true
                }
                "symlink" => {
                    self.symlink()?;
                    true
                }
                _ => {
                    if dirs.len() == MAX_DEPTH {
                        return Err(ParseError::TooDeep {
                            offset: self.input.offset,
                        });
                    }
                    self.visit(NodeKind::Directory);
                    dirs.push(Dir {
                        prefix: self.path.len(),
                        previous_end: None,
                    });
                    false
                }
            };
            // Close what is complete until a directory has another entry.
            loop {
                let Some(dir) = dirs.last_mut() else {
                    return self.end();
                };
                if closed {
                    self.expect(CLOSE)?; // the entry's
                }
                if ENTRY_OR_CLOSE[self.keyword(ENTRY_OR_CLOSE)?] == ")" {
                    // The directory's own ")": it is complete.
                    let prefix = dir.prefix;
                    dirs.pop();
                    self.path.truncate(prefix);
                    closed = true;
                    continue;
                }
                self.expect(OPEN)?;
                self.expect(NAME)?;
                let offset = self.input.offset;
                self.bounded(Expected::Name, MAX_NAME)?;
                self.enter(dir, offset)?;
                self.expect(NODE)?;
                self.expect(OPEN)?;
                self.expect(TYPE)?;
                break;
            }
        }
    }

    /// Checks the entry name in `scratch` (read at `offset`) against Nix's
    /// rules and its predecessor, and makes it the current path.
    fn enter(&mut self, dir: &mut Dir, offset: u64) -> Result<()> {
        let name = &self.scratch;
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.iter().any(|&b| b == b'/' || b == 0)
        {
            return Err(ParseError::InvalidName {
                offset,
                name: name.clone(),
            });
        }
        let start = dir.names_start();
        if let Some(end) = dir.previous_end {
            let previous = &self.path[start..end];
            if name.as_slice() == previous {
                return Err(ParseError::Duplicate {
                    offset,
                    name: name.clone(),
                });
            }
            if name.as_slice() < previous {
                return Err(ParseError::Unsorted {
                    offset,
                    name: name.clone(),
                    previous: previous.to_vec(),
                });
            }
        }
        if start + name.len() > MAX_PATH {
            return Err(ParseError::PathTooLong { offset });
        }
        self.path.truncate(dir.prefix);
        if dir.prefix > 0 {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        dir.previous_end = Some(self.path.len());
        Ok(())
    }

    /// A regular file, after its type, up to and including its ")".
    fn regular(&mut self) -> Result<()> {
        let executable =
            EXECUTABLE_OR_CONTENTS[self.keyword(EXECUTABLE_OR_CONTENTS)?] == "executable";
        if executable {
            self.expect(EMPTY)?;
            self.expect(CONTENTS)?;
        }
        let size = self.input.u64(Expected::Contents)?;
        self.visit(NodeKind::Regular {
            executable,
            size,
            offset: self.input.offset,
        });
        let visitor = &mut *self.visitor;
        self.input
            .take(size, Expected::Contents, |chunk| visitor.contents(chunk))?;
        self.input.padding(size)?;
        self.expect(CLOSE)
    }

    /// A symlink, after its type, up to and including its ")".
    fn symlink(&mut self) -> Result<()> {
        self.expect(TARGET)?;
        self.bounded(Expected::Target, MAX_TARGET)?;
        self.visitor.node(&Node {
            path: &self.path,
            kind: NodeKind::Symlink {
                target: &self.scratch,
            },
        });
        self.expect(CLOSE)
    }

    fn visit(&mut self, kind: NodeKind<'_>) {
        self.visitor.node(&Node {
            path: &self.path,
            kind,
        });
    }

    /// The root node is complete: the input must end here.
    fn end(mut self) -> Result<NarIdentity> {
        let offset = self.input.offset;
        if self.input.fill()? {
            return Err(ParseError::TrailingData { offset });
        }
        let (_, hash, size) = self.input.reader.finish();
        debug_assert_eq!(size, offset);
        Ok(NarIdentity { hash, size })
    }

    fn expect(&mut self, token: &'static [&'static str]) -> Result<()> {
        self.keyword(token).map(drop)
    }

    /// Reads a token that must be one of `choices`; returns which.
    fn keyword(&mut self, choices: &'static [&'static str]) -> Result<usize> {
        let expected = Expected::Tokens(choices);
        let offset = self.input.offset;
        match self.bounded(expected, KEYWORD_MAX) {
            Err(ParseError::TooLong { len, .. }) => {
                return Err(ParseError::Unexpected {
                    offset,
                    expected,
                    found: Found::Long(len),
                })
            }
            other => other?,
        }
        choices
            .iter()
            .position(|choice| choice.as_bytes() == self.scratch)
            .ok_or_else(|| ParseError::Unexpected {
                offset,
                expected,
                found: Found::Token(self.scratch.clone()),
            })
    }

    /// Reads a string of at most `max` bytes into `scratch`.
    fn bounded(&mut self, expected: Expected, max: usize) -> Result<()> {
        let offset = self.input.offset;
        let len = self.input.u64(expected)?;
        if len > max as u64 {
            return Err(ParseError::TooLong {
                offset,
                expected,
                len,
                max,
            });
        }
        self.scratch.clear();
        let scratch = &mut self.scratch;
        self.input
            .take(len, expected, |chunk| scratch.extend_from_slice(chunk))?;
        self.input.padding(len)
    }
}

/// The NAR's bytes, hashed as they are read, and handed out from one fixed
/// buffer.
struct Input<R> {
    reader: Hashed<R>,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Bytes consumed so far: the offset of the next one.
    offset: u64,
}

impl<R: Read> Input<R> {
    /// Makes unconsumed bytes available; false when the input has ended.
    fn fill(&mut self) -> Result<bool> {
        while self.pos == self.end {
            match self.reader.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => (self.pos, self.end) = (0, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ParseError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(true)
    }

    /// Consumes `len` bytes, showing them to `sink` piece by piece.
    fn take(
        &mut self,
        mut len: u64,
        expected: Expected,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<()> {
        while len > 0 {
            if !self.fill()? {
                return Err(ParseError::Truncated {
                    offset: self.offset,
                    expected,
                });
            }
            let available = self.end - self.pos;
            let n = usize::try_from(len).map_or(available, |len| len.min(available));
            sink(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    fn u64(&mut self, expected: Expected) -> Result<u64> {
        let mut bytes = [0u8; 8];
        let mut filled = 0;
        self.take(8, expected, |chunk| {
            bytes[filled..filled + chunk.len()].copy_from_slice(chunk);
            filled += chunk.len();
        })?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// The zero bytes that bring a string of `len` bytes to a multiple of 8.
    fn padding(&mut self, len: u64) -> Result<()> {
        let start = self.offset;
        let mut first_nonzero = None;
        let mut seen = 0;
        self.take((8 - len % 8) % 8, Expected::Padding, |chunk| {
            if let Some(i) = chunk.iter().position(|&b| b != 0) {
                first_nonzero.get_or_insert(start + seen + i as u64);
            }
            seen += chunk.len() as u64;
        })?;
        match first_nonzero {
            Some(offset) => Err(ParseError::NonZeroPadding { offset }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_of;
    use crate::nar::dump;
    use crate::nar::spelled::{cat, directory, entry, nar, regular, s, symlink};
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink as make_symlink, PermissionsExt};

    /// Everything a visitor sees, as text, to compare with the tree.
    #[derive(Default)]
    struct Listing {
        lines: Vec<String>,
        contents: Vec<u8>,
    }

    impl Visit for Listing {
        fn node(&mut self, node: &Node<'_>) {
            let path = node.path.escape_ascii();
            self.lines.push(match node.kind {
                NodeKind::Regular {
                    executable, size, ..
                } => format!(
                    "{path} regular {size}{}",
                    if executable { " x" } else { "" }
                ),
                NodeKind::Symlink { target } => format!("{path} -> {}", target.escape_ascii()),
                NodeKind::Directory => format!("{path}/"),
            });
        }
        fn contents(&mut self, chunk: &[u8]) {
            self.contents.extend_from_slice(chunk);
        }
    }

    fn identity_of(bytes: &[u8]) -> NarIdentity {
        let (hash, size) = sha256_of(bytes);
        NarIdentity { hash, size }
    }

    fn check(bytes: &[u8]) -> Result<NarIdentity> {
        parse(bytes, &mut (), Vec::new())
    }

    /// A reader that hands out one byte per read, to cross every boundary.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(out)) => {
                    *out = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(root.join("a/b/c/leaf"), b"deep\n").unwrap();
        // Bigger than the parser's buffer, so that contents span reads.
        let big: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(root.join("big"), &big).unwrap();
        for n in [0, 1, 7, 8, 9, 15, 16, 17] {
            fs::write(root.join(format!("len-{n}")), vec![b'x'; n]).unwrap();
        }
        fs::write(root.join("run"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"\xff\x01")), b"").unwrap();
        make_symlink("a/b", root.join("link")).unwrap();
        make_symlink("x".repeat(MAX_TARGET - 1), root.join("long-link")).unwrap();
        dir
    }

    #[test]
    fn round_trips_the_writer() {
        let tree = sample_tree();
        let mut bytes = Vec::new();
        dump(tree.path(), &mut bytes).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let mut listing = Listing::default();
        let identity = parse(&bytes[..], &mut listing, vec![counter.clone()]).unwrap();
        assert_eq!(identity, identity_of(&bytes));
        assert_eq!(
            counter.load(std::sync::atomic::Ordering::Relaxed),
            bytes.len() as u64
        );
        let long_link = format!("long-link -> {}", "x".repeat(MAX_TARGET - 1));
        let expected = [
            "/",
            "a/",
            "a/b/",
            "a/b/c/",
            "a/b/c/leaf regular 5",
            "big regular 600000",
            "empty/",
            "len-0 regular 0",
            "len-1 regular 1",
            "len-15 regular 15",
            "len-16 regular 16",
            "len-17 regular 17",
            "len-7 regular 7",
            "len-8 regular 8",
            "len-9 regular 9",
            "link -> a/b",
            &long_link,
            "run regular 10 x",
            "\\xff\\x01 regular 0",
        ];
        assert_eq!(listing.lines, expected);
        // The contents, in NAR order, exactly.
        let mut contents = b"deep\n".to_vec();
        contents.extend(fs::read(tree.path().join("big")).unwrap());
        for n in [0, 1, 15, 16, 17, 7, 8, 9] {
            contents.extend(vec![b'x'; n]);
        }
        contents.extend(b"#!/bin/sh\n");
        assert!(listing.contents == contents);
        // One byte per read gives the same.
        assert_eq!(
            parse(Trickle(&bytes), &mut (), Vec::new()).unwrap(),
            identity
        );
    }

    #[test]
    fn offsets_point_at_contents() {
        struct Offsets(Vec<(Vec<u8>, u64, u64)>);
        impl Visit for Offsets {
            fn node(&mut self, node: &Node<'_>) {
                if let NodeKind::Regular { size, offset, .. } = node.kind {
                    self.0.push((node.path.to_vec(), offset, size));
                }
            }
        }
        let tree = sample_tree();
        let mut bytes = Vec::new();
        dump(tree.path(), &mut bytes).unwrap();
        let mut offsets = Offsets(Vec::new());
        parse(&bytes[..], &mut offsets, Vec::new()).unwrap();
        assert_eq!(offsets.0.len(), 12);
        for (path, offset, size) in offsets.0 {
            let path = tree.path().join(std::ffi::OsStr::from_bytes(&path));
            let at = &bytes[offset as usize..(offset + size) as usize];
            assert!(at == fs::read(&path).unwrap(), "{}", path.display());
        }
    }

    #[test]
    fn single_nodes_at_the_root() {
        for node in [
            regular(b"hello", true),
            symlink(b"/etc/passwd"),
            directory(&[]),
        ] {
            let bytes = nar(node);
            assert_eq!(check(&bytes).unwrap(), identity_of(&bytes));
        }
        let mut listing = Listing::default();
        parse(&nar(symlink(b"t"))[..], &mut listing, Vec::new()).unwrap();
        assert_eq!(listing.lines, [" -> t"]);
    }

    /// Every kind of node, a nested directory, contents that need padding.
    fn small_nar() -> Vec<u8> {
        nar(directory(&[
            entry(b"a", regular(b"hello", true)),
            entry(b"b", symlink(b"c")),
            entry(b"c", directory(&[entry(b"d", regular(b"", false))])),
        ]))
    }

    #[test]
    fn truncation_at_every_offset() {
        let bytes = small_nar();
        check(&bytes).unwrap();
        for len in 0..bytes.len() {
            match check(&bytes[..len]) {
                Err(ParseError::Truncated { offset, .. }) => assert_eq!(offset, len as u64),
                other => panic!("cut at {len}: {other:?}"),
            }
        }
        assert_eq!(
            check(&bytes[..3]).unwrap_err().to_string(),
            "NAR ends early at byte 3 (expected \"nix-archive-1\")"
        );
    }

    #[test]
    fn flipped_bits_outside_names_targets_and_files_are_refused() {
        let bytes = small_nar();
        check(&bytes).unwrap();
        // The payload bytes: the one-byte strings "a" to "d", and the
        // length fields of "hello" and of the target "c", which may grow into
        // their zero padding (Nix, too, accepts a NUL in a symlink target).
        let one = 1u64.to_le_bytes();
        let hello = bytes.windows(5).position(|w| w == b"hello").unwrap();
        let target = bytes.windows(6).position(|w| w == b"target").unwrap() + 8;
        let payload = |i: usize| {
            (i >= 8 && bytes[i - 8..i] == one && b"abcd".contains(&bytes[i]))
                || (hello - 8..hello + 5).contains(&i)
                || (target..target + 8).contains(&i)
        };
        let mut accepted = 0;
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                if check(&bad).is_ok() {
                    assert!(payload(i), "flipping bit {bit} of byte {i} went unnoticed");
                    accepted += 1;
                }
            }
        }
        // Some payload changes are still well formed NARs (only the hash tells).
        assert!(accepted > 0);
    }

    /// The NAR header followed by these strings.
    fn after_header(tokens: &[&[u8]]) -> Vec<u8> {
        nar(tokens.iter().map(|t| s(t)).collect::<Vec<_>>().concat())
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let huge = u64::MAX.to_le_bytes();
        let then_huge = |tokens: &[&[u8]]| cat(&[after_header(tokens), huge.to_vec()]);
        let entry_name: &[&[u8]] = &[b"(", b"type", b"directory", b"entry", b"(", b"name"];
        let cases = [
            (huge.to_vec(), "not a NAR: it does not start with \"nix-archive-1\""),
            (
                then_huge(&[]),
                "NAR has a string of 18446744073709551615 bytes at byte 24, expected \"(\"",
            ),
            (
                then_huge(entry_name),
                "NAR has a 18446744073709551615-byte string at byte 128 where an entry name of at most 4096 bytes belongs",
            ),
            (
                then_huge(&[b"(", b"type", b"symlink", b"target"]),
                "NAR has a 18446744073709551615-byte string at byte 88 where a symlink target of at most 4096 bytes belongs",
            ),
            (
                then_huge(&[b"(", b"type", b"regular", b"contents"]),
                "NAR ends early at byte 96 (expected the contents of a file)",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(check(&bytes).unwrap_err().to_string(), message);
        }
        // Just over the bounds.
        let long_name = cat(&[after_header(entry_name), s(&[b'n'; MAX_NAME + 1])]);
        assert!(matches!(
            check(&long_name),
            Err(ParseError::TooLong { max: MAX_NAME, .. })
        ));
        let long_target = nar(symlink(&[b't'; MAX_TARGET + 1]));
        let err = check(&long_target).unwrap_err();
        assert!(matches!(
            err,
            ParseError::TooLong {
                max: MAX_TARGET,
                ..
            }
        ));
    }

    #[test]
    fn wrong_tokens() {
        let not_a_nar = "not a NAR: it does not start with \"nix-archive-1\"";
        let open_dir: &[&[u8]] = &[b"(", b"type", b"directory"];
        let open_entry = [open_dir, &[b"entry", b"(", b"name", b"a", b"node"]].concat();
        let cases: &[(Vec<u8>, &str)] = &[
            (cat(&[s(b"nix-archive-2"), regular(b"", false)]), not_a_nar),
            (b"hello, world, this is not a NAR".to_vec(), not_a_nar),
            (
                after_header(&[b"(", b"type", b"fifo", b")"]),
                "NAR has \"fifo\" at byte 56, expected \"regular\", \"symlink\" or \"directory\"",
            ),
            (
                after_header(&[b"(", b"kind", b"regular"]),
                "NAR has \"kind\" at byte 40, expected \"type\"",
            ),
            (
                after_header(&[b"(", b"type", b"regular", b"executable", b"yes"]),
                "NAR has \"yes\" at byte 96, expected \"\"",
            ),
            (
                after_header(&[b"(", b"type", b"regular", b"executable", b"", b"executable"]),
                "NAR has \"executable\" at byte 104, expected \"contents\"",
            ),
            (
                after_header(&[b"(", b"type", b"regular", b"content"]),
                "NAR has \"content\" at byte 72, expected \"executable\" or \"contents\"",
            ),
            (
                after_header(&[b"(", b"type", b"regular", b"contents", b"x", b"contents"]),
                "NAR has \"contents\" at byte 104, expected \")\"",
            ),
            (
                after_header(&[b"(", b"type", b"symlink", b"contents"]),
                "NAR has \"contents\" at byte 72, expected \"target\"",
            ),
            (
                after_header(&[open_dir, &[b"name"]].concat()),
                "NAR has \"name\" at byte 80, expected \"entry\" or \")\"",
            ),
            (
                after_header(&[open_dir, &[b"entry", b"(", b"node"]].concat()),
                "NAR has \"node\" at byte 112, expected \"name\"",
            ),
            (
                after_header(&[open_dir, &[b"entry", b"(", b"name", b"a", b"("]].concat()),
                "NAR has \"(\" at byte 144, expected \"node\"",
            ),
            (
                // An entry not closed before the next one.
                cat(&[after_header(&open_entry), regular(b"", false), s(b"entry")]),
                "NAR has \"entry\" at byte 248, expected \")\"",
            ),
            (
                // Same length, other bytes; a control character shown escaped.
                after_header(&[b"(\n"]),
                "NAR has \"(\\n\" at byte 24, expected \"(\"",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(check(bytes).unwrap_err().to_string(), *message);
        }
    }

    #[test]
    fn names_must_be_valid_and_strictly_sorted() {
        let with_names = |names: &[&[u8]]| {
            let entries: Vec<Vec<u8>> = names
                .iter()
                .map(|n| entry(n, regular(b"", false)))
                .collect();
            nar(directory(&entries))
        };
        assert!(check(&with_names(&[
            b"B",
            b"a",
            b"a.",
            b"b",
            b"\xc3\xa9",
            b"\xff"
        ]))
        .is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            let err = check(&with_names(&[bad])).unwrap_err();
            assert!(
                matches!(err, ParseError::InvalidName { offset: 128, .. }),
                "{err:?}"
            );
        }
        assert_eq!(
            check(&with_names(&[b"a\0b"])).unwrap_err().to_string(),
            "NAR entry name \"a\\x00b\" at byte 128 is not a valid file name"
        );
        // Byte order, not locale order: "a" < "B" is unsorted.
        assert_eq!(
            check(&with_names(&[b"a", b"B"])).unwrap_err().to_string(),
            "NAR entry names not sorted at byte 312: \"B\" after \"a\""
        );
        assert_eq!(
            check(&with_names(&[b"\xff", b"\xc3\xa9"]))
                .unwrap_err()
                .to_string(),
            "NAR entry names not sorted at byte 312: \"\\xc3\\xa9\" after \"\\xff\""
        );
        assert_eq!(
            check(&with_names(&[b"a", b"b", b"b"]))
                .unwrap_err()
                .to_string(),
            "NAR entry name \"b\" repeated at byte 496"
        );
        // A prefix sorts first.
        assert!(matches!(
            check(&with_names(&[b"ab", b"a"])),
            Err(ParseError::Unsorted { .. })
        ));
        // Order is per directory: a child's names do not count in its parent.
        let nested = nar(directory(&[
            entry(b"m", directory(&[entry(b"z", regular(b"", false))])),
            entry(b"n", regular(b"", false)),
        ]));
        assert!(check(&nested).is_ok());
        let nested_unsorted = nar(directory(&[
            entry(b"m", directory(&[entry(b"a", regular(b"", false))])),
            entry(b"b", regular(b"", false)),
        ]));
        assert!(matches!(
            check(&nested_unsorted),
            Err(ParseError::Unsorted { ref name, ref previous, .. }) if name == b"b" && previous == b"m"
        ));
    }

    #[test]
    fn padding_must_be_zero() {
        let good = nar(regular(b"abc", false));
        // "abc" sits at 96..99, its padding at 99..104.
        assert_eq!(&good[96..99], b"abc");
        for i in 99..104 {
            let mut bad = good.clone();
            bad[i] = 1;
            assert_eq!(
                check(&bad).unwrap_err().to_string(),
                format!("NAR has non-zero padding at byte {i}")
            );
        }
        // Padding of a keyword too ("(" at 24, padded to 40).
        let mut bad = good.clone();
        bad[39] = 0x80;
        assert!(matches!(
            check(&bad),
            Err(ParseError::NonZeroPadding { offset: 39 })
        ));
    }

    #[test]
    fn nothing_may_follow_the_end() {
        let good = nar(regular(b"x", false));
        for extra in [&[0u8][..], &[0; 8], b")", &s(b")")] {
            let bad = cat(&[good.clone(), extra.to_vec()]);
            assert_eq!(
                check(&bad).unwrap_err().to_string(),
                format!("NAR has data after its end at byte {}", good.len())
            );
        }
    }

    #[test]
    fn depth_and_path_are_bounded() {
        fn nested(depth: usize, name: &[u8]) -> Vec<u8> {
            // Built inside out, iteratively: deep recursion in the test
            // itself would be the stack overflow the parser avoids.
            let mut node = directory(&[]);
            for _ in 0..depth - 1 {
                node = directory(&[entry(name, node)]);
            }
            nar(node)
        }
        assert!(check(&nested(MAX_DEPTH, b"d")).is_ok());
        assert!(matches!(
            check(&nested(MAX_DEPTH + 1, b"d")),
            Err(ParseError::TooDeep { .. })
        ));
        // 16 names of 4095 bytes and their slashes fit in 64 KiB; 17 do not.
        let name = vec![b'n'; MAX_NAME - 1];
        assert!(check(&nested(17, &name)).is_ok());
        assert!(matches!(
            check(&nested(18, &name)),
            Err(ParseError::PathTooLong { .. })
        ));
    }

    #[test]
    fn read_errors_carry_the_offset() {
        /// Gives its bytes, then fails.
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0.read(buf)
            }
        }
        let err = parse(Failing(b""), &mut (), Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "reading the NAR at byte 0: disk on fire");
        let good = nar(regular(b"x", false));
        let err = parse(Failing(&good[..20]), &mut (), Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "reading the NAR at byte 20: disk on fire");
    }

    #[test]
    fn dumped_store_like_paths_round_trip() {
        // The writer's own odd cases: every file type at the root.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"hello").unwrap();
        let link = dir.path().join("l");
        make_symlink("f", &link).unwrap();
        for path in [file.as_path(), link.as_path(), dir.path()] {
            let mut bytes = Vec::new();
            dump(path, &mut bytes).unwrap();
            assert_eq!(check(&bytes).unwrap(), identity_of(&bytes));
        }
    }
}
