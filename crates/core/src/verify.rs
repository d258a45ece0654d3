//! Checking a NAR file of a binary cache: one streaming pass over it yields
//! what its narinfo must say (FileHash, FileSize, NarHash, NarSize) and
//! proves that it decompresses to a well-formed NAR.
//!
//! Memory is bounded whatever the file holds: the file is read through a
//! fixed buffer, the decompressor's window is capped, and the NAR parser
//! allocates nothing the data asks for. Time is bounded by what the narinfo
//! states: the stream is refused as soon as the NAR passes its NarSize, so
//! a small file that expands without end (or a sparse one) costs no more
//! than the NAR it claims to be.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use thiserror::Error;

use crate::compress::{Compression, Decoder, NarCompression, DECODER_MEMORY_LIMIT};
use crate::digest::{Hashed, Sha256Hash};
use crate::nar::{self, NarIdentity, ParseError, Visit};
use crate::pack::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NarCheck {
    /// SHA-256 and size of the file as stored.
    pub file_hash: Sha256Hash,
    pub file_size: u64,
    pub nar: NarIdentity,
}

/// Why a NAR file was refused. Messages do not name the file: the caller
/// knows which one it asked about.
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("cannot read the file: {0}")]
    Read(#[source] io::Error),
    #[error("cannot start the {compression} decompressor: {source}")]
    Decoder {
        compression: NarCompression,
        source: io::Error,
    },
    #[error("not a valid {compression} stream ({source})")]
    Corrupt {
        compression: NarCompression,
        source: io::Error,
    },
    #[error("the {compression} stream ends early: the file is truncated or corrupt")]
    Truncated { compression: NarCompression },
    #[error(
        "the {compression} stream needs more than {} MiB of memory to decompress",
        DECODER_MEMORY_LIMIT >> 20
    )]
    TooMuchMemory { compression: NarCompression },
    #[error("the NAR is longer than its NarSize of {nar_size} bytes")]
    LongerThanNarSize { nar_size: u64 },
    #[error(transparent)]
    Nar(ParseError),
}

/// Reads the NAR file at `path`, compressed with `compression`, once, and
/// no further than `nar_size` bytes of NAR (the NarSize its narinfo states),
/// showing its entries to `visitor` (a [`nar::NarIndex`] lists them).
/// File bytes read are added to `progress.file_bytes`, NAR bytes to
/// `progress.nar_bytes` (both, for an uncompressed file).
pub fn verify(
    path: &Path,
    compression: NarCompression,
    nar_size: u64,
    progress: Option<&Progress>,
    visitor: &mut impl Visit,
) -> Result<NarCheck, VerifyError> {
    verify_reader(
        File::open(path).map_err(VerifyError::Read)?,
        compression,
        nar_size,
        progress,
        visitor,
    )
}

/// [`verify`] of a NAR file read from `reader` (a download, say), whose
/// read errors are the file's.
pub fn verify_reader<R: Read>(
    reader: R,
    compression: NarCompression,
    nar_size: u64,
    progress: Option<&Progress>,
    visitor: &mut impl Visit,
) -> Result<NarCheck, VerifyError> {
    let counters = |pick: fn(&Progress) -> &Arc<AtomicU64>| -> Vec<Arc<AtomicU64>> {
        progress.map(pick).into_iter().cloned().collect()
    };
    if compression == NarCompression::Written(Compression::None) {
        // The file is the NAR: hash it once.
        let mut both = counters(|p| &p.file_bytes);
        both.extend(counters(|p| &p.nar_bytes));
        let nar = nar::parse(AtMost::new(FileReader(reader), nar_size), visitor, both)
            .map_err(|e| blame(e, compression))?;
        return Ok(NarCheck {
            file_hash: nar.hash,
            file_size: nar.size,
            nar,
        });
    }
    let mut file = Hashed::new(FileReader(reader)).with_progress(counters(|p| &p.file_bytes));
    let decoder = Decoder::new(compression, &mut file).map_err(|source| VerifyError::Decoder {
        compression,
        source,
    })?;
    let nar = nar::parse(
        AtMost::new(decoder, nar_size),
        visitor,
        counters(|p| &p.nar_bytes),
    )
    .map_err(|e| blame(e, compression))?;
    let (_, file_hash, file_size) = file.finish();
    Ok(NarCheck {
        file_hash,
        file_size,
        nar,
    })
}

