//! Making written files durable. A cache promises that a narinfo is never
//! visible before the bytes it points to; across a power loss that holds
//! only once those bytes are on the disk, not merely in the page cache.
//!
//! Files are synced in batches: an `fsync` per file as each is written
//! would make the file system commit its journal once per file, which for
//! a closure of a thousand small paths is most of the time spent writing.
//! Started together, the batch's writeback lands in one commit, and the
//! syncs that follow find little left to wait for. Unlike `syncfs`, this
//! never waits for other programs' data on the same file system.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
#[error("{}: cannot make it durable: {source}", path.display())]
pub struct SyncError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Makes the contents of the files at `paths` and their names (the
/// directories holding them) durable.
pub fn sync_files<P: AsRef<Path>>(paths: &[P]) -> Result<(), SyncError> {
    // One descriptor open at a time, however large the batch (a closure's
    // first batch may hold thousands of files); every file's writeback is
    // started before the first wait.
    let each = |run: fn(File) -> io::Result<()>| {
        paths.iter().try_for_each(|path| {
            let path = path.as_ref();
            File::open(path).and_then(run).map_err(|e| error(path, e))
        })
    };
    each(|file| start_writeback(&file))?;
    each(|file| file.sync_data())?;
    let mut dirs = HashSet::new();
    for path in paths {
        let dir = path.as_ref().parent().unwrap_or(Path::new("."));
        if dirs.insert(dir) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| error(dir, e))?;
        }
    }
    Ok(())
}

fn error(path: &Path, source: io::Error) -> SyncError {
    SyncError {
        path: path.to_owned(),
        source,
    }
}

/// Asks the kernel to start writing the file's dirty pages back, without
/// waiting, so that the whole batch is under way before the first sync.
fn start_writeback(file: &File) -> io::Result<()> {
    start_writeback_range(file, 0, 0)
}

/// The same for `len` bytes from `offset` (0: to the end of the file).
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
}
