//! xz on one thread, block by block: the very bytes of liblzma's
//! multi-threaded encoder (fixed block size, sizes in every Block Header),
//! without its copy of each block's input.
//!
//! The multi-threaded encoder keeps a whole block of input per worker, so
//! that the next block can start on another core. A path packed on one
//! thread gains nothing from that buffer; here the input streams into the
//! LZMA2 encoder as it comes and only the compressed block is held, until
//! its size can go into its header. That is 24 MiB less per packing thread,
//! the difference between two xz paths at once fitting in 300 MiB or not.
//! Each block is encoded as `stream_encoder_mt.c` encodes it: header space
//! reserved for the largest sizes, filled in afterwards.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::ptr;

use liblzma_sys as lzma;

/// The largest a compressed block may grow: liblzma's bound for a block of
/// `block_size` bytes, which the multi-threaded encoder also reserves.
fn block_bound(block_size: u64) -> usize {
    // SAFETY: a pure function of its argument.
    unsafe { lzma::lzma_block_buffer_bound(block_size as usize) }
}

pub struct BlockEncoder<W: Write> {
    inner: Option<W>,
    block_size: u64,
    // liblzma keeps pointers to these between calls: each has a fixed
    // address on the heap for the encoder's lifetime.
    _options: Box<lzma::lzma_options_lzma>,
    filters: Box<[lzma::lzma_filter; 2]>,
    block: Box<lzma::lzma_block>,
    stream: Box<lzma::lzma_stream>,
    index: *mut lzma::lzma_index,
    /// Input bytes in the open block, if one is open.
    block_in: Option<u64>,
    /// The open block: its header's space, then what the encoder gave.
    out: Vec<u8>,
}

impl<W: Write> BlockEncoder<W> {
    pub fn new(preset: u32, block_size: u64, inner: W) -> io::Result<Self> {
        // SAFETY: liblzma's structures are plain C data for which all
        // zeroes is the documented initial state (LZMA_STREAM_INIT too).
        let mut options: Box<lzma::lzma_options_lzma> = Box::new(unsafe { zeroed() });
        if unsafe { lzma::lzma_lzma_preset(&mut *options, preset) } != 0 {
            return Err(io::Error::other(format!("xz: no preset {preset}")));
        }
        let mut filters: Box<[lzma::lzma_filter; 2]> = Box::new(unsafe { zeroed() });
        filters[0].id = lzma::LZMA_FILTER_LZMA2;
        filters[0].options = (&mut *options as *mut lzma::lzma_options_lzma).cast();
        filters[1].id = lzma::LZMA_VLI_UNKNOWN;
        let index = unsafe { lzma::lzma_index_init(ptr::null()) };
        if index.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut encoder = Self {
            inner: Some(inner),
            block_size,
            _options: options,
            filters,
            block: Box::new(unsafe { zeroed() }),
            stream: Box::new(unsafe { zeroed() }),
            index,
            block_in: None,
            out: Vec::new(),
        };
        let mut header = [0u8; lzma::LZMA_STREAM_HEADER_SIZE as usize];
        check(unsafe { lzma::lzma_stream_header_encode(&stream_flags(0), header.as_mut_ptr()) })?;
        encoder.inner_mut().write_all(&header)?;
        Ok(encoder)
    }

    fn start_block(&mut self) -> io::Result<()> {
        let bound = block_bound(self.block_size);
        let block = &mut *self.block;
        // SAFETY: as in `new`; then the fields the format needs.
        *block = unsafe { zeroed() };
        block.version = 0;
        block.check = lzma::LZMA_CHECK_CRC64;
        // The largest sizes, so that the header's space fits the real ones.
        block.compressed_size = bound as u64;
        block.uncompressed_size = self.block_size;
        block.filters = self.filters.as_mut_ptr();
        check(unsafe { lzma::lzma_block_header_size(block) })?;
        // Reusing the stream reuses the encoder's memory from block to block.
        check(unsafe { lzma::lzma_block_encoder(&mut *self.stream, block) })?;
        self.out.clear();
        self.out.reserve_exact(bound);
        self.out.resize(block.header_size as usize, 0);
        self.block_in = Some(0);
        Ok(())
    }

    /// Runs the block encoder on `input` (all of it), or to the block's end.
    fn code(&mut self, input: &[u8], action: lzma::lzma_action) -> io::Result<()> {
        let stream = &mut *self.stream;
        stream.next_in = input.as_ptr();
        stream.avail_in = input.len();
        loop {
            let spare = self.out.spare_capacity_mut();
            if spare.is_empty() {
                // The bound covers LZMA2's worst case; never reached.
                return Err(io::Error::other("xz: a block outgrew its bound"));
            }
            stream.next_out = spare.as_mut_ptr().cast();
            stream.avail_out = spare.len();
            let before = spare.len();
            let ret = unsafe { lzma::lzma_code(stream, action) };
            let produced = before - stream.avail_out;
            // SAFETY: liblzma initialised the `produced` bytes it wrote.
            unsafe { self.out.set_len(self.out.len() + produced) };
            match ret {
                lzma::LZMA_STREAM_END => return Ok(()),
                lzma::LZMA_OK if action == lzma::LZMA_RUN && stream.avail_in == 0 => return Ok(()),
                lzma::LZMA_OK => {}
                other => return check(other),
            }
        }
    }