/// Tells failures of the file from failures of the decompressor, which
/// both reach the NAR parser as read errors.
fn blame(error: ParseError, compression: NarCompression) -> VerifyError {
    let ParseError::Read { source, .. } = error else {
        return VerifyError::Nar(error);
    };
    let source = match source.downcast::<FileError>() {
        Ok(FileError(e)) => return VerifyError::Read(e),
        Err(source) => source,
    };
    let source = match source.downcast::<LongerThan>() {
        Ok(LongerThan(nar_size)) => return VerifyError::LongerThanNarSize { nar_size },
        Err(source) => source,
    };
    if source.kind() == io::ErrorKind::UnexpectedEof {
        return VerifyError::Truncated { compression };
    }
    if exceeds_memory_limit(&source) {
        return VerifyError::TooMuchMemory { compression };
    }
    VerifyError::Corrupt {
        compression,
        source,
    }
}

fn exceeds_memory_limit(error: &io::Error) -> bool {
    let xz = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<liblzma::stream::Error>())
        .is_some_and(|e| matches!(e, liblzma::stream::Error::MemLimit));
    // zstd's errors carry only their text (ZSTD_error_frameParameter_windowTooLarge).
    xz || error.to_string() == "Frame requires too much memory for decoding"
}

/// Reads at most `left` bytes and fails on the first byte beyond them, as
/// soon as it is there: what lies past it is neither decompressed nor read.
struct AtMost<R> {
    inner: R,
    limit: u64,
    left: u64,
}

impl<R> AtMost<R> {
    fn new(inner: R, limit: u64) -> Self {
        AtMost {
            inner,
            limit,
            left: limit,
        }
    }
}

#[derive(Debug, Error)]
#[error("longer than {0} bytes")]
struct LongerThan(u64);

