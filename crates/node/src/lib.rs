//! The N-API binding of narcache-core: the only code that touches Node.
//!
//! Packing and verifying run on a thread of their own per call (kept for
//! later calls, see [`workers`]), never on the JS thread nor on libuv's small
//! shared pool, and settle a Promise when done.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use napi::bindgen_prelude::{Buffer, Object, ToNapiValue};
use napi::{Env, Error, Result};
use napi_derive::napi;
use narcache_core::files::SmallFile;
use narcache_core::nar::NarIndex;
use narcache_core::{
    nix32, Compression, CompressionError, NarCompression, NarIdentity, PackOptions as CoreOptions,
    Packed, Progress,
};

pub mod stream;
mod workers;

/// Bytes read and written by every pack and packStream call of this process,
/// for progress display: one atomic add per buffer, no call into JavaScript
/// per file.
static PROGRESS: LazyLock<Progress> = LazyLock::new(Progress::default);
/// The same for verifyNar and verifyNarStream calls, kept apart so that a
/// process that packs and verifies can show both.
static VERIFY_PROGRESS: LazyLock<Progress> = LazyLock::new(Progress::default);

/// glibc raises its mmap threshold to the largest block freed (up to 32
/// MiB); after that, the compressors' tables and buffers (16 to 24 MiB each,
/// made per path on a thread per path) come from the heaps of per-thread
/// arenas, which keep them after they are freed: tens of MiB of RSS that no
/// path uses (xz of the bench closure peaked at 302 MiB). A fixed threshold
/// keeps every block of 4 MiB or more in a mapping of its own, returned to
/// the system when freed; smaller blocks are unaffected.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[napi_derive::module_init]
fn return_large_blocks_to_the_system() {
    // SAFETY: mallopt only sets a tunable of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

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
    /// Also give the NAR's listing (`listing` of the result), from the same pass.
    pub listing: Option<bool>,
    /// Also give its debug-info files (`debugInfo` of the result).
    pub debug_info: Option<bool>,
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
    /// The NAR's listing as Nix writes it (`<hash>.ls`), if asked for.
    pub listing: Option<Buffer>,
    /// The paths in the NAR of its debug-info files
    /// (`lib/debug/.build-id/<2 hex>/<38 hex>.debug`), if asked for.
    pub debug_info: Option<Vec<String>>,
}

#[napi(object)]
pub struct PackProgress {
    /// NAR bytes serialised so far by this process.
    pub nar_bytes: i64,
    /// Compressed bytes written so far by this process.
    pub file_bytes: i64,
}

#[napi(object)]
pub struct PackSource {
    /// The store path's files.
    pub path: String,
    pub options: Option<PackOptions>,
}

/// Serialises the store path of each source as a NAR, compresses it and
/// writes it to `<dest>/nar/<filehash>.nar.<ext>` (under a temporary name
/// until it is complete; durable only after `syncFiles`), one after another
/// on one thread. Resolves to the hashes and sizes their narinfos need, or
/// rejects at the first that fails (those before it stay written). Small
/// paths go many to a call: a call and its result cost more than packing one.
/// With `cancel`, a later `cancel.cancel()` abandons the work: the Promise
/// rejects and no file of the path being packed is left behind.
#[napi(ts_return_type = "Promise<PackResult[]>")]
pub fn pack<'env>(
    env: &'env Env,
    sources: Vec<PackSource>,
    dest: String,
    cancel: Option<&CancelToken>,
) -> Result<Object<'env>> {
    let cancel = cancel.map(|c| c.flag.clone());
    on_worker(env, "pack", move || {
        let nar_dir = PathBuf::from(dest).join("nar");
        sources
            .into_iter()
            .map(|source| {
                let options = core_options(source.options, cancel.clone())?;
                let packed = narcache_core::pack(&PathBuf::from(source.path), &nar_dir, &options)
                    .map_err(reason)?;
                Ok(pack_result(packed, options.compression))
            })
            .collect::<Result<Vec<_>>>()
    })
}

/// Makes the contents of the files at `paths` and their names durable, as
/// one batch: far cheaper than syncing each file as it is written.
#[napi(ts_return_type = "Promise<void>")]
pub fn sync_files(env: &Env, paths: Vec<String>) -> Result<Object<'_>> {
    on_worker(env, "sync", move || {
        narcache_core::sync_files(&paths).map_err(reason)
    })
}

