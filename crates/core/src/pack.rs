//! Packing one store path into a binary cache's `nar/` directory: a single
//! streaming pass NAR → SHA-256 → compressor → SHA-256 → file, so that the
//! uncompressed NAR never touches the disk and each input file is read once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::compress::{Compression, Encoder};
use crate::digest::{Hashed, Sha256Hash};
use crate::durable;
use crate::nar::{self, NarError, NarIdentity, NarIndex};
use crate::nix32;

/// No larger than the NAR writer's pieces of file content, which then go
/// on without a copy into the buffer; only the small pieces of NAR framing
/// are gathered.
const WRITE_BUFFER: usize = nar::COPY_BUFFER;
const MIN_WRITE_BUFFER: usize = 8 * 1024;
/// How much of a NAR file is written between two requests to the kernel
/// to start writing it to the disk.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Prefix of the names under which NARs are written before they are
/// complete; nothing in a cache ever points at such a file.
pub const TEMP_PREFIX: &str = ".tmp-narcache-";

#[derive(Clone, Debug)]
pub struct PackOptions {
    pub compression: Compression,
    /// A level checked by [`Compression::level`].
    pub level: i32,
    /// Worker threads the compressor may use for this path.
    pub threads: u32,
    /// What the store's database says the NAR must be; on a mismatch the
    /// path is refused and nothing is left in the cache.
    pub expected: Option<NarIdentity>,
    pub progress: Option<Progress>,
    /// Also make the NAR's listing ([`nar::Listing`]), in the same pass.
    pub listing: bool,
    /// Also find the NAR's debug-info files ([`nar::DebugInfoMembers`]).
    pub debug_info: bool,
    /// Set from another thread to abandon packing: the pass stops at its
    /// next write and leaves nothing behind.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Running byte counts that another thread may read while packing goes on.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub nar_bytes: Arc<AtomicU64>,
    pub file_bytes: Arc<AtomicU64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    pub nar: NarIdentity,
    pub file_hash: Sha256Hash,
    pub file_size: u64,
    /// The file's name inside `nar/`: `<nix32 file hash><extension>`.
    pub file_name: String,
    /// The NAR's listing, if [`PackOptions::listing`] asked for it.
    pub listing: Option<Vec<u8>>,
    /// Its debug-info files, if [`PackOptions::debug_info`] asked for them.
    pub debug_info: Option<Vec<String>>,
}

#[derive(Debug, Error)]
pub enum PackError {
    #[error(transparent)]
    Nar(NarError),
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The writer given to [`pack_into`] failed; [`pack`] names its file.
    #[error(transparent)]
    Output(io::Error),
    #[error(
        "{}: NAR does not match the store's record (expected sha256:{} with {} bytes, got sha256:{} with {} bytes); the store is corrupt",
        path.display(), nix32::encode(&expected.hash), expected.size, nix32::encode(&actual.hash), actual.size
    )]
    Mismatch {
        path: PathBuf,
        expected: NarIdentity,
        actual: NarIdentity,
    },
    #[error("{}: packing cancelled", path.display())]
    Cancelled { path: PathBuf },
}

/// Serialises `source` as a NAR, compresses it into `nar_dir` under a
/// temporary name and renames it to its final, content-addressed name once
/// it is complete (durable only after [`crate::sync_files`]).
pub fn pack(source: &Path, nar_dir: &Path, options: &PackOptions) -> Result<Packed, PackError> {
    let temp = TempFile::create(nar_dir)?;
    let write_error = |source| PackError::Write {
        path: temp.path.clone(),
        source,
    };
    let sink = BufWriter::with_capacity(write_buffer(options), WritingBack::new(&temp.file));
    let (sink, packed) = pack_into(source, sink, options).map_err(|e| match e {
        PackError::Output(source) => write_error(source),
        other => other,
    })?;
    sink.into_inner().map_err(|e| write_error(e.into_error()))?;
    temp.persist(&nar_dir.join(&packed.file_name))?;
    Ok(packed)
}