impl<R: Read> Read for AtMost<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            return match self.inner.read(&mut [0])? {
                0 => Ok(0),
                _ => Err(io::Error::other(LongerThan(self.limit))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The file being checked, whose read errors are marked as its own.
struct FileReader<R>(R);

#[derive(Debug, Error)]
#[error(transparent)]
struct FileError(io::Error);

impl<R: Read> Read for FileReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), FileError(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Encoder;
    use crate::digest::sha256_of;
    use crate::nar::spelled::{directory, entry, nar, regular};
    use std::io::Write;
    use std::sync::atomic::Ordering;

    fn sample_nar() -> Vec<u8> {
        // Big enough for several decoder and parser buffers.
        let data: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        nar(directory(&[
            entry(b"data", regular(&data, false)),
            entry(b"run", regular(b"#!/bin/sh\n", true)),
        ]))
    }

    fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut enc =
            Encoder::new(compression, compression.default_level(), 1, Vec::new()).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn verify_bytes(bytes: &[u8], compression: Compression) -> Result<NarCheck, VerifyError> {
        verify(
            write_temp(bytes).path(),
            compression.into(),
            u64::MAX,
            None,
            &mut (),
        )
    }

    const ALL: [Compression; 3] = [Compression::None, Compression::Xz, Compression::Zstd];

    #[test]
    fn gives_file_and_nar_identities_and_progress() {
        let nar_bytes = sample_nar();
        let (nar_hash, nar_size) = sha256_of(&nar_bytes);
        let all = ALL.into_iter().map(NarCompression::from).chain(READ_ONLY);
        for compression in all {
            let file = compress_as_nix(compression, &nar_bytes);
            let (file_hash, file_size) = sha256_of(&file);
            let progress = Progress::default();
            let temp = write_temp(&file);
            let check =
                verify(temp.path(), compression, nar_size, Some(&progress), &mut ()).unwrap();
            assert_eq!(
                check,
                NarCheck {
                    file_hash,
                    file_size,
                    nar: NarIdentity {
                        hash: nar_hash,
                        size: nar_size
                    }
                },
                "{compression}"
            );
            assert_eq!(progress.file_bytes.load(Ordering::Relaxed), file_size);
            assert_eq!(progress.nar_bytes.load(Ordering::Relaxed), nar_size);
        }
    }

    #[test]
    fn truncated_files_are_refused() {
        let nar_bytes = sample_nar();
        for compression in ALL {
            let file = compress(compression, &nar_bytes);
            for len in [0, 1, 4, 12, file.len() / 2, file.len() - 1] {
                let err = verify_bytes(&file[..len], compression).unwrap_err();
                let expected = match compression {
                    Compression::None => format!("NAR ends early at byte {len} "),
                    _ => format!(
                        "the {compression} stream ends early: the file is truncated or corrupt"
                    ),
                };
                assert!(
                    err.to_string().starts_with(&expected),
                    "{compression} cut at {len}: {err}"
                );
            }
        }
    }

    #[test]
    fn corrupt_streams_are_refused() {
        let nar_bytes = sample_nar();
        for compression in [Compression::Xz, Compression::Zstd] {
            let file = compress(compression, &nar_bytes);
            // Any flipped byte: the streams carry checksums (CRC64, XXH64).
            for at in [file.len() / 3, file.len() / 2, file.len() - 3] {
                let mut bad = file.clone();
                bad[at] ^= 0x20;
                let err = verify_bytes(&bad, compression).unwrap_err();
                assert!(
                    matches!(err, VerifyError::Corrupt { .. }),
                    "{compression} flipped at {at}: {err}"
                );
            }
            // Garbage after the stream; xz waits for a whole stream header
            // (12 bytes) before it can tell garbage from another stream.
            for garbage in [&b"garbage!"[..], &[0x55; 64]] {
                let mut longer = file.clone();
                longer.extend_from_slice(garbage);
                let err = verify_bytes(&longer, compression).unwrap_err();
                assert!(
                    matches!(
                        (compression, garbage.len(), &err),
                        (_, 64, VerifyError::Corrupt { .. })
                            | (Compression::Zstd, _, VerifyError::Corrupt { .. })
                            | (Compression::Xz, 8, VerifyError::Truncated { .. })
                    ),
                    "{compression} + {} bytes: {err}",
                    garbage.len()
                );
            }
        }
        // One format read as the other.
        let zstd = compress(Compression::Zstd, &nar_bytes);
        assert_eq!(
            verify_bytes(&zstd, Compression::Xz)
                .unwrap_err()
                .to_string(),
            "not a valid xz stream (stream/file format not recognized)"
        );
        let xz = compress(Compression::Xz, &nar_bytes);
        assert_eq!(
            verify_bytes(&xz, Compression::Zstd)
                .unwrap_err()
                .to_string(),
            "not a valid zstd stream (Unknown frame descriptor)"
        );
        // A compressed file read as uncompressed.
        assert_eq!(
            verify_bytes(&xz, Compression::None)
                .unwrap_err()
                .to_string(),
            "not a NAR: it does not start with \"nix-archive-1\""
        );
    }

    #[test]
    fn valid_streams_of_bad_nars_are_refused_as_nars() {
        let mut nar_bytes = sample_nar();
        for compression in ALL {
            let err =
                verify_bytes(&compress(compression, b"hello, world\n"), compression).unwrap_err();
            assert_eq!(
                err.to_string(),
                "not a NAR: it does not start with \"nix-archive-1\""
            );
            let cut = &nar_bytes[..nar_bytes.len() - 8];
            let err = verify_bytes(&compress(compression, cut), compression).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "NAR ends early at byte {} (expected \"entry\" or \")\")",
                    cut.len()
                )
            );
        }
        nar_bytes.push(0);
        let err =
            verify_bytes(&compress(Compression::Zstd, &nar_bytes), Compression::Zstd).unwrap_err();
        assert!(
            matches!(err, VerifyError::Nar(ParseError::TrailingData { .. })),
            "{err}"
        );
    }

    #[test]
    fn huge_windows_are_refused() {
        // A zstd frame whose header asks for a 256 MiB window.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(28).unwrap();
        enc.write_all(&nar(regular(b"x", false))).unwrap();
        let zstd = enc.finish().unwrap();
        assert_eq!(
            verify_bytes(&zstd, Compression::Zstd)
                .unwrap_err()
                .to_string(),
            "the zstd stream needs more than 128 MiB of memory to decompress"
        );
        // An xz stream whose block header asks for a 1.5 GiB dictionary:
        // the LZMA2 dictionary byte (40 = 1.5 GiB) patched into a small
        // stream, and the block header's CRC32 fixed.
        let mut xz = compress(Compression::Xz, &nar(regular(b"x", false)));
        let header = 12; // the stream header; the block header follows
        let size = (usize::from(xz[header]) + 1) * 4;
        let flags = xz[header + 1];
        assert_eq!(flags & 3, 0, "one filter");
        // Skip the compressed and uncompressed sizes (varints) if present.
        let mut at = header + 2;
        for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
            if present {
                while xz[at] & 0x80 != 0 {
                    at += 1;
                }
                at += 1;
            }
        }
        assert_eq!(
            &xz[at..at + 2],
            &[0x21, 0x01],
            "LZMA2 with its one property byte"
        );
        xz[at + 2] = 40;
        let crc = crc32(&xz[header..header + size - 4]);
        xz[header + size - 4..header + size].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            verify_bytes(&xz, Compression::Xz).unwrap_err().to_string(),
            "the xz stream needs more than 128 MiB of memory to decompress"
        );
    }

    /// What Nix writes with compression=bzip2, br and gzip.
    fn compress_as_nix(compression: NarCompression, data: &[u8]) -> Vec<u8> {
        match compression {
            NarCompression::Written(c) => compress(c, data),
            NarCompression::Bzip2 => {
                let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
            NarCompression::Brotli => {
                let mut out = Vec::new();
                {
                    let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 6, 22);
                    enc.write_all(data).unwrap();
                }
                out
            }
            NarCompression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
        }
    }

    const READ_ONLY: [NarCompression; 3] = [
        NarCompression::Bzip2,
        NarCompression::Brotli,
        NarCompression::Gzip,
    ];

    #[test]
    fn streams_nix_also_writes_are_read_strictly() {
        let nar_bytes = sample_nar();
        let nar_size = nar_bytes.len() as u64;
        for compression in READ_ONLY {
            let file = compress_as_nix(compression, &nar_bytes);
            let mut longer = file.clone();
            longer.extend_from_slice(&[0x55; 64]);
            for (bad, how) in [
                (&file[..file.len() / 2], "cut in half"),
                (&longer[..], "with garbage after it"),
            ] {
                let err = verify(write_temp(bad).path(), compression, nar_size, None, &mut ())
                    .unwrap_err();
                assert!(
                    matches!(
                        err,
                        VerifyError::Truncated { .. } | VerifyError::Corrupt { .. }
                    ),
                    "{compression} {how}: {err}"
                );
            }
        }
    }

    /// A stream that expands to a NAR header announcing a file of `size`
    /// bytes and then `size` zero bytes, as `frames` copies of one frame:
    /// small to store, endless to decompress.
    fn bomb(compression: NarCompression, size: u64, frames: u64) -> Vec<u8> {
        let mut header = nar(regular(b"", false));
        // The spelled NAR of an empty file ends with its length (0), no
        // contents, and ")": keep the header up to the length and set it.
        let length_at = header.len() - 24;
        header.truncate(length_at + 8);
        header[length_at..].copy_from_slice(&size.to_le_bytes());
        let mut file = compress_as_nix(compression, &header);
        let piece = vec![0; (size / frames) as usize];
        let frame = compress_as_nix(compression, &piece);
        for _ in 0..frames {
            file.extend_from_slice(&frame);
        }
        file
    }

    #[test]
    fn stops_at_the_stated_nar_size() {
        // 32 GiB behind a few hundred kB; a sparse-like uncompressed NAR of
        // 4 GiB would need a file as large, so `none` gets a 64 MiB one.
        for compression in [
            NarCompression::Written(Compression::Zstd),
            NarCompression::Written(Compression::Xz),
            NarCompression::Gzip,
        ] {
            let file = bomb(compression, 32 << 30, 512);
            let progress = Progress::default();
            let err = verify(
                write_temp(&file).path(),
                compression,
                100,
                Some(&progress),
                &mut (),
            )
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                "the NAR is longer than its NarSize of 100 bytes",
                "{compression}"
            );
            let read = progress.file_bytes.load(Ordering::Relaxed);
            assert!(
                read < file.len() as u64 / 4,
                "{compression}: read {read} of {}",
                file.len()
            );
        }
        let mut plain = nar(regular(&vec![0; 64 << 20], false));
        let whole = verify_bytes(&plain, Compression::None).unwrap();
        assert_eq!(whole.nar.size, plain.len() as u64);
        let progress = Progress::default();
        let temp = write_temp(&plain);
        let err = verify(
            temp.path(),
            Compression::None.into(),
            288,
            Some(&progress),
            &mut (),
        )
        .unwrap_err();
        assert!(
            matches!(err, VerifyError::LongerThanNarSize { nar_size: 288 }),
            "{err}"
        );
        assert!(progress.nar_bytes.load(Ordering::Relaxed) <= 288);
        // Exactly NarSize is not too long; one byte more is.
        let size = plain.len() as u64;
        assert!(verify(temp.path(), Compression::None.into(), size, None, &mut ()).is_ok());
        plain.push(0);
        let err = verify(
            write_temp(&plain).path(),
            Compression::None.into(),
            size,
            None,
            &mut (),
        )
        .unwrap_err();
        assert!(
            matches!(err, VerifyError::LongerThanNarSize { .. }),
            "{err}"
        );
    }

    /// CRC-32 (IEEE), as xz's headers use it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[test]
    fn file_errors_are_the_file_s() {
        let err = verify(
            Path::new("/nonexistent/x.nar.xz"),
            Compression::Xz.into(),
            u64::MAX,
            None,
            &mut (),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the file: No such file or directory (os error 2)"
        );
        let dir = tempfile::tempdir().unwrap();
        for compression in ALL {
            // Reading a directory fails on the first read, not on open.
            let err = verify(dir.path(), compression.into(), u64::MAX, None, &mut ()).unwrap_err();
            assert!(
                matches!(err, VerifyError::Read(ref e) if e.raw_os_error() == Some(21)),
                "{compression}: {err:?}"
            );
        }
    }
}
