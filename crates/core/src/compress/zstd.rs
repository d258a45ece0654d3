//! zstd's encoder on contexts that outlive their stream.
//!
//! A NAR that fits in one job of the multi-threaded encoder gains nothing
//! from its worker: handing the job over and waiting for it only adds a
//! sleep and a wake-up per path, which for a closure of thousands of small
//! paths leaves cores idle. Such a NAR is held until it ends and is then
//! compressed in one call on the calling thread, as one frame that also
//! records its size, with tables sized to it; a larger one goes through the
//! multi-threaded stream in jobs of a fixed size. Which of the two a NAR
//! takes depends only on its length, so the bytes stay a function of the
//! input and the level alone.
//!
//! A context owns a pool of workers, job buffers and match tables. Made
//! afresh for every store path, they cost a thread start and megabytes of
//! freshly faulted-in memory per path. Here a finished stream hands its
//! context (and its buffers) back to a process-wide pool and the next
//! stream takes it: the parameters are set anew, so the bytes are those of
//! a new context (see the tests).

use std::io::{self, Write};
use std::sync::{Mutex, OnceLock, PoisonError};

use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

/// Contexts of finished streams, with their buffers. At most one per core
/// is kept: more never run at once in narcache, and a library caller's
/// burst of streams should not pin their memory for good.
static IDLE: Mutex<Vec<Parts>> = Mutex::new(Vec::new());

struct Parts {
    /// Compresses whole inputs on the calling thread. It is never given
    /// workers: once a multi-threaded frame ran on a context, zstd (up to
    /// 1.5.7) keeps that context's own stage and workspace apart from its
    /// parameters (see zstd-safe's notes on `NbWorkers`), so each kind of
    /// frame keeps to a context of its own.
    single: CCtx<'static>,
    /// The multi-threaded stream, made when first needed.
    multi: Option<CCtx<'static>>,
    /// The input while it fits one job.
    held: Vec<u8>,
    /// Compressed bytes on their way to the inner writer.
    out: Vec<u8>,
}

/// The CPU count, asked once: on Linux each asking reads cgroup files,
/// which per store path showed in profiles.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

pub struct Encoder<W: Write> {
    parts: Parts,
    inner: W,
    level: i32,
    workers: u32,
    job_size: u32,
    /// Whether the input outgrew one job and streams through the workers.
    streaming: bool,
}

impl<W: Write> Encoder<W> {
    /// zstd at `level`, with a content checksum. An input longer than
    /// `job_size` is cut into jobs of that size for `workers` threads of
    /// zstd's own (at least one, so that the cut is the same whatever the
    /// number); a shorter one is compressed on the calling thread.
    pub fn new(level: i32, workers: u32, job_size: u32, inner: W) -> io::Result<Self> {
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut parts = match idle {
            Some(parts) => parts,
            None => Parts {
                single: new_context()?,
                multi: None,
                held: Vec::new(),
                out: Vec::new(),
            },
        };
        parts.held.clear();
        configure(
            &mut parts.single,
            &[
                CParameter::CompressionLevel(level),
                CParameter::ChecksumFlag(true),
            ],
        )?;
        Ok(Self {
            parts,
            inner,
            level,
            workers: workers.max(1),
            job_size,
            streaming: false,
        })
    }

    /// Ends the frame and gives back the inner writer. A stream dropped
    /// without `finish` (an error, a cancellation) frees its context.
    pub fn finish(mut self) -> io::Result<W> {
        if self.streaming {
            self.run(&[], ZSTD_EndDirective::ZSTD_e_end)?;
        } else {
            self.compress_held()?;
        }
        let Self { parts, inner, .. } = self;
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < cores() {
            idle.push(parts);
        }
        Ok(inner)
    }

    /// The whole input in one frame, on this thread.
    fn compress_held(&mut self) -> io::Result<()> {
        let Parts {
            single, held, out, ..
        } = &mut self.parts;
        out.clear();
        out.reserve(zstd_safe::compress_bound(held.len()));
        single.compress2(out, held).map_err(error)?;
        self.inner.write_all(out)
    }

    /// Turns to the multi-threaded stream, beginning with what was held.
    fn start_streaming(&mut self) -> io::Result<()> {
        let context = match &mut self.parts.multi {
            Some(context) => context,
            none => none.insert(new_context()?),
        };
        configure(
            context,
            &[
                CParameter::CompressionLevel(self.level),
                CParameter::ChecksumFlag(true),
                CParameter::NbWorkers(self.workers),
                CParameter::JobSize(self.job_size),
            ],
        )?;
        self.streaming = true;
        self.parts.out.resize(CCtx::out_size(), 0);
        let held = std::mem::take(&mut self.parts.held);
        let result = self.run(&held, ZSTD_EndDirective::ZSTD_e_continue);
        self.parts.held = held;
        result.map(drop)
    }

