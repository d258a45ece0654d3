//! Making written files durable. A cache promises that a narinfo is never
//! visible before the bytes it points to; across a power loss that holds
//! only once those bytes are on the disk, not merely in the page cache.
//!
//! Files are synced in batches. On Linux a batch is one `syncfs` per file
//! system it touches: it writes back every dirty page and inode there and
//! flushes the device's cache once. Syncing each file instead (open,
//! `fdatasync`, close, for each NAR and each narinfo) costs a device flush
//! per file: with tens of thousands of small paths, that was a third of a
//! build's system time. The price is that `syncfs` also waits for other
//! programs' unwritten data on the same file system; a cache build is
//! usually most of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::pack::temp_path;

#[derive(Debug, Error)]
#[error("{}: cannot make it durable: {source}", path.display())]
pub struct SyncError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Makes the contents of the files at `paths` and their names (the
/// directories holding them) durable.
#[cfg(target_os = "linux")]
pub fn sync_files<P: AsRef<Path>>(paths: &[P]) -> Result<(), SyncError> {
    use std::collections::HashSet;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let mut devices = HashSet::new();
    for path in paths {
        let path = path.as_ref();
        let device = fs::symlink_metadata(path)
            .map_err(|e| error(path, e))?
            .dev();
        if devices.insert(device) {
            let file = File::open(path).map_err(|e| error(path, e))?;
            // SAFETY: the call only reads the descriptor, which `file` keeps open.
            if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
                return Err(error(path, io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// Without `syncfs`: each file, then each directory holding one, one
/// descriptor open at a time.
#[cfg(not(target_os = "linux"))]
pub fn sync_files<P: AsRef<Path>>(paths: &[P]) -> Result<(), SyncError> {
    use std::collections::HashSet;

    let sync = |path: &Path| {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| error(path, e))
    };
    let mut dirs = HashSet::new();
    for path in paths {
        sync(path.as_ref())?;
        dirs.insert(path.as_ref().parent().unwrap_or(Path::new(".")));
    }
    dirs.into_iter().try_for_each(sync)
}

/// A small file to publish whole under its final name (a narinfo, a key,
/// a listing).
pub struct NewFile<'a> {
    pub target: &'a Path,
    pub contents: &'a [u8],
    /// A file already under the name stays as it is (a debug-info link is
    /// never replaced), whatever `overwrite` says.
    pub keep_existing: bool,
}

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Writes each file under a temporary name beside its target (`mode`
/// exactly, or 0644 less the umask), makes them durable together with the
/// files `also_sync` (written earlier, such as the NARs the files point to)
/// as one batch, then gives them their names in order: renamed over
/// whatever is there, or with `overwrite` false hard-linked, which fails if
/// the name is taken (or, for a file to keep existing, leaves it). Readers see each file
/// whole or not at all, and never before it and `also_sync` are on disk.
/// Once on disk, the files of `also_sync` (the bulk: NARs) leave the page
/// cache (see [`drop_cached_pages`]); the small ones stay, as what a re-run
/// or a substituter reads first. That comes between the sync and the
/// names: the names stay the last step, so that a narinfo appearing means
/// its batch is done.
/// One descriptor is open at a time however many files there are; on
/// failure no temporary file is left (the files already named stay).
pub fn publish_files(
    files: &[NewFile],
    also_sync: &[PathBuf],
    mode: Option<u32>,
    overwrite: bool,
) -> Result<(), PublishError> {
    let mut temps = TempNames(Vec::with_capacity(files.len()));
    for file in files {
        let temp = temp_name(file.target);
        write_new(&temp, file.contents, mode).map_err(|source| {
            let _ = fs::remove_file(&temp);
            PublishError::Write {
                path: temp.clone(),
                source,
            }
        })?;
        temps.0.push(temp);
    }
    sync_files(&[also_sync, &temps.0].concat())?;
    for path in also_sync {
        drop_cached_pages(path);
    }
    for (file, temp) in files.iter().zip(temps.0.iter_mut()) {
        let named = if overwrite && !file.keep_existing {
            // Renamed: no temporary name is left to remove.
            fs::rename(&*temp, file.target).map(|()| temp.clear())
        } else {
            match fs::hard_link(&*temp, file.target) {
                Err(e) if file.keep_existing && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        };
        named.map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => PublishError::Exists {
                path: file.target.to_owned(),
            },
            _ => PublishError::Write {
                path: file.target.to_owned(),
                source,
            },
        })?;
    }
    Ok(())
}

/// Asks the kernel to drop the file's pages from its cache, which it does
/// only for pages already on disk: a build writes far more than anything
/// reads back soon, and its NARs otherwise fill the page cache (1.2 GiB
/// for 100,000 small paths), pushing out what other programs use. The
/// build's own writes then reuse the pages just freed instead of taking
/// ever more memory, which costs more once free memory runs short (taken
/// back from other caches, or from a virtual machine's host, which reclaims
/// memory its guest freed). Only advice: a failure changes nothing.
#[cfg(target_os = "linux")]
fn drop_cached_pages(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(file) = File::open(path) {
        // SAFETY: the call only reads the descriptor, which `file` keeps open.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached_pages(_: &Path) {}

/// Temporary files still to be removed (an empty path: renamed away), once
/// the batch is named (a link leaves the temporary name) or failed.
struct TempNames(Vec<PathBuf>);

impl Drop for TempNames {
    fn drop(&mut self) {
        for temp in self.0.iter().filter(|t| !t.as_os_str().is_empty()) {
            let _ = fs::remove_file(temp);
        }
    }
}

/// `<dir>/.tmp-narcache-<pid>-<n>-<nanos>-<name>`: a temporary name that
/// also tells which file it is for.
fn temp_name(target: &Path) -> PathBuf {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut name = temp_path(dir).into_os_string();
    name.push("-");
    name.push(target.file_name().unwrap_or_default());
    name.into()
}

fn write_new(path: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode.unwrap_or(0o644))
        .open(path)?;
    if let Some(mode) = mode {
        // The mode given to open is filtered by the umask; a mode given is meant exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    file.write_all(contents)
}

fn error(path: &Path, source: io::Error) -> SyncError {
    SyncError {
        path: path.to_owned(),
        source,
    }
}

/// Asks the kernel to start writing `len` bytes of the file from `offset`
/// back, without waiting, so that a large file's pages do not all wait for
/// the sync.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: the call only reads the descriptor, which `file` keeps open.
    let ret = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback_range(_: &File, _: u64, _: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn syncs_files_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        sync_files(&[&a, &b]).unwrap();
        let missing = dir.path().join("missing");
        let error = sync_files(&[&a, &missing]).unwrap_err();
        assert_eq!(error.path, missing);
        assert_eq!(error.source.kind(), io::ErrorKind::NotFound);
        assert!(error
            .to_string()
            .starts_with(&format!("{}: ", missing.display())));
    }

    #[test]
    fn publishes_files_whole_with_their_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let nar = dir.path().join("nar");
        fs::write(&nar, b"nar").unwrap();
        let (a, b) = (dir.path().join("a.narinfo"), dir.path().join("b.narinfo"));
        fs::write(&a, b"old").unwrap();
        let files = [
            NewFile {
                target: &a,
                contents: b"new a",
                keep_existing: false,
            },
            NewFile {
                target: &b,
                contents: b"new b",
                keep_existing: false,
            },
        ];
        publish_files(&files, std::slice::from_ref(&nar), Some(0o640), true).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        assert_eq!(
            fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.narinfo", "b.narinfo", "nar"]);
    }

    /// How many of the file's pages are in the page cache.
    #[cfg(target_os = "linux")]
    fn cached_pages(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: sysconf reads a constant; the mapping is only passed to
        // mincore, never read (which would bring its pages in), and unmapped.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut resident = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
            resident.iter().filter(|&&r| r & 1 != 0).count()
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn files_synced_with_published_ones_leave_the_page_cache() {
        // Beside the sources, on a disk: a tmpfs (often /tmp) keeps its pages.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let nar = dir.path().join("nar");
        fs::write(&nar, vec![7u8; 1 << 20]).unwrap();
        assert!(cached_pages(&nar) > 0);
        let narinfo = dir.path().join("a.narinfo");
        let files = [NewFile {
            target: &narinfo,
            contents: b"narinfo",
            keep_existing: false,
        }];
        publish_files(&files, std::slice::from_ref(&nar), None, true).unwrap();
        assert_eq!(cached_pages(&nar), 0);
        assert_eq!(cached_pages(&narinfo), 1);
        assert_eq!(fs::read(&nar).unwrap(), vec![7u8; 1 << 20]);
    }

    #[test]
    fn without_overwrite_a_taken_name_fails_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        fs::write(&key, b"mine").unwrap();
        let files = [NewFile {
            target: &key,
            contents: b"other",
            keep_existing: false,
        }];
        let error = publish_files(&files, &[], Some(0o600), false).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{} already exists", key.display())
        );
        assert_eq!(fs::read(&key).unwrap(), b"mine");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_to_keep_existing_is_left_and_the_others_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (link, new) = (dir.path().join("link"), dir.path().join("new"));
        fs::write(&link, b"first").unwrap();
        let files = [
            NewFile {
                target: &link,
                contents: b"second",
                keep_existing: true,
            },
            NewFile {
                target: &new,
                contents: b"new",
                keep_existing: true,
            },
        ];
        publish_files(&files, &[], None, true).unwrap();
        assert_eq!(fs::read(&link).unwrap(), b"first");
        assert_eq!(fs::read(&new).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_failed_batch_names_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let missing_nar = dir.path().join("gone.nar");
        let files = [NewFile {
            target: &a,
            contents: b"a",
            keep_existing: false,
        }];
        let error =
            publish_files(&files, std::slice::from_ref(&missing_nar), None, true).unwrap_err();
        assert!(error
            .to_string()
            .starts_with(&format!("{}: ", missing_nar.display())));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
