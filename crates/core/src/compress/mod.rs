//! The compressors of a binary cache: zstd, xz and none, and the
//! decompressors of those and of what else Nix writes and narcache reads:
//! bzip2, brotli (`br`) and gzip.
//!
//! Both real compressors always write what their multi-threaded encoder
//! writes with a fixed block (xz) or job (zstd) size. Their output then
//! depends only on the input and the level, never on the number of
//! threads, so caches are byte-identical whatever `--jobs` and the
//! machine's core count. (xz on one thread has its own encoder of those
//! bytes, [`xz::BlockEncoder`], which needs less memory; zstd streams
//! reuse their contexts, [`zstd::Encoder`].)

mod xz;
mod zstd;

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::str::FromStr;

use brotli_decompressor::Decompressor as BrotliDecoder;
use bzip2::bufread::MultiBzDecoder;
use flate2::bufread::MultiGzDecoder;
use liblzma::bufread::XzDecoder;
use liblzma::stream::{Check, MtStreamBuilder, Stream, CONCATENATED};
use liblzma::write::XzEncoder;
use thiserror::Error;

/// xz's own default block size for presets 6 to 9 (3 × the 8 MiB
/// dictionary), fixed so that it does not vary with the preset or threads.
const XZ_BLOCK_SIZE: u64 = 24 << 20;
/// zstd's default job size at level 3 (4 × its 2 MiB window), fixed.
const ZSTD_JOB_SIZE: u32 = 8 << 20;
/// The most memory a decompressor may take for the window (zstd) or
/// dictionary (xz) that a stream's header asks for; a stream asking more is
/// refused. 2^27 is zstd's own default bound; xz -9 needs 65 MiB.
pub const DECODER_MEMORY_LIMIT: u64 = 1 << ZSTD_WINDOW_LOG_MAX;
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
const DECODER_INPUT_BUFFER: usize = 128 * 1024;
/// brotli's decoder reads its input through a buffer of its own.
const BROTLI_INPUT_BUFFER: usize = 128 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CompressionError {
    #[error("unknown compression {0:?} (expected zstd, xz or none)")]
    Unknown(String),
    /// One that Nix knows but narcache does not write (or, for
    /// [`NarCompression`], read).
    #[error("unsupported compression {0:?} (narcache {1})")]
    Unsupported(String, &'static str),
    #[error("compression level {level} is out of range for {compression} ({min} to {max})")]
    LevelOutOfRange {
        compression: Compression,
        level: i32,
        min: i32,
        max: i32,
    },
    #[error("compression none takes no level")]
    LevelForNone,
}

impl Compression {
    /// The name used in narinfo `Compression:` lines and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// The file name extension of a NAR compressed this way, as Nix names it.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".nar",
            Compression::Xz => ".nar.xz",
            Compression::Zstd => ".nar.zst",
        }
    }

    /// The size of the pieces that the encoder's workers compress in
    /// parallel: a stream of `n` bytes keeps at most `n / chunk` workers
    /// busy. `None` for no compression, which has no workers.
    pub fn chunk_size(self) -> Option<u64> {
        match self {
            Compression::None => None,
            Compression::Xz => Some(XZ_BLOCK_SIZE),
            Compression::Zstd => Some(u64::from(ZSTD_JOB_SIZE)),
        }
    }

    /// The level used when none is given: xz's and zstd's own defaults
    /// (Nix's xz preset is 6 as well).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Xz => 6,
            Compression::Zstd => 3,
        }
    }

    /// Checks a level given by the user, or picks the default.
    pub fn level(self, level: Option<i32>) -> Result<i32, CompressionError> {
        let Some(level) = level else {
            return Ok(self.default_level());
        };
        let (min, max) = match self {
            Compression::None => return Err(CompressionError::LevelForNone),
            Compression::Xz => (0, 9),
            Compression::Zstd => (1, 22),
        };
        if (min..=max).contains(&level) {
            Ok(level)
        } else {
            Err(CompressionError::LevelOutOfRange {
                compression: self,
                level,
                min,
                max,
            })
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "xz" => Ok(Compression::Xz),
            "zstd" => Ok(Compression::Zstd),
            "bzip2" | "gzip" | "br" => Err(CompressionError::Unsupported(s.to_owned(), WRITES)),
            _ => Err(CompressionError::Unknown(s.to_owned())),
        }
    }
}

const WRITES: &str = "writes zstd, xz and none";
const READS: &str = "reads zstd, xz, bzip2, br, gzip and none";

/// How a NAR file of a cache is compressed, as its narinfo's `Compression:`
/// says: what narcache writes, and what else Nix writes that narcache reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NarCompression {
    Written(Compression),
    Bzip2,
    Brotli,
    Gzip,
}