    fn run(&mut self, input: &[u8], directive: ZSTD_EndDirective) -> io::Result<usize> {
        let Parts { multi, out, .. } = &mut self.parts;
        let context = multi.as_mut().expect("a stream has its context");
        let mut input = InBuffer::around(input);
        loop {
            let mut buffer = OutBuffer::around(&mut out[..]);
            let left = context
                .compress_stream2(&mut buffer, &mut input, directive)
                .map_err(error)?;
            let n = buffer.pos();
            self.inner.write_all(&out[..n])?;
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
        if !self.streaming {
            if self.parts.held.len() + buf.len() <= self.job_size as usize {
                self.parts.held.extend_from_slice(buf);
                return Ok(buf.len());
            }
            self.start_streaming()?;
        }
        self.run(buf, ZSTD_EndDirective::ZSTD_e_continue)
    }

    /// Held input can only be flushed by streaming it.
    fn flush(&mut self) -> io::Result<()> {
        if !self.streaming {
            self.start_streaming()?;
        }
        self.run(&[], ZSTD_EndDirective::ZSTD_e_flush)?;
        self.inner.flush()
    }
}

fn new_context() -> io::Result<CCtx<'static>> {
    CCtx::try_create().ok_or_else(|| io::ErrorKind::OutOfMemory.into())
}

/// `parameters` on a context reset to a new one's defaults.
fn configure(context: &mut CCtx<'static>, parameters: &[CParameter]) -> io::Result<()> {
    context
        .reset(ResetDirective::SessionAndParameters)
        .map_err(error)?;
    for &parameter in parameters {
        context.set_parameter(parameter).map_err(error)?;
    }
    Ok(())
}

fn error(code: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: u32 = 1 << 20;

    fn compress(data: &[u8], workers: u32) -> Vec<u8> {
        let mut encoder = Encoder::new(3, workers, JOB, Vec::new()).unwrap();
        for piece in data.chunks(100_000) {
            encoder.write_all(piece).unwrap();
        }
        encoder.finish().unwrap()
    }

    fn text(len: usize) -> Vec<u8> {
        (0u32..)
            .flat_map(|i| format!("{} ", i % 7919 * (i / 5000)).into_bytes())
            .take(len)
            .collect()
    }

    /// What a new context writes for `data` as one multi-threaded stream.
    fn streamed(data: &[u8]) -> Vec<u8> {
        let mut fresh = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        fresh.multithread(1).unwrap();
        fresh.set_parameter(CParameter::JobSize(JOB)).unwrap();
        fresh.include_checksum(true).unwrap();
        fresh.write_all(data).unwrap();
        fresh.finish().unwrap()
    }

    /// What a new context writes for `data` in one call.
    fn in_one_call(data: &[u8]) -> Vec<u8> {
        let mut fresh = zstd::bulk::Compressor::new(3).unwrap();
        fresh.include_checksum(true).unwrap();
        fresh.compress(data).unwrap()
    }

    #[test]
    fn a_reused_context_writes_what_a_new_one_writes() {
        let text = text(3_000_000);
        let fresh = streamed(&text);

        // Contexts left by a stream with more workers, by a finished other
        // stream, by a short input and by an abandoned stream (which frees
        // its context) all give the same bytes as a context made for this
        // stream alone.
        assert_eq!(compress(&text, 2), fresh, "2 workers");
        for _ in 0..cores() + 1 {
            assert_eq!(compress(&text, 1), fresh, "reused context");
            for len in [168, 5000] {
                assert_eq!(
                    compress(&text[..len], 1),
                    in_one_call(&text[..len]),
                    "{len} bytes"
                );
            }
            let mut abandoned = Encoder::new(3, 2, JOB, Vec::new()).unwrap();
            abandoned.write_all(&text[..1_500_000]).unwrap();
        }
        assert!(IDLE.lock().unwrap().len() <= cores());
        assert_eq!(zstd::decode_all(&fresh[..]).unwrap(), text);
    }

    #[test]
    fn an_input_of_one_job_is_one_call_and_a_longer_one_a_stream() {
        let text = text(JOB as usize + 1);
        for len in [0, 1, 100_000, JOB as usize] {
            let one_call = in_one_call(&text[..len]);
            for workers in [1, 2] {
                assert_eq!(compress(&text[..len], workers), one_call, "{len} bytes");
            }
            assert_eq!(zstd::decode_all(&one_call[..]).unwrap(), &text[..len]);
        }
        for workers in [1, 2] {
            assert_eq!(
                compress(&text, workers),
                streamed(&text),
                "one job and a byte"
            );
        }
    }

    #[test]
    fn a_flush_streams_what_was_held() {
        let text = text(10_000);
        let mut encoder = Encoder::new(3, 1, JOB, Vec::new()).unwrap();
        encoder.write_all(&text[..4000]).unwrap();
        encoder.flush().unwrap();
        encoder.write_all(&text[4000..]).unwrap();
        let bytes = encoder.finish().unwrap();
        assert_eq!(zstd::decode_all(&bytes[..]).unwrap(), text);
    }
}
