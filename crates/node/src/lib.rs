//! The N-API binding of narcache-core: the only code that touches Node.
//!
//! Packing runs on a thread of its own per call, never on the JS thread nor
//! on libuv's small shared pool, and settles a Promise when done.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::thread;

use napi::bindgen_prelude::{Buffer, Object};
use napi::{Env, Error, Result};
use napi_derive::napi;
use narcache_core::{nix32, Compression, NarIdentity, PackOptions as CoreOptions, Progress};

/// Bytes read and written by every pack call of this process, for progress
/// display: one atomic add per buffer, no call into JavaScript per file.
static PROGRESS: LazyLock<Progress> = LazyLock::new(Progress::default);

#[napi(object)]
#[derive(Default)]
pub struct PackOptions {
    /// `zstd` (default), `xz` or `none`.
    pub compression: Option<String>,
    /// xz 0–9 (default 6), zstd 1–22 (default 3); none takes no level.
    pub level: Option<i32>,
    /// Compressor worker threads for this path (default 1).
    pub threads: Option<u32>,
    /// The NarHash the store records for this path (`sha256:<nix32>`); with
    /// `expectedNarSize`, a NAR that differs is refused and not kept.
    pub expected_nar_hash: Option<String>,
    pub expected_nar_size: Option<i64>,
}

#[napi(object)]
pub struct PackResult {
    /// `sha256:<nix32>` of the NAR.
    pub nar_hash: String,
    pub nar_size: i64,
    /// `sha256:<nix32>` of the compressed file.
    pub file_hash: String,
    pub file_size: i64,
    /// Where the file lies, relative to the cache: `nar/<filehash>.nar.<ext>`.
    pub url: String,
    pub compression: String,
}

#[napi(object)]
pub struct PackProgress {
    /// NAR bytes serialised so far by this process.
    pub nar_bytes: i64,
    /// Compressed bytes written so far by this process.
    pub file_bytes: i64,
}

/// Serialises the store path at `source` as a NAR, compresses it and writes
/// it to `<dest>/nar/<filehash>.nar.<ext>` (under a temporary name until it
/// is complete). Resolves to the hashes and sizes a narinfo needs.
#[napi(ts_return_type = "Promise<PackResult>")]
pub fn pack<'env>(
    env: &'env Env,
    source: String,
    dest: String,
    options: Option<PackOptions>,
) -> Result<Object<'env>> {
    let (deferred, promise) = env.create_deferred()?;
    let settle = move || -> Result<PackResult> {
        let options = core_options(options.unwrap_or_default())?;
        let nar_dir = PathBuf::from(dest).join("nar");
        let packed =
            narcache_core::pack(&PathBuf::from(source), &nar_dir, &options).map_err(reason)?;
        Ok(PackResult {
            nar_hash: sha256(&packed.nar.hash),
            nar_size: packed.nar.size as i64,
            file_hash: sha256(&packed.file_hash),
            file_size: packed.file_size as i64,
            url: format!("nar/{}", packed.file_name),
            compression: options.compression.name().to_owned(),
        })
    };
    thread::Builder::new()
        .name("narcache-pack".into())
        .spawn(move || match catch_unwind(AssertUnwindSafe(settle)) {
            Ok(Ok(result)) => deferred.resolve(move |_| Ok(result)),
            Ok(Err(error)) => deferred.reject(error),
            Err(_) => deferred.reject(Error::from_reason("internal error: the packer panicked")),
        })
        .map_err(|e| Error::from_reason(format!("cannot start a packing thread: {e}")))?;
    Ok(promise)
}

/// The size of the pieces the compressor's workers take in parallel (xz
/// block, zstd job), or 0 for `none`: a path of `n` NAR bytes can use at
/// most `ceil(n / chunkSize)` threads.
#[napi]
pub fn compression_chunk_size(compression: String) -> Result<i64> {
    let compression: Compression = compression.parse().map_err(reason)?;
    Ok(compression.chunk_size().unwrap_or(0) as i64)
}

/// Totals of [`PackProgress`] since the process started.
#[napi]
pub fn pack_progress() -> PackProgress {
    PackProgress {
        nar_bytes: PROGRESS.nar_bytes.load(Ordering::Relaxed) as i64,
        file_bytes: PROGRESS.file_bytes.load(Ordering::Relaxed) as i64,
    }
}

/// Nix's base-32 encoding of `bytes`.
#[napi]
pub fn nix32_encode(bytes: Buffer) -> String {
    nix32::encode(&bytes)
}

/// The bytes of a nix32 string; throws on a character outside Nix's
/// alphabet or a length no byte string encodes to.
#[napi]
pub fn nix32_decode(text: String) -> Result<Buffer> {
    nix32::decode(&text).map(Buffer::from).map_err(reason)
}

fn core_options(options: PackOptions) -> Result<CoreOptions> {
    let compression: Compression = options
        .compression
        .as_deref()
        .unwrap_or("zstd")
        .parse()
        .map_err(reason)?;
    let level = compression.level(options.level).map_err(reason)?;
    let expected = match (options.expected_nar_hash, options.expected_nar_size) {
        (Some(hash), Some(size)) => Some(NarIdentity {
            hash: parse_sha256(&hash)?,
            size: u64::try_from(size)
                .map_err(|_| Error::from_reason(format!("invalid NAR size {size}")))?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::from_reason(
                "expectedNarHash and expectedNarSize go together",
            ))
        }
    };
    Ok(CoreOptions {
        compression,
        level,
        threads: options.threads.unwrap_or(1),
        expected,
        progress: Some(PROGRESS.clone()),
    })
}

fn sha256(hash: &[u8; 32]) -> String {
    format!("sha256:{}", nix32::encode(hash))
}

fn parse_sha256(text: &str) -> Result<[u8; 32]> {
    text.strip_prefix("sha256:")
        .and_then(|h| nix32::decode(h).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            Error::from_reason(format!("invalid hash {text:?} (expected sha256:<nix32>)"))
        })
}

fn reason(error: impl std::fmt::Display) -> Error {
    Error::from_reason(error.to_string())
}