#[napi(object)]
pub struct SmallFileRead {
    /// The file's text (invalid UTF-8 replaced, as Node's decoder does), if it was read.
    pub text: Option<String>,
    /// Its size, if it was larger than `maxBytes` and left unread.
    pub too_large: Option<i64>,
    pub missing: bool,
    /// Why it could not be read: not a regular file, or a failure.
    pub error: Option<String>,
}

/// Reads each regular file at `paths` of at most `maxBytes`, in one call
/// (a cache's narinfos, tens of thousands on a re-run).
#[napi(ts_return_type = "Promise<SmallFileRead[]>")]
pub fn read_small_files(env: &Env, paths: Vec<String>, max_bytes: i64) -> Result<Object<'_>> {
    let max_bytes = size_limit(Some(max_bytes))?;
    on_worker(env, "read", move || {
        let read = narcache_core::files::read_small_files(&paths, max_bytes);
        Ok(read
            .into_iter()
            .map(|file| {
                let mut out = SmallFileRead {
                    text: None,
                    too_large: None,
                    missing: false,
                    error: None,
                };
                match file {
                    SmallFile::Read(bytes) => {
                        out.text = Some(String::from_utf8_lossy(&bytes).into_owned())
                    }
                    SmallFile::TooLarge(size) => out.too_large = Some(size as i64),
                    SmallFile::Missing => out.missing = true,
                    SmallFile::Unreadable(e) => out.error = Some(e.to_string()),
                }
                out
            })
            .collect::<Vec<_>>())
    })
}

/// The size of each regular file at `paths`, a symbolic link not followed;
/// null for anything else, or what cannot be looked at.
#[napi(ts_return_type = "Promise<Array<number | null>>")]
pub fn regular_file_sizes(env: &Env, paths: Vec<String>) -> Result<Object<'_>> {
    on_worker(env, "stat", move || {
        Ok(narcache_core::files::regular_file_sizes(&paths)
            .into_iter()
            .map(|size| size.map(|s| s as i64))
            .collect::<Vec<_>>())
    })
}

/// The inode number of each path, a symbolic link not followed; null for
/// what cannot be looked at. As a double: only their order matters, which
/// it keeps.
#[napi(ts_return_type = "Promise<Array<number | null>>")]
pub fn inode_numbers(env: &Env, paths: Vec<String>) -> Result<Object<'_>> {
    on_worker(env, "stat", move || {
        Ok(narcache_core::files::inode_numbers(&paths)
            .into_iter()
            .map(|ino| ino.map(|i| i as f64))
            .collect::<Vec<_>>())
    })
}

/// Directory locks held by this process, by the id `lockDirectory` gave.
static LOCKS: LazyLock<Mutex<HashMap<u32, File>>> = LazyLock::new(Default::default);
static NEXT_LOCK: AtomicU32 = AtomicU32::new(1);

/// Takes an advisory lock (flock) on the directory `dir`: shared, which
/// any number of processes hold at once, or exclusive. With `wait`, waits
/// until it is granted; without, resolves to null if another process holds
/// a lock that conflicts. Resolves to an id for `unlockDirectory`; the
/// system also releases the lock when this process ends, however it ends.
#[napi(ts_return_type = "Promise<number | null>")]
pub fn lock_directory(env: &Env, dir: String, exclusive: bool, wait: bool) -> Result<Object<'_>> {
    on_worker(env, "lock", move || {
        let file =
            File::open(&dir).map_err(|e| Error::from_reason(format!("{dir}: cannot lock: {e}")))?;
        let kind = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        let flags = if wait { kind } else { kind | libc::LOCK_NB };
        let taken = loop {
            // SAFETY: flock on a descriptor this function owns; it changes no memory.
            if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
                break true;
            }
            match std::io::Error::last_os_error() {
                e if e.kind() == std::io::ErrorKind::Interrupted => continue,
                e if e.kind() == std::io::ErrorKind::WouldBlock && !wait => break false,
                e => return Err(Error::from_reason(format!("{dir}: cannot lock: {e}"))),
            }
        };
        if !taken {
            return Ok(None);
        }
        let id = NEXT_LOCK.fetch_add(1, Ordering::Relaxed);
        LOCKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, file);
        Ok(Some(id))
    })
}