/// A write buffer for the NAR of `options.expected`, which its compressed
/// file hardly exceeds: as large as that, within WRITE_BUFFER. Small paths
/// are most paths, and a full buffer each cost page faults to fill and an
/// madvise of its pages once freed.
fn write_buffer(options: &PackOptions) -> usize {
    options.expected.map_or(WRITE_BUFFER, |e| {
        usize::try_from(e.size).map_or(WRITE_BUFFER, |n| n.clamp(MIN_WRITE_BUFFER, WRITE_BUFFER))
    })
}

/// The pipeline of [`pack`] into any writer: NAR → SHA-256 → compressor →
/// SHA-256 → `sink`, which receives the compressed file's bytes in order and
/// is given back, unflushed, once they are all written. The file's name is
/// known only then, so a sink that cannot rename stores them under a
/// temporary name of its own.
pub fn pack_into<W: Write>(
    source: &Path,
    sink: W,
    options: &PackOptions,
) -> Result<(W, Packed), PackError> {
    let counter =
        |pick: fn(&Progress) -> &Arc<AtomicU64>| options.progress.as_ref().map(pick).cloned();
    let nar_counter = counter(|p| &p.nar_bytes);
    let file_counter = counter(|p| &p.file_bytes);

    let (sink, nar, index, file_hash, file_size) = match options.compression {
        // The file is the NAR itself: hash it once.
        Compression::None => {
            let counters = [nar_counter, file_counter].into_iter().flatten().collect();
            let (sink, nar, index) = write_nar(source, sink, counters, options)?;
            (sink, nar, index, nar.hash, nar.size)
        }
        compression => {
            let hashed = Hashed::new(sink).with_progress(file_counter.into_iter().collect());
            let encoder = Encoder::new(compression, options.level, options.threads, hashed)
                .map_err(PackError::Output)?;
            // Each call into a multi-threaded encoder takes its locks: the
            // NAR's many small tokens go in gathered, file contents as they come.
            let gathered = BufWriter::with_capacity(write_buffer(options), encoder);
            let (gathered, nar, index) =
                write_nar(source, gathered, nar_counter.into_iter().collect(), options)?;
            let encoder = gathered
                .into_inner()
                .map_err(|e| PackError::Output(e.into_error()))?;
            // Before the compressor's trailer: a refused NAR is never complete.
            check_expected(source, options, nar)?;
            let (sink, file_hash, file_size) =
                encoder.finish().map_err(PackError::Output)?.finish();
            (sink, nar, index, file_hash, file_size)
        }
    };
    check_expected(source, options, nar)?;

    let file_name = format!(
        "{}{}",
        nix32::encode(&file_hash),
        options.compression.extension()
    );
    let (listing, debug_info) = index.finish();
    Ok((
        sink,
        Packed {
            nar,
            file_hash,
            file_size,
            file_name,
            listing,
            debug_info,
        },
    ))
}

fn write_nar<W: Write>(
    source: &Path,
    sink: W,
    counters: Vec<Arc<AtomicU64>>,
    options: &PackOptions,
) -> Result<(W, NarIdentity, NarIndex), PackError> {
    let cancellable = Cancellable {
        inner: sink,
        cancel: options.cancel.clone(),
    };
    let mut hashed = Hashed::new(cancellable).with_progress(counters);
    let mut index = NarIndex::new(options.listing, options.debug_info);
    // Without a visitor when nothing is collected: the walk most builds take.
    let dumped = if index.wanted() {
        nar::dump_visited(source, &mut hashed, &mut index)
    } else {
        nar::dump(source, &mut hashed)
    };
    dumped.map_err(|e| match e {
        NarError::Write(_)
            if options
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed)) =>
        {
            PackError::Cancelled {
                path: source.to_owned(),
            }
        }
        NarError::Write(source) => PackError::Output(source),
        other => PackError::Nar(other),
    })?;
    let (cancellable, hash, size) = hashed.finish();
    Ok((cancellable.inner, NarIdentity { hash, size }, index))
}

/// Fails every write once `cancel` is set, which ends the NAR walk within
/// one buffer of the request.
struct Cancellable<W> {
    inner: W,
    cancel: Option<Arc<AtomicBool>>,
}

