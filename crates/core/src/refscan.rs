//! Finding a store path's references the way Nix does when it registers a
//! build's outputs (NixOS/nix src/libstore/references.cc): search the NAR
//! serialisation of the path, as a byte stream, for the 32-character hash
//! parts of candidate store paths. File contents, symlink targets and entry
//! names are all in that stream; the NAR's own framing cannot form or break a
//! match (every length field ends in a zero byte, padding is zeros).

use std::collections::{BTreeSet, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::Path;

use crate::digest::Hashed;
use crate::nar::{self, NarError, NarIdentity};

/// Length of the hash part of a store path's base name.
pub const HASH_PART_LEN: usize = 32;

/// The hash part of a store path: 32 characters of Nix's base-32 alphabet.
pub type HashPart = [u8; HASH_PART_LEN];

/// The hash parts searched for. Every window of 32 base-32 characters in a
/// NAR is looked up, so the lookup is hot: hash parts are already uniformly
/// random, and a multiply per eight bytes spreads them well enough, several
/// times faster than the default SipHash.
pub type Candidates = HashSet<HashPart, BuildHasherDefault<HashPartHasher>>;

#[derive(Default)]
pub struct HashPartHasher(u64);

impl Hasher for HashPartHasher {
    fn write(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(8) {
            let mut padded = [0u8; 8];
            padded[..word.len()].copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(padded));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Bytes of Nix's base-32 alphabet (`0-9a-z` without `e o u t`).
const fn base32_table() -> [bool; 256] {
    let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut table = [false; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = true;
        i += 1;
    }
    table
}
static IS_BASE32: [bool; 256] = base32_table();

/// The hash part that starts a store path's base name, if it has one.
pub fn hash_part(base_name: &[u8]) -> Option<HashPart> {
    let head: HashPart = base_name.get(..HASH_PART_LEN)?.try_into().ok()?;
    head.iter().all(|&b| IS_BASE32[b as usize]).then_some(head)
}

/// A stream searched for candidate hash parts as it passes through, in
/// pieces of any size.
pub struct RefScanner<'a, W> {
    inner: W,
    candidates: &'a Candidates,
    found: BTreeSet<HashPart>,
    /// The last bytes seen, so that a hash cut by a piece boundary is found.
    tail: Vec<u8>,
}

impl<'a, W> RefScanner<'a, W> {
    pub fn new(inner: W, candidates: &'a Candidates) -> Self {
        Self {
            inner,
            candidates,
            found: BTreeSet::new(),
            tail: Vec::with_capacity(2 * HASH_PART_LEN),
        }
    }

    /// The stream given back, and the candidates seen in it.
    pub fn finish(self) -> (W, BTreeSet<HashPart>) {
        (self.inner, self.found)
    }

    fn scan(&mut self, data: &[u8]) {
        // Windows that start in the tail and end in `data`.
        let head = data.len().min(HASH_PART_LEN - 1);
        self.tail.extend_from_slice(&data[..head]);
        search(&self.tail, self.candidates, &mut self.found);
        search(data, self.candidates, &mut self.found);
        let keep = HASH_PART_LEN - 1;
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            // The tail now holds old tail + all of `data`: keep its end.
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }
}

/// Every 32-byte window of `s` made of base-32 characters that is a
/// candidate. Like Nix, a window is checked from its end, so that a byte
/// outside the alphabet skips every window that contains it; within a run of
/// base-32 characters the window then slides one byte at a time.
fn search(s: &[u8], candidates: &Candidates, found: &mut BTreeSet<HashPart>) {
    let mut i = 0;
    while i + HASH_PART_LEN <= s.len() {
        if let Some(bad) = s[i..i + HASH_PART_LEN]
            .iter()
            .rposition(|&b| !IS_BASE32[b as usize])
        {
            i += bad + 1;
            continue;
        }
        loop {
            let part: HashPart = s[i..i + HASH_PART_LEN]
                .try_into()
                .expect("window has the hash length");
            if candidates.contains(&part) {
                found.insert(part);
            }
            let next = i + HASH_PART_LEN;
            if next < s.len() && IS_BASE32[s[next] as usize] {
                i += 1;
            } else {
                i = next + 1;
                break;
            }
        }
    }
}

impl<W: Write> Write for RefScanner<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Serialises `path` as a NAR without keeping it: its identity
/// (`NarHash`, `NarSize`) and the candidates its NAR contains, in one pass.
pub fn scan_path(
    path: &Path,
    candidates: &Candidates,
) -> Result<(NarIdentity, BTreeSet<HashPart>), NarError> {
    let mut scanner = RefScanner::new(Hashed::new(io::sink()), candidates);
    nar::dump(path, &mut scanner)?;
    let (hashed, found) = scanner.finish();
    let (_, hash, size) = hashed.finish();
    Ok((NarIdentity { hash, size }, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_of;
    use std::fs;
    use std::os::unix::fs::symlink;

    const A: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    const B: &[u8; 32] = b"zyxwvsrqpnmlkjihgfdcba9876543210";
    const C: &[u8; 32] = b"00000000000000000000000000000000";

    fn candidates() -> Candidates {
        [*A, *B, *C].into_iter().collect()
    }

    fn scan_pieces(pieces: &[&[u8]]) -> BTreeSet<HashPart> {
        let set = candidates();
        let mut s = RefScanner::new(io::sink(), &set);
        for p in pieces {
            s.write_all(p).unwrap();
        }
        s.finish().1
    }

    fn found(parts: &[&HashPart]) -> BTreeSet<HashPart> {
        parts.iter().map(|p| **p).collect()
    }

    #[test]
    fn finds_hashes_inside_longer_base32_runs_and_binary() {
        let mut data = b"\x00\xffprefix-".to_vec();
        data.extend_from_slice(A);
        data.extend_from_slice(b"-name\x00");
        // B inside a run of base-32 characters: every window is looked at.
        data.extend_from_slice(b"aaaa");
        data.extend_from_slice(B);
        data.extend_from_slice(b"zzzz");
        assert_eq!(scan_pieces(&[&data]), found(&[A, B]));
        // Two hashes back to back, the run ending with the data.
        assert_eq!(scan_pieces(&[&[&A[..], &C[..]].concat()]), found(&[A, C]));
    }

    #[test]
    fn a_hash_split_across_pieces_of_any_size_is_found() {
        let mut data = b"xx/nix/store/".to_vec();
        data.extend_from_slice(A);
        data.extend_from_slice(b"-foo yy ");
        data.extend_from_slice(C);
        for size in [1, 2, 5, 31, 32, 33, 64] {
            let pieces: Vec<&[u8]> = data.chunks(size).collect();
            assert_eq!(scan_pieces(&pieces), found(&[A, C]), "pieces of {size}");
        }
    }

    #[test]
    fn near_misses_are_not_references() {
        // 31 characters, a character outside the alphabet, a different hash.
        let mut data = A[..31].to_vec();
        data.push(b' ');
        let mut with_e = *B;
        with_e[10] = b'e';
        data.extend_from_slice(&with_e);
        data.extend_from_slice(b" 11111111111111111111111111111111");
        assert!(scan_pieces(&[&data]).is_empty());
    }

    #[test]
    fn hash_part_reads_the_start_of_a_base_name() {
        let mut name = A.to_vec();
        name.extend_from_slice(b"-hello");
        assert_eq!(hash_part(&name), Some(*A));
        assert_eq!(hash_part(b"short"), None);
        assert_eq!(hash_part(b"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"), None);
    }

    #[test]
    fn scan_path_sees_contents_symlink_targets_and_names_and_hashes_the_nar() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut contents = b"see /nix/store/".to_vec();
        contents.extend_from_slice(A);
        contents.extend_from_slice(b"-a/bin\n");
        fs::write(root.join("file"), &contents).unwrap();
        let target = format!("/nix/store/{}-b/lib", std::str::from_utf8(B).unwrap());
        symlink(&target, root.join("link")).unwrap();
        fs::write(root.join(std::str::from_utf8(C).unwrap()), b"").unwrap();

        let (nar, refs) = scan_path(&root, &candidates()).unwrap();
        assert_eq!(refs, found(&[A, B, C]));
        let mut reference = Vec::new();
        nar::dump(&root, &mut reference).unwrap();
        let (hash, size) = sha256_of(&reference);
        assert_eq!(nar, NarIdentity { hash, size });
    }
}
