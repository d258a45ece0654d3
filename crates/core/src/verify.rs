//! Checking a NAR file of a binary cache: one streaming pass over it yields
//! what its narinfo must say (FileHash, FileSize, NarHash, NarSize) and
//! proves that it decompresses to a well-formed NAR.
//!
//! Memory is bounded whatever the file holds: the file is read through a
//! fixed buffer, the decompressor's window is capped, and the NAR parser
//! allocates nothing the data asks for.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use thiserror::Error;

use crate::compress::{Compression, Decoder, DECODER_MEMORY_LIMIT};
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
        compression: Compression,
        source: io::Error,
    },
    #[error("not a valid {compression} stream ({source})")]
    Corrupt {
        compression: Compression,
        source: io::Error,
    },
    #[error("the {compression} stream ends early: the file is truncated or corrupt")]
    Truncated { compression: Compression },
    #[error(
        "the {compression} stream needs more than {} MiB of memory to decompress",
        DECODER_MEMORY_LIMIT >> 20
    )]
    TooMuchMemory { compression: Compression },
    #[error(transparent)]
    Nar(ParseError),
}

/// Reads the NAR file at `path`, compressed with `compression`, once,
/// showing its entries to `visitor` (a [`nar::NarIndex`] lists them).
/// File bytes read are added to `progress.file_bytes`, NAR bytes to
/// `progress.nar_bytes` (both, for an uncompressed file).
pub fn verify(
    path: &Path,
    compression: Compression,
    progress: Option<&Progress>,
    visitor: &mut impl Visit,
) -> Result<NarCheck, VerifyError> {
    verify_reader(
        File::open(path).map_err(VerifyError::Read)?,
        compression,
        progress,
        visitor,
    )
}

/// [`verify`] of a NAR file read from `reader` (a download, say), whose
/// read errors are the file's.
pub fn verify_reader<R: Read>(
    reader: R,
    compression: Compression,
    progress: Option<&Progress>,
    visitor: &mut impl Visit,
) -> Result<NarCheck, VerifyError> {
    let file = FileReader(reader);
    let counters = |pick: fn(&Progress) -> &Arc<AtomicU64>| -> Vec<Arc<AtomicU64>> {
        progress.map(pick).into_iter().cloned().collect()
    };
    let decoder = match compression {
        // The file is the NAR: hash it once.
        Compression::None => {
            let mut both = counters(|p| &p.file_bytes);
            both.extend(counters(|p| &p.nar_bytes));
            let nar = nar::parse(file, visitor, both).map_err(|e| blame(e, compression))?;
            return Ok(NarCheck {
                file_hash: nar.hash,
                file_size: nar.size,
                nar,
            });
        }
        Compression::Xz => Decoder::xz,
        Compression::Zstd => Decoder::zstd,
    };
    let mut file = Hashed::new(file).with_progress(counters(|p| &p.file_bytes));
    let nar = nar::parse(
        decoder(&mut file).map_err(|source| VerifyError::Decoder {
            compression,
            source,
        })?,
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
fn blame(error: ParseError, compression: Compression) -> VerifyError {
    let ParseError::Read { source, .. } = error else {
        return VerifyError::Nar(error);
    };
    let source = match source.downcast::<FileError>() {
        Ok(FileError(e)) => return VerifyError::Read(e),
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
        verify(write_temp(bytes).path(), compression, None, &mut ())
    }

    const ALL: [Compression; 3] = [Compression::None, Compression::Xz, Compression::Zstd];

    #[test]
    fn gives_file_and_nar_identities_and_progress() {
        let nar_bytes = sample_nar();
        let (nar_hash, nar_size) = sha256_of(&nar_bytes);
        for compression in ALL {
            let file = compress(compression, &nar_bytes);
            let (file_hash, file_size) = sha256_of(&file);
            let progress = Progress::default();
            let temp = write_temp(&file);
            let check = verify(temp.path(), compression, Some(&progress), &mut ()).unwrap();
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
            Compression::Xz,
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
            let err = verify(dir.path(), compression, None, &mut ()).unwrap_err();
            assert!(
                matches!(err, VerifyError::Read(ref e) if e.raw_os_error() == Some(21)),
                "{compression}: {err:?}"
            );
        }
    }
}