impl<W: Write> Write for Cancellable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            // Not `Interrupted`: `write_all` would retry that forever.
            return Err(io::Error::other("cancelled"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a file and starts its writeback every [`WRITEBACK_STEP`] bytes.
/// The kernel would otherwise hold gigabytes dirty (its own writeback
/// starts at a tenth of memory), and the sync that publishes a large NAR,
/// often among the last to finish, would wait for all of it at once at the
/// end of the build while the cores idle.
struct WritingBack<'a> {
    file: &'a File,
    written: u64,
    started: u64,
}

impl<'a> WritingBack<'a> {
    fn new(file: &'a File) -> Self {
        Self {
            file,
            written: 0,
            started: 0,
        }
    }
}

impl Write for WritingBack<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            // Only a request: the sync before publishing reports any
            // failure to write these pages.
            let _ = durable::start_writeback_range(
                self.file,
                self.started,
                self.written - self.started,
            );
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn check_expected(
    source: &Path,
    options: &PackOptions,
    actual: NarIdentity,
) -> Result<(), PackError> {
    match options.expected {
        Some(expected) if expected != actual => Err(PackError::Mismatch {
            path: source.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// A file being written, not yet under its name: on Linux an unnamed file
/// (`O_TMPFILE`) that a link names once it is complete, elsewhere (or where
/// the file system cannot) a file under a unique temporary name, renamed.
/// Unnamed, a file costs the directory one entry instead of three changes
/// (a temporary entry added, then renamed: added and removed), and one
/// that is abandoned, even by a killed process, leaves nothing behind.
struct TempFile {
    /// The temporary file's path; for an unnamed file, its directory.
    path: PathBuf,
    file: File,
    unnamed: bool,
    persisted: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<Self, PackError> {
        if let Some(file) = create_unnamed(dir) {
            return Ok(Self {
                path: dir.to_owned(),
                file,
                unnamed: true,
                persisted: false,
            });
        }
        let path = temp_path(dir);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| PackError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            file,
            unnamed: false,
            persisted: false,
        })
    }

    /// Gives the complete file its final name. It is not yet durable: a
    /// narinfo may point to it only after [`crate::sync_files`], which
    /// flushes a whole batch of files at once. A file already under that
    /// name (the same bytes, from another path or an earlier run, or what a
    /// crash left short) may be pointed to by a published narinfo: it is
    /// replaced only by bytes that are already on disk.
    fn persist(mut self, target: &Path) -> Result<(), PackError> {
        let write_error = |source| PackError::Write {
            path: target.to_owned(),
            source,
        };
        if self.unnamed {
            match link_unnamed(&self.file, target) {
                Ok(()) => {
                    self.persisted = true;
                    return Ok(());
                }
                // The name is taken: under a temporary name, then as below.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let path = temp_path(target.parent().unwrap_or(Path::new(".")));
                    link_unnamed(&self.file, &path).map_err(write_error)?;
                    self.path = path;
                    self.unnamed = false;
                }
                Err(e) => return Err(write_error(e)),
            }
        }
        let result = match rename_new(&self.path, target) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self
                .file
                .sync_data()
                .and_then(|()| fs::rename(&self.path, target)),
            other => other,
        };
        result.map_err(write_error)?;
        self.persisted = true;
        Ok(())
    }
}

/// `<dir>/.tmp-narcache-<pid>-<n>-<nanos>`: unique in the process, and the
/// process that wrote it can be told from the name.
pub(crate) fn temp_path(dir: &Path) -> PathBuf {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{seq}-{nanos}", std::process::id()))
}

/// An unnamed file in `dir`, where the kernel and the file system make one
/// and this process can link it.
#[cfg(target_os = "linux")]
fn create_unnamed(dir: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    link_method()?;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn create_unnamed(_: &Path) -> Option<File> {
    None
}

#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
enum LinkMethod {
    /// `AT_EMPTY_PATH`, which needs CAP_DAC_READ_SEARCH.
    Descriptor,
    /// The descriptor's `/proc/self/fd` link, followed.
    Proc,
}

/// How this process can link an unnamed file, if at all; found out once.
#[cfg(target_os = "linux")]
fn link_method() -> Option<LinkMethod> {
    use std::sync::OnceLock;
    static METHOD: OnceLock<Option<LinkMethod>> = OnceLock::new();
    *METHOD.get_or_init(|| {
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        const CAP_DAC_READ_SEARCH: u32 = 2;
        // The version, and 0 for this process.
        let mut header = [LINUX_CAPABILITY_VERSION_3, 0];
        // Effective, permitted and inheritable sets: two records of three words.
        let mut data = [0u32; 6];
        // SAFETY: capget writes at most the two records of version 3 into `data`.
        let got =
            unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()) };
        if got == 0 && data[0] & (1 << CAP_DAC_READ_SEARCH) != 0 {
            Some(LinkMethod::Descriptor)
        } else if Path::new("/proc/self/fd").is_dir() {
            Some(LinkMethod::Proc)
        } else {
            None
        }
    })
}

