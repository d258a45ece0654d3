//! zstd's streaming encoder on contexts that outlive their stream.
//!
//! A multi-threaded zstd context owns a pool of workers, job buffers and
//! match tables. Made afresh for every store path, they cost a thread start
//! and megabytes of freshly faulted-in memory per path, which for a closure
//! of thousands of small paths is a few per cent of all the compressing.
//! Here a finished stream hands its context back to a process-wide pool and
//! the next stream takes it: the parameters are set anew, so the bytes are
//! those of a new context (see the tests).

use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

/// Contexts of finished streams. At most one per core is kept: more never
/// run at once in narcache, and a library caller's burst of streams should
/// not pin their memory for good.
static IDLE: Mutex<Vec<CCtx<'static>>> = Mutex::new(Vec::new());

pub struct Encoder<W: Write> {
    context: CCtx<'static>,
    inner: W,
    out: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    /// zstd at `level` with `workers` threads of its own (never 0: every
    /// stream, small or large, is cut into jobs of `job_size` the same way,
    /// whatever the number of workers), with a content checksum.
    pub fn new(level: i32, workers: u32, job_size: u32, inner: W) -> io::Result<Self> {
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut context = match idle {
            Some(context) => context,
            None => CCtx::try_create().ok_or(io::ErrorKind::OutOfMemory)?,
        };
        context
            .reset(ResetDirective::SessionAndParameters)
            .map_err(error)?;
        for parameter in [
            CParameter::CompressionLevel(level),
            CParameter::NbWorkers(workers.max(1)),
            CParameter::JobSize(job_size),
            CParameter::ChecksumFlag(true),
        ] {
            context.set_parameter(parameter).map_err(error)?;
        }
        Ok(Self {
            context,
            inner,
            out: vec![0; CCtx::out_size()],
        })
    }

    /// Ends the frame and gives back the inner writer. A stream dropped
    /// without `finish` (an error, a cancellation) frees its context.
    pub fn finish(mut self) -> io::Result<W> {
        self.run(&[], ZSTD_EndDirective::ZSTD_e_end)?;
        let Self { context, inner, .. } = self;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < cores {
            idle.push(context);
        }
        Ok(inner)
    }

    fn run(&mut self, input: &[u8], directive: ZSTD_EndDirective) -> io::Result<usize> {
        let mut input = InBuffer::around(input);
        loop {
            let mut out = OutBuffer::around(&mut self.out[..]);
            let left = self
                .context
                .compress_stream2(&mut out, &mut input, directive)
                .map_err(error)?;
            let n = out.pos();
            self.inner.write_all(&self.out[..n])?;
            let done = match directive {
                ZSTD_EndDirective::ZSTD_e_continue => input.pos == input.src.len(),
                _ => left == 0,
            };
            if done {
                return Ok(input.pos);
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.run(buf, ZSTD_EndDirective::ZSTD_e_continue)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.run(&[], ZSTD_EndDirective::ZSTD_e_flush)?;
        self.inner.flush()
    }
}

fn error(code: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], workers: u32) -> Vec<u8> {
        let mut encoder = Encoder::new(3, workers, 1 << 20, Vec::new()).unwrap();
        for piece in data.chunks(100_000) {
            encoder.write_all(piece).unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn a_reused_context_writes_what_a_new_one_writes() {
        let text: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| format!("{} ", i % 7919 * (i / 5000)).into_bytes())
            .collect();
        let mut fresh = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        fresh.multithread(1).unwrap();
        fresh.set_parameter(CParameter::JobSize(1 << 20)).unwrap();
        fresh.include_checksum(true).unwrap();
        fresh.write_all(&text).unwrap();
        let fresh = fresh.finish().unwrap();

        // Contexts left by a stream with more workers, by a finished other
        // stream and by an abandoned one (which frees its context) all give
        // the same bytes as a context made for this stream alone.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(compress(&text, 2), fresh, "2 workers");
        for _ in 0..cores + 1 {
            assert_eq!(compress(&text, 1), fresh, "reused context");
            let mut abandoned = Encoder::new(3, 2, 1 << 20, Vec::new()).unwrap();
            abandoned.write_all(&text[..1_500_000]).unwrap();
        }
        assert!(IDLE.lock().unwrap().len() <= cores);
        assert_eq!(zstd::decode_all(&fresh[..]).unwrap(), text);
    }
}