impl NarCompression {
    pub fn name(self) -> &'static str {
        match self {
            NarCompression::Written(c) => c.name(),
            NarCompression::Bzip2 => "bzip2",
            NarCompression::Brotli => "br",
            NarCompression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for NarCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Compression> for NarCompression {
    fn from(c: Compression) -> Self {
        NarCompression::Written(c)
    }
}

impl FromStr for NarCompression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bzip2" => Ok(NarCompression::Bzip2),
            "br" => Ok(NarCompression::Brotli),
            "gzip" => Ok(NarCompression::Gzip),
            // The other filters of libarchive, through which Nix writes
            // any compression it has no code of its own for.
            "lz4" | "lzip" | "lzma" | "lzop" | "compress" | "grzip" | "lrzip" => {
                Err(CompressionError::Unsupported(s.to_owned(), READS))
            }
            _ => s.parse().map(NarCompression::Written),
        }
    }
}

/// A compressing writer; `finish` flushes the compressor's trailer and
/// gives back the inner writer.
pub enum Encoder<W: Write> {
    None(W),
    Xz(XzEncoder<W>),
    XzBlocks(xz::BlockEncoder<W>),
    Zstd(zstd::Encoder<W>),
}

impl<W: Write> Encoder<W> {
    /// `level` must come from [`Compression::level`]; `threads` is how many
    /// worker threads the compressor may use for this one stream.
    pub fn new(compression: Compression, level: i32, threads: u32, inner: W) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            Compression::Xz if threads == 1 => {
                Encoder::XzBlocks(xz::BlockEncoder::new(level as u32, XZ_BLOCK_SIZE, inner)?)
            }
            Compression::Xz => {
                let stream = MtStreamBuilder::new()
                    .preset(level as u32)
                    .threads(threads)
                    .block_size(XZ_BLOCK_SIZE)
                    .check(Check::Crc64)
                    .encoder()
                    .map_err(io::Error::other)?;
                Encoder::Xz(XzEncoder::new_stream(inner, stream))
            }
            Compression::Zstd => {
                Encoder::Zstd(zstd::Encoder::new(level, threads, ZSTD_JOB_SIZE, inner)?)
            }
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Xz(e) => e.finish(),
            Encoder::XzBlocks(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::XzBlocks(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::XzBlocks(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A decompressing reader. It is strict: input that is not of its format, is
/// corrupt (integrity checks included) or ends inside a stream makes
/// `read` fail; concatenated streams are read as one, as xz(1) and zstd(1)
/// read them. Memory stays within the input buffer, the output the caller
/// asks for and [`DECODER_MEMORY_LIMIT`], whatever the data expands to.
pub enum Decoder<R: Read> {
    Xz(XzDecoder<BufReader<R>>),
    Zstd(::zstd::stream::read::Decoder<'static, BufReader<R>>),
    Bzip2(MultiBzDecoder<BufReader<R>>),
    /// None once the stream has ended and nothing follows it.
    Brotli(Option<BrotliDecoder<R>>),
    Gzip(MultiGzDecoder<BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    /// The decoder of `compression`; an uncompressed file has none.
    pub fn new(compression: NarCompression, inner: R) -> io::Result<Self> {
        let buffered = |inner| BufReader::with_capacity(DECODER_INPUT_BUFFER, inner);
        Ok(match compression {
            NarCompression::Written(Compression::None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an uncompressed file has no decoder",
                ))
            }
            NarCompression::Written(Compression::Xz) => Self::xz(inner)?,
            NarCompression::Written(Compression::Zstd) => Self::zstd(inner)?,
            // bzip2's blocks take at most 900 kB (3.6 MB decoded); brotli's
            // window is at most 16 MiB (the large-window extension is off);
            // gzip's is 32 KiB: memory is bounded whatever the header says.
            NarCompression::Bzip2 => Decoder::Bzip2(MultiBzDecoder::new(buffered(inner))),
            NarCompression::Brotli => {
                Decoder::Brotli(Some(BrotliDecoder::new(inner, BROTLI_INPUT_BUFFER)))
            }
            NarCompression::Gzip => Decoder::Gzip(MultiGzDecoder::new(buffered(inner))),
        })
    }

    pub fn xz(inner: R) -> io::Result<Self> {
        let stream = Stream::new_stream_decoder(DECODER_MEMORY_LIMIT, CONCATENATED)?;
        let input = BufReader::with_capacity(DECODER_INPUT_BUFFER, inner);
        Ok(Decoder::Xz(XzDecoder::new_stream(input, stream)))
    }

    pub fn zstd(inner: R) -> io::Result<Self> {
        let input = BufReader::with_capacity(DECODER_INPUT_BUFFER, inner);
        let mut decoder = ::zstd::stream::read::Decoder::with_buffer(input)?;
        decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
        Ok(Decoder::Zstd(decoder))
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Xz(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Bzip2(d) => d.read(buf),
            Decoder::Brotli(d) => read_brotli(d, buf),
            Decoder::Gzip(d) => d.read(buf),
        }
    }
}

/// Compresses a small file whole (a narinfo or listing that a cache
/// stores compressed), at the default level, on the calling thread.
pub fn compress_bytes(compression: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = Encoder::new(compression, compression.default_level(), 1, Vec::new())?;
    encoder.write_all(data)?;
    encoder.finish()
}

/// Decompresses a small file whole, as strictly as [`Decoder`] reads; one
/// that would come to more than `max` bytes is refused.
pub fn decompress_bytes(compression: Compression, data: &[u8], max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match compression {
        Compression::None => out.extend_from_slice(&data[..data.len().min(max as usize + 1)]),
        Compression::Xz => {
            Decoder::xz(data)?.take(max + 1).read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            Decoder::zstd(data)?.take(max + 1).read_to_end(&mut out)?;
        }
    }
    if out.len() as u64 > max {
        return Err(io::Error::other(format!(
            "decompresses to more than {max} bytes"
        )));
    }
    Ok(out)
}

/// brotli's reader ends with its stream and ignores what follows; this one
/// refuses it, as xz's and zstd's readers do.
fn read_brotli<R: Read>(
    decoder: &mut Option<BrotliDecoder<R>>,
    buf: &mut [u8],
) -> io::Result<usize> {
    let Some(d) = decoder else {
        return Ok(0);
    };
    let n = d.read(buf)?;
    if n > 0 || buf.is_empty() {
        return Ok(n);
    }
    // Read again, it fails if input is left in its buffer; then the rest.
    let again = d.read(buf)?;
    if again > 0 {
        return Ok(again);
    }
    if let Some(d) = decoder.take() {
        if d.into_inner().read(&mut [0])? > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data after the end of the brotli stream",
            ));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        // Longer than one zstd job and one xz block, so that several workers
        // really take part; built from a few pseudo-random pages so that
        // it compresses quickly but not trivially.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let pages: Vec<Vec<u8>> = (0..16)
            .map(|_| {
                (0..4096)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect()
            })
            .collect();
        (0..(26usize << 20) / 4096)
            .flat_map(|i| pages[(i * 7 + i / 5) % 16].iter().copied())
            .collect()
    }

    #[test]
    fn small_files_round_trip_within_their_bound() {
        let text = b"StorePath: /nix/store/x\n".repeat(100);
        for c in [Compression::None, Compression::Xz, Compression::Zstd] {
            let packed = compress_bytes(c, &text).unwrap();
            let max = text.len() as u64;
            assert_eq!(decompress_bytes(c, &packed, max).unwrap(), text, "{c}");
            let err = decompress_bytes(c, &packed, max - 1).unwrap_err();
            assert!(err.to_string().contains("more than"), "{c}: {err}");
        }
        assert!(decompress_bytes(Compression::Xz, b"not xz", 100).is_err());
    }

    fn compress(c: Compression, threads: u32, data: &[u8]) -> Vec<u8> {
        let mut enc = Encoder::new(c, c.default_level(), threads, Vec::new()).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_independent_of_threads() {
        let data = sample();
        for c in [Compression::Xz, Compression::Zstd] {
            let one = compress(c, 1, &data);
            let two = compress(c, 2, &data);
            assert!(one == two, "{c}: output differs between 1 and 2 threads");
            assert!(one.len() < data.len() / 2, "{c}: did not compress");
            let mut back = Vec::new();
            match c {
                Compression::Xz => {
                    liblzma::read::XzDecoder::new_multi_decoder(&one[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                _ => {
                    ::zstd::stream::read::Decoder::new(&one[..])
                        .unwrap()
                        .read_to_end(&mut back)
                        .unwrap();
                }
            }
            assert!(back == data, "{c}: round trip changed the data");
        }
        assert_eq!(compress(Compression::None, 2, b"abc"), b"abc");
    }

    #[test]
    fn names_and_levels() {
        assert_eq!(
            "zstd".parse::<Compression>().unwrap().extension(),
            ".nar.zst"
        );
        assert_eq!("xz".parse::<Compression>().unwrap().extension(), ".nar.xz");
        assert_eq!("none".parse::<Compression>().unwrap().extension(), ".nar");
        assert_eq!(
            "bzip2".parse::<Compression>().unwrap_err().to_string(),
            "unsupported compression \"bzip2\" (narcache writes zstd, xz and none)"
        );
        for name in ["none", "xz", "zstd", "bzip2", "br", "gzip"] {
            assert_eq!(name.parse::<NarCompression>().unwrap().name(), name);
        }
        assert_eq!(
            "lz4".parse::<NarCompression>().unwrap_err().to_string(),
            "unsupported compression \"lz4\" (narcache reads zstd, xz, bzip2, br, gzip and none)"
        );
        assert_eq!(
            "lzmb".parse::<NarCompression>(),
            Err(CompressionError::Unknown("lzmb".into()))
        );
        assert_eq!(
            "lzma".parse::<Compression>(),
            Err(CompressionError::Unknown("lzma".into()))
        );
        assert_eq!(Compression::Xz.level(None), Ok(6));
        assert_eq!(Compression::Zstd.level(Some(19)), Ok(19));
        assert!(Compression::Xz.level(Some(10)).is_err());
        assert!(Compression::Zstd.level(Some(0)).is_err());
        assert_eq!(
            Compression::None.level(Some(1)),
            Err(CompressionError::LevelForNone)
        );
    }
}