    fn finish_block(&mut self) -> io::Result<()> {
        self.code(&[], lzma::LZMA_FINISH)?;
        let block = &*self.block;
        check(unsafe { lzma::lzma_block_header_encode(block, self.out.as_mut_ptr()) })?;
        let unpadded = unsafe { lzma::lzma_block_unpadded_size(block) };
        check(unsafe {
            lzma::lzma_index_append(self.index, ptr::null(), unpadded, block.uncompressed_size)
        })?;
        self.block_in = None;
        let inner = self.inner.as_mut().expect("used after finish");
        inner.write_all(&self.out)
    }

    fn inner_mut(&mut self) -> &mut W {
        self.inner.as_mut().expect("used after finish")
    }

    /// Closes the last block, writes the index and the stream footer and
    /// gives back the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.block_in.is_some() {
            self.finish_block()?;
        }
        let index_size = unsafe { lzma::lzma_index_size(self.index) };
        let mut tail = vec![0u8; index_size as usize + lzma::LZMA_STREAM_HEADER_SIZE as usize];
        let mut pos = 0;
        check(unsafe {
            lzma::lzma_index_buffer_encode(self.index, tail.as_mut_ptr(), &mut pos, tail.len())
        })?;
        check(unsafe {
            lzma::lzma_stream_footer_encode(&stream_flags(index_size), tail[pos..].as_mut_ptr())
        })?;
        let mut inner = self.inner.take().expect("finished once");
        inner.write_all(&tail)?;
        Ok(inner)
    }
}

impl<W: Write> Write for BlockEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let filled = match self.block_in {
            Some(filled) => filled,
            None => {
                self.start_block()?;
                0
            }
        };
        let take = (self.block_size - filled).min(buf.len() as u64) as usize;
        self.code(&buf[..take], lzma::LZMA_RUN)?;
        let filled = filled + take as u64;
        self.block_in = Some(filled);
        if filled == self.block_size {
            self.finish_block()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A block is written whole, when it is complete.
        self.inner_mut().flush()
    }
}

impl<W: Write> Drop for BlockEncoder<W> {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `new` and are released once.
        unsafe {
            lzma::lzma_end(&mut *self.stream);
            lzma::lzma_index_end(self.index, ptr::null());
        }
    }
}

fn stream_flags(backward_size: u64) -> lzma::lzma_stream_flags {
    // SAFETY: as in `new`.
    let mut flags: lzma::lzma_stream_flags = unsafe { zeroed() };
    flags.version = 0;
    flags.check = lzma::LZMA_CHECK_CRC64;
    flags.backward_size = backward_size;
    flags
}

/// All-zero C data (callers document why that is valid for the type).
unsafe fn zeroed<T>() -> T {
    MaybeUninit::zeroed().assume_init()
}

fn check(ret: lzma::lzma_ret) -> io::Result<()> {
    match ret {
        lzma::LZMA_OK | lzma::LZMA_STREAM_END => Ok(()),
        lzma::LZMA_MEM_ERROR => Err(io::Error::from(io::ErrorKind::OutOfMemory)),
        other => Err(io::Error::other(format!("xz: liblzma error {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liblzma::stream::{Check, MtStreamBuilder};
    use std::io::Read;

    const BLOCK: u64 = 1 << 20;

    /// What liblzma's multi-threaded encoder writes for `data`.
    fn reference(data: &[u8], threads: u32) -> Vec<u8> {
        let stream = MtStreamBuilder::new()
            .preset(6)
            .threads(threads)
            .block_size(BLOCK)
            .check(Check::Crc64)
            .encoder()
            .unwrap();
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn ours(data: &[u8], piece: usize) -> Vec<u8> {
        let mut enc = BlockEncoder::new(6, BLOCK, Vec::new()).unwrap();
        for chunk in data.chunks(piece) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    /// Text-like bytes that compress, then noise that does not (LZMA2's
    /// uncompressed chunks), so that both kinds of block are covered.
    fn data(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|i| {
                if i % (3 << 19) < (1 << 19) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                } else {
                    b"nix-archive-1 (type directory entry)"[i % 36]
                }
            })
            .collect()
    }

    #[test]
    fn writes_the_bytes_of_the_multi_threaded_encoder() {
        let block = BLOCK as usize;
        for len in [0, 1, 4096, block - 1, block, block + 1, 3 * block + 12345] {
            let input = data(len);
            let expected = reference(&input, 2);
            assert!(
                expected == reference(&input, 1),
                "{len}: liblzma depends on threads"
            );
            for piece in [1 << 18, 65_539, 7] {
                if piece == 7 && len > block + 1 {
                    continue; // slow, and nothing new
                }
                assert!(
                    ours(&input, piece) == expected,
                    "{len} bytes in pieces of {piece}: differs from liblzma"
                );
            }
            let mut back = Vec::new();
            liblzma::read::XzDecoder::new(&expected[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == input, "{len}: round trip");
        }
    }
}