/// Links the unnamed `file` at `target`, which must not exist.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &[u8]| CString::new(p).map_err(io::Error::other);
    let target = c(target.as_os_str().as_bytes())?;
    let fd = file.as_raw_fd();
    let ret = match link_method() {
        // SAFETY (both): the strings are NUL-terminated and outlive the call; `fd` is open.
        Some(LinkMethod::Descriptor) => unsafe {
            libc::linkat(
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        },
        Some(LinkMethod::Proc) => {
            let proc = c(format!("/proc/self/fd/{fd}").as_bytes())?;
            unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            }
        }
        None => return Err(io::ErrorKind::Unsupported.into()),
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_: &File, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`).
#[cfg(target_os = "linux")]
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let ret = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        // A file system without the flag: ask first, then rename.
        e if e.raw_os_error() == Some(libc::EINVAL) => rename_if_absent(from, to),
        e => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    rename_if_absent(from, to)
}

fn rename_if_absent(from: &Path, to: &Path) -> io::Result<()> {
    if to.symlink_metadata().is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    fs::rename(from, to)
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // An unnamed file goes with its descriptor.
        if !self.persisted && !self.unnamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_of;
    use std::io::Read;

    fn options(compression: Compression) -> PackOptions {
        PackOptions {
            compression,
            level: compression.default_level(),
            threads: 2,
            expected: None,
            progress: Some(Progress::default()),
            listing: false,
            debug_info: false,
            cancel: None,
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("bin/tool"), vec![7u8; 300_000]).unwrap();
        fs::write(dir.path().join("README"), b"narcache test tree\n").unwrap();
        dir
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn packing_the_same_bytes_again_keeps_one_file_under_the_name() {
        let src = tree();
        let out = tempfile::tempdir().unwrap();
        let opts = options(Compression::Zstd);
        let first = pack(src.path(), out.path(), &opts).unwrap();
        let second = pack(src.path(), out.path(), &opts).unwrap();
        assert_eq!(first, second);
        assert_eq!(dir_entries(out.path()), vec![first.file_name]);
    }

    #[test]
    fn every_compression_yields_the_nar_and_right_hashes() {
        let src = tree();
        let mut reference = Vec::new();
        nar::dump(src.path(), &mut reference).unwrap();
        let (nar_hash, nar_size) = sha256_of(&reference);
        for compression in [Compression::None, Compression::Xz, Compression::Zstd] {
            let out = tempfile::tempdir().unwrap();
            let opts = options(compression);
            let packed = pack(src.path(), out.path(), &opts).unwrap();
            assert_eq!(
                packed.nar,
                NarIdentity {
                    hash: nar_hash,
                    size: nar_size
                }
            );
            assert_eq!(dir_entries(out.path()), vec![packed.file_name.clone()]);
            let file = fs::read(out.path().join(&packed.file_name)).unwrap();
            let (file_hash, file_size) = sha256_of(&file);
            assert_eq!((packed.file_hash, packed.file_size), (file_hash, file_size));
            assert_eq!(
                packed.file_name,
                format!("{}{}", nix32::encode(&file_hash), compression.extension())
            );
            let mut nar_back = Vec::new();
            match compression {
                Compression::None => nar_back = file.clone(),
                Compression::Xz => {
                    liblzma::read::XzDecoder::new(&file[..])
                        .read_to_end(&mut nar_back)
                        .unwrap();
                }
                Compression::Zstd => {
                    zstd::stream::read::Decoder::new(&file[..])
                        .unwrap()
                        .read_to_end(&mut nar_back)
                        .unwrap();
                }
            }
            assert!(nar_back == reference, "{compression}: NAR differs");
            let progress = opts.progress.unwrap();
            assert_eq!(progress.nar_bytes.load(Ordering::Relaxed), nar_size);
            assert_eq!(progress.file_bytes.load(Ordering::Relaxed), file_size);
        }
    }

    #[test]
    fn pack_into_gives_the_bytes_pack_writes() {
        let src = tree();
        for compression in [Compression::None, Compression::Xz, Compression::Zstd] {
            let out = tempfile::tempdir().unwrap();
            let packed = pack(src.path(), out.path(), &options(compression)).unwrap();
            let (bytes, streamed) =
                pack_into(src.path(), Vec::new(), &options(compression)).unwrap();
            assert_eq!(streamed, packed, "{compression}");
            let file = fs::read(out.path().join(&packed.file_name)).unwrap();
            assert!(bytes == file, "{compression}: bytes differ from the file");
        }
    }

    #[test]
    fn the_listing_comes_from_the_same_pass() {
        let src = tree();
        for compression in [Compression::None, Compression::Zstd] {
            let mut opts = options(compression);
            opts.listing = true;
            opts.debug_info = true;
            let (_, packed) = pack_into(src.path(), Vec::new(), &opts).unwrap();
            let mut nar_bytes = Vec::new();
            nar::dump(src.path(), &mut nar_bytes).unwrap();
            let mut listing = nar::Listing::default();
            nar::parse(&nar_bytes[..], &mut listing, Vec::new()).unwrap();
            assert_eq!(packed.listing, Some(listing.finish()), "{compression}");
            assert_eq!(packed.debug_info, Some(Vec::new()));
        }
        let (_, plain) = pack_into(src.path(), Vec::new(), &options(Compression::None)).unwrap();
        assert_eq!((plain.listing, plain.debug_info), (None, None));
    }

    #[test]
    fn a_failing_sink_stops_packing_with_its_error() {
        #[derive(Debug)]
        struct Refuses;
        impl Write for Refuses {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("upload refused"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let src = tree();
        for compression in [Compression::None, Compression::Xz, Compression::Zstd] {
            let err = pack_into(src.path(), Refuses, &options(compression)).unwrap_err();
            assert!(
                matches!(err, PackError::Output(_)),
                "{compression}: {err:?}"
            );
            assert_eq!(err.to_string(), "upload refused");
        }
    }

    #[test]
    fn mismatch_leaves_nothing_behind() {
        let src = tree();
        let out = tempfile::tempdir().unwrap();
        for compression in [Compression::None, Compression::Zstd] {
            let mut opts = options(compression);
            opts.expected = Some(NarIdentity {
                hash: [0; 32],
                size: 1,
            });
            let err = pack(src.path(), out.path(), &opts).unwrap_err();
            assert!(matches!(err, PackError::Mismatch { .. }));
            assert!(err.to_string().contains("the store is corrupt"), "{err}");
            assert!(dir_entries(out.path()).is_empty());
        }
    }

    #[test]
    fn unreadable_source_leaves_nothing_behind() {
        let out = tempfile::tempdir().unwrap();
        let err = pack(
            Path::new("/nonexistent/x"),
            out.path(),
            &options(Compression::Xz),
        )
        .unwrap_err();
        assert!(matches!(err, PackError::Nar(_)));
        assert!(dir_entries(out.path()).is_empty());
    }

    #[test]
    fn missing_destination_is_a_write_error() {
        let src = tree();
        let err = pack(
            src.path(),
            Path::new("/nonexistent/nar"),
            &options(Compression::Zstd),
        )
        .unwrap_err();
        assert!(matches!(err, PackError::Write { .. }));
        assert!(
            err.to_string()
                .starts_with("/nonexistent/nar/.tmp-narcache-"),
            "{err}"
        );
    }

    #[test]
    fn cancelled_pack_leaves_nothing_behind() {
        let src = tree();
        let out = tempfile::tempdir().unwrap();
        let mut opts = options(Compression::Zstd);
        opts.cancel = Some(Arc::new(AtomicBool::new(true)));
        let err = pack(src.path(), out.path(), &opts).unwrap_err();
        assert!(matches!(err, PackError::Cancelled { .. }), "{err}");
        assert!(dir_entries(out.path()).is_empty());
    }
}
