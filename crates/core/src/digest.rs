//! A stream that passes bytes through, written or read, while taking their
//! SHA-256 and count, so that one pass yields both the data and its hash.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub type Sha256Hash = [u8; 32];

pub struct Hashed<T> {
    inner: T,
    hasher: Sha256,
    len: u64,
    progress: Vec<Arc<AtomicU64>>,
}

impl<T> Hashed<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
            progress: Vec::new(),
        }
    }

    /// Also adds every byte count to each of `counters`, which another
    /// thread may read to show progress without touching this stream.
    pub fn with_progress(mut self, counters: Vec<Arc<AtomicU64>>) -> Self {
        self.progress = counters;
        self
    }

    /// The hash and count of every byte that has passed through.
    pub fn finish(self) -> (T, Sha256Hash, u64) {
        (self.inner, self.hasher.finalize().into(), self.len)
    }

    fn tally(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        for counter in &self.progress {
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tally(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally(&buf[..n]);
        Ok(n)
    }
}

/// SHA-256 and length of `bytes`, for tests to compare with.
#[cfg(test)]
pub(crate) fn sha256_of(bytes: &[u8]) -> (Sha256Hash, u64) {
    (Sha256::digest(bytes).into(), bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix32;

    #[test]
    fn hashes_what_passes_through() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut w = Hashed::new(Vec::new()).with_progress(vec![counter.clone()]);
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (out, hash, len) = w.finish();
        assert_eq!(out, b"abc");
        assert_eq!(len, 3);
        assert_eq!(counter.load(Ordering::Relaxed), 3);
        assert_eq!(
            nix32::encode(&hash),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
    }

    #[test]
    fn hashes_what_is_read() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut r = Hashed::new(&b"abc"[..]).with_progress(vec![counter.clone()]);
        let mut first = [0u8; 2];
        r.read_exact(&mut first).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        let (_, hash, len) = r.finish();
        assert_eq!((&first[..], &rest[..], len), (&b"ab"[..], &b"c"[..], 3));
        assert_eq!(counter.load(Ordering::Relaxed), 3);
        assert_eq!(
            nix32::encode(&hash),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
    }
}