/// Releases a lock `lockDirectory` took; an id already released is ignored.
#[napi]
pub fn unlock_directory(id: u32) {
    LOCKS.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

#[napi(object)]
pub struct NewFile {
    pub target: String,
    pub contents: Buffer,
    /// Leave a file already under the name as it is.
    pub keep_existing: Option<bool>,
}

/// Writes each file under a temporary name beside its target (`mode`
/// exactly, or 0644 less the umask), makes them and the files at
/// `alsoSync` durable as one batch, lets the files at `alsoSync` leave the
/// page cache, then names them in order: renamed over what is there, or
/// with `overwrite` false (or `keepExisting`) linked, failing if the name
/// is taken (leaving it, for `keepExisting`). One file is open at a time.
#[napi(ts_return_type = "Promise<void>")]
pub fn publish_files(
    env: &Env,
    files: Vec<NewFile>,
    also_sync: Vec<String>,
    mode: Option<u32>,
    overwrite: bool,
) -> Result<Object<'_>> {
    // Copied here, on the JS thread: the buffers belong to JavaScript.
    let files: Vec<(PathBuf, Vec<u8>, bool)> = files
        .into_iter()
        .map(|f| {
            (
                PathBuf::from(f.target),
                f.contents.to_vec(),
                f.keep_existing.unwrap_or(false),
            )
        })
        .collect();
    on_worker(env, "publish", move || {
        let files: Vec<narcache_core::NewFile> = files
            .iter()
            .map(|(target, contents, keep_existing)| narcache_core::NewFile {
                target,
                contents,
                keep_existing: *keep_existing,
            })
            .collect();
        let also_sync: Vec<PathBuf> = also_sync.into_iter().map(PathBuf::from).collect();
        narcache_core::publish_files(&files, &also_sync, mode, overwrite).map_err(reason)
    })
}

/// Abandons the pack calls it was given to; one token may serve many.
#[napi]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops every pack using this token at its next write.
    #[napi]
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

fn pack_result(packed: Packed, compression: Compression) -> PackResult {
    PackResult {
        nar_hash: sha256(&packed.nar.hash),
        nar_size: packed.nar.size as i64,
        file_hash: sha256(&packed.file_hash),
        file_size: packed.file_size as i64,
        url: format!("nar/{}", packed.file_name),
        compression: compression.name().to_owned(),
        listing: packed.listing.map(Buffer::from),
        debug_info: packed.debug_info,
    }
}

/// The size of the pieces the compressor's workers take in parallel (xz
/// block, zstd job), or 0 for `none`: a path of `n` NAR bytes can use at
/// most `ceil(n / chunkSize)` threads.
#[napi]
pub fn compression_chunk_size(compression: String) -> Result<i64> {
    let compression: Compression = compression.parse().map_err(reason)?;
    Ok(compression.chunk_size().unwrap_or(0) as i64)
}

/// Whether verifyNar reads NAR files compressed as `compression` (a
/// narinfo's `Compression:`): `read`; `unread` for one that Nix writes
/// but narcache does not read (lz4, lzip, …); `unknown` for any other.
#[napi(ts_return_type = "'read' | 'unread' | 'unknown'")]
pub fn nar_compression_support(compression: String) -> &'static str {
    match compression.parse::<NarCompression>() {
        Ok(_) => "read",
        Err(CompressionError::Unsupported(..)) => "unread",
        Err(_) => "unknown",
    }
}

/// Totals of [`PackProgress`] since the process started.
#[napi]
pub fn pack_progress() -> PackProgress {
    PackProgress {
        nar_bytes: PROGRESS.nar_bytes.load(Ordering::Relaxed) as i64,
        file_bytes: PROGRESS.file_bytes.load(Ordering::Relaxed) as i64,
    }
}

#[napi(object)]
pub struct NarCheck {
    /// `sha256:<nix32>` of the file as stored: what `FileHash` must say.
    pub file_hash: String,
    pub file_size: i64,
    /// `sha256:<nix32>` of the NAR inside: what `NarHash` must say.
    pub nar_hash: String,
    pub nar_size: i64,
    /// The NAR's listing as Nix 2.8 writes it, if asked for.
    pub listing: Option<Buffer>,
    /// The paths of its debug-info files, if asked for.
    pub debug_info: Option<Vec<String>>,
}

