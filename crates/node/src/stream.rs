//! Packing and verifying whose bytes go to or come from JavaScript rather
//! than a file: a NAR file uploaded while it is produced, one checked while
//! it is downloaded.
//!
//! The bytes cross in large pieces, one call into JavaScript per piece, and
//! the Rust thread waits for the Promise that call returns: JavaScript sets
//! the pace, so memory stays bounded whatever the speeds on either side.

use std::future::Future;
use std::io::{self, Read, Write};
use std::mem;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::thread::{self, Thread};

use napi::bindgen_prelude::{Buffer, Object, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Result, Status};
use napi_derive::napi;
use narcache_core::NarCompression;

use crate::{
    core_options, nar_check, on_worker, pack_result, reason, size_limit, CancelToken, IndexOptions,
    PackOptions, PackResult, VERIFY_PROGRESS,
};

/// A JavaScript function of one Buffer, called without Node's error-first
/// convention, whose Promise settles when it is done with the piece.
type ChunkConsumer = ThreadsafeFunction<Buffer, Promise<()>, Buffer, Status, false>;
/// A JavaScript function that gives the next piece, or null at the end.
type ChunkProducer = ThreadsafeFunction<(), Promise<Option<Buffer>>, (), Status, false>;

#[napi(object)]
pub struct PackedStream {
    pub packed: PackResult,
    /// The file's last bytes, fewer than `chunkSize` (possibly none), which
    /// were not given to `onChunk`.
    pub tail: Buffer,
}

/// Like `pack`, but gives the compressed file to `onChunk` instead of
/// writing it: in order, in pieces of exactly `chunkSize` bytes, one at a
/// time, each once the Promise returned for the one before has resolved.
/// Resolves with the hashes and sizes, and the file's last bytes, which are
/// known only at the end. A rejection by `onChunk` stops packing and rejects
/// this Promise with its message; so does `cancel.cancel()`, as for `pack`.
#[napi(ts_return_type = "Promise<PackedStream>")]
pub fn pack_stream<'env>(
    env: &'env Env,
    source: String,
    chunk_size: u32,
    #[napi(ts_arg_type = "(chunk: Buffer) => Promise<void>")] on_chunk: ChunkConsumer,
    options: Option<PackOptions>,
    cancel: Option<&CancelToken>,
) -> Result<Object<'env>> {
    let cancel = cancel.map(|c| c.flag.clone());
    on_worker(env, "pack", move || {
        let options = core_options(options, cancel)?;
        let sink = ChunkSink {
            chunk_size: chunk_size.max(1) as usize,
            buffer: Vec::new(),
            on_chunk,
        };
        let (sink, packed) =
            narcache_core::pack_into(&PathBuf::from(source), sink, &options).map_err(reason)?;
        Ok(PackedStream {
            packed: pack_result(packed, options.compression),
            tail: sink.buffer.into(),
        })
    })
}

/// Like `verifyNar`, but reads the NAR file from `read`, which resolves to
/// its next bytes, or to null at its end; a rejection by `read` rejects
/// this Promise with `cannot read the file: <its message>`. `index` as for
/// `verifyNar`.
#[napi(ts_return_type = "Promise<NarCheck>")]
pub fn verify_nar_stream<'env>(
    env: &'env Env,
    compression: String,
    #[napi(ts_arg_type = "() => Promise<Buffer | null>")] read: ChunkProducer,
    nar_size: Option<i64>,
    index: Option<IndexOptions>,
) -> Result<Object<'env>> {
    on_worker(env, "verify", move || {
        let compression: NarCompression = compression.parse().map_err(reason)?;
        let nar_size = size_limit(nar_size)?;
        let reader = ChunkReader {
            read,
            chunk: Buffer::from(Vec::new()),
            at: 0,
            ended: false,
        };
        let mut index = index.unwrap_or_default().index();
        let check = narcache_core::verify_reader(
            reader,
            compression,
            nar_size,
            Some(&VERIFY_PROGRESS),
            &mut index,
        )
        .map_err(reason)?;
        Ok(nar_check(&check, index))
    })
}

struct ChunkSink {
    chunk_size: usize,
    buffer: Vec<u8>,
    on_chunk: ChunkConsumer,
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk_size - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == self.chunk_size {
            // Once one piece is full, more are likely: take the whole size at once.
            let chunk = mem::replace(&mut self.buffer, Vec::with_capacity(self.chunk_size));
            let taken = block_on(self.on_chunk.call_async_catch(chunk.into())).and_then(block_on);
            taken.map_err(|e| io::Error::other(e.reason))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChunkReader {
    read: ChunkProducer,
    chunk: Buffer,
    at: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An empty piece is not the end: only null is.
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            let next = block_on(self.read.call_async_catch(())).and_then(block_on);
            match next.map_err(|e| io::Error::other(e.reason))? {
                Some(chunk) => (self.chunk, self.at) = (chunk, 0),
                None => self.ended = true,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Runs `future` to completion on this thread, which sleeps until the
/// JavaScript side wakes it: the packing and verifying threads are plain
/// threads, with no async runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
