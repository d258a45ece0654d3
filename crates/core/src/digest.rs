//! A writer that passes bytes through while taking their SHA-256 and count,
//! so that one stream yields both a NAR (or compressed file) and its hash.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub type Sha256Hash = [u8; 32];

pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
    progress: Vec<Arc<AtomicU64>>,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
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

    pub fn finish(self) -> (W, Sha256Hash, u64) {
        (self.inner, self.hasher.finalize().into(), self.len)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        for counter in &self.progress {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix32;

    #[test]
    fn hashes_what_passes_through() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut w = HashWriter::new(Vec::new()).with_progress(vec![counter.clone()]);
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
}