/// What a NAR check should also collect, from the same pass.
#[napi(object)]
#[derive(Default)]
pub struct IndexOptions {
    pub listing: Option<bool>,
    pub debug_info: Option<bool>,
}

impl IndexOptions {
    fn index(self) -> NarIndex {
        NarIndex::new(
            self.listing.unwrap_or(false),
            self.debug_info.unwrap_or(false),
        )
    }
}

#[napi(object)]
pub struct VerifyProgress {
    /// Bytes of NAR files read so far by verifyNar and verifyNarStream calls
    /// of this process.
    pub file_bytes: i64,
    /// NAR bytes decompressed and checked so far by those calls.
    pub nar_bytes: i64,
}

/// Reads the NAR file `file`, compressed as `compression` (as a narinfo's
/// `Compression:` says: `xz`, `zstd`, `bzip2`, `br`, `gzip` or `none`),
/// once, with bounded memory, and, given `narSize` (its narinfo's NarSize),
/// no further than that many bytes of NAR: resolves to its hash and size and
/// those of the NAR it decompresses to, once that NAR is known to be well
/// formed. Rejects with a one-line message that does not name the file,
/// e.g. `not a valid xz stream (lzma data error)`, `NAR ends early at byte
/// 1234 (expected "entry" or ")")`, `the NAR is longer than its NarSize of
/// 100 bytes`, `unsupported compression "lz4" (…)`. With `index`, the NAR's
/// listing and debug-info files come with the result.
#[napi(ts_return_type = "Promise<NarCheck>")]
pub fn verify_nar<'env>(
    env: &'env Env,
    file: String,
    compression: String,
    nar_size: Option<i64>,
    index: Option<IndexOptions>,
) -> Result<Object<'env>> {
    on_worker(env, "verify", move || {
        let compression: NarCompression = compression.parse().map_err(reason)?;
        let mut index = index.unwrap_or_default().index();
        let check = narcache_core::verify(
            &PathBuf::from(file),
            compression,
            size_limit(nar_size)?,
            Some(&VERIFY_PROGRESS),
            &mut index,
        )
        .map_err(reason)?;
        Ok(nar_check(&check, index))
    })
}

/// A size from JavaScript that bounds a stream, if one is given.
fn size_limit(size: Option<i64>) -> Result<u64> {
    size.map_or(Ok(u64::MAX), |size| {
        u64::try_from(size).map_err(|_| reason(format!("a size must not be negative: {size}")))
    })
}

fn nar_check(check: &narcache_core::NarCheck, index: NarIndex) -> NarCheck {
    let (listing, debug_info) = index.finish();
    NarCheck {
        file_hash: sha256(&check.file_hash),
        file_size: check.file_size as i64,
        nar_hash: sha256(&check.nar.hash),
        nar_size: check.nar.size as i64,
        listing: listing.map(Buffer::from),
        debug_info,
    }
}

/// Totals of [`VerifyProgress`] since the process started.
#[napi]
pub fn verify_progress() -> VerifyProgress {
    VerifyProgress {
        file_bytes: VERIFY_PROGRESS.file_bytes.load(Ordering::Relaxed) as i64,
        nar_bytes: VERIFY_PROGRESS.nar_bytes.load(Ordering::Relaxed) as i64,
    }
}

/// Runs `work` on a worker thread named after `what` (see [`workers`]) and
/// settles the returned Promise with its outcome; a panic rejects it instead
/// of taking the process down.
fn on_worker<'env, T, F>(env: &'env Env, what: &'static str, work: F) -> Result<Object<'env>>
where
    T: ToNapiValue + Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred()?;
    let job = move || match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(result)) => deferred.resolve(move |_| Ok(result)),
        Ok(Err(error)) => deferred.reject(error),
        Err(_) => deferred.reject(Error::from_reason(format!(
            "internal error: {what} panicked"
        ))),
    };
    workers::run(what, Box::new(job))
        .map_err(|e| Error::from_reason(format!("cannot start a {what} thread: {e}")))?;
    Ok(promise)
}

/// `data` compressed whole with `compression` (`xz`, `zstd` or `none`) at
/// its default level: for small files such as narinfos, not NARs.
#[napi(ts_return_type = "Promise<Buffer>")]
pub fn compress_bytes(env: &Env, compression: String, data: Buffer) -> Result<Object<'_>> {
    let data = data.to_vec();
    on_worker(env, "compress", move || {
        let compression: Compression = compression.parse().map_err(reason)?;
        narcache_core::compress_bytes(compression, &data)
            .map(Buffer::from)
            .map_err(reason)
    })
}

/// `data` decompressed whole; rejects if it is not a valid stream of
/// `compression` or would come to more than `maxBytes`.
#[napi(ts_return_type = "Promise<Buffer>")]
pub fn decompress_bytes(
    env: &Env,
    compression: String,
    data: Buffer,
    max_bytes: i64,
) -> Result<Object<'_>> {
    let data = data.to_vec();
    on_worker(env, "decompress", move || {
        let compression: Compression = compression.parse().map_err(reason)?;
        let max = u64::try_from(max_bytes).map_err(reason)?;
        narcache_core::decompress_bytes(compression, &data, max)
            .map(Buffer::from)
            .map_err(reason)
    })
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

/// The core's options for a pack call: `options` checked, with this
/// process's progress counters and the call's cancellation flag.
fn core_options(
    options: Option<PackOptions>,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<CoreOptions> {
    let options = options.unwrap_or_default();
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
        listing: options.listing.unwrap_or(false),
        debug_info: options.debug_info.unwrap_or(false),
        cancel,
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

#[napi(object)]
pub struct ScannedPath {
    /// Base name of the store path (`<hash>-<name>`).
    pub name: String,
    /// `sha256:<nix32>` of its NAR.
    pub nar_hash: String,
    pub nar_size: i64,
    /// Base names of the store paths whose hash parts its NAR contains,
    /// sorted; its own name when it refers to itself.
    pub references: Vec<String>,
}

/// The closure of `roots` (base names of store paths in the directory
/// `storeRoot`) found without metadata, as Nix finds a build's references:
/// each path's NAR is searched for the hash parts of the store paths present
/// in `storeRoot`, and the paths found are scanned in turn, on up to
/// `threads` threads (default 1). NarHash and NarSize come from the same
/// pass. Resolves sorted by name.
#[napi(ts_return_type = "Promise<ScannedPath[]>")]
pub fn scan_store<'env>(
    env: &'env Env,
    store_root: String,
    roots: Vec<String>,
    threads: Option<u32>,
) -> Result<Object<'env>> {
    on_worker(env, "scan", move || {
        let threads = threads.unwrap_or(1) as usize;
        let scanned = narcache_core::scan_closure(&PathBuf::from(store_root), &roots, threads)
            .map_err(reason)?;
        Ok(scanned
            .into_iter()
            .map(|p| ScannedPath {
                name: p.name,
                nar_hash: sha256(&p.nar.hash),
                nar_size: p.nar.size as i64,
                references: p.references,
            })
            .collect::<Vec<_>>())
    })
}

#[napi(object)]
pub struct StoreDbPath {
    pub path: String,
    /// As the database stores it: `sha256:<base16>`.
    pub nar_hash: String,
    pub nar_size: i64,
    pub deriver: Option<String>,
    pub ca: Option<String>,
    pub sigs: Vec<String>,
    /// Indexes of the referenced paths in the array resolved, sorted (so
    /// sorted by path): one string per path however many refer to it.
    pub references: Vec<u32>,
}

/// The closure of `roots` (full store paths) as Nix's SQLite database `db`
/// (a `db.sqlite`) records it, read strictly read-only: no lock, nothing
/// created or written beside the database, rows still in its WAL included.
/// Resolves sorted by path.
#[napi(ts_return_type = "Promise<StoreDbPath[]>")]
pub fn read_store_db<'env>(env: &'env Env, db: String, roots: Vec<String>) -> Result<Object<'env>> {
    on_worker(env, "read-db", move || {
        let infos = narcache_core::read_closure(&PathBuf::from(db), &roots).map_err(reason)?;
        Ok(infos
            .into_iter()
            .map(|p| StoreDbPath {
                path: p.path,
                nar_hash: p.nar_hash,
                nar_size: p.nar_size as i64,
                deriver: p.deriver,
                ca: p.ca,
                sigs: p.sigs,
                // A closure has fewer than 2^32 paths: it is held in memory.
                references: p.references.into_iter().map(|i| i as u32).collect(),
            })
            .collect::<Vec<_>>())
    })
}
