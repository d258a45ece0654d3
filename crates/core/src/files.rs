//! Looking at many small files in one call: a cache's narinfos and the
//! NAR files they name, tens of thousands of each when a closure is
//! built again, and a closure's store paths before they are packed. Read
//! one by one from JavaScript, each file cost several round trips through
//! libuv's thread pool (stat, open, read, close).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What reading one file gave.
#[derive(Debug)]
pub enum SmallFile {
    Read(Vec<u8>),
    /// It is larger than the limit (this many bytes), and was not read.
    TooLarge(u64),
    Missing,
    /// Not a regular file, or a failure to read it.
    Unreadable(io::Error),
}

/// Reads each regular file at `paths` of at most `max_bytes`.
pub fn read_small_files<P: AsRef<Path>>(paths: &[P], max_bytes: u64) -> Vec<SmallFile> {
    paths
        .iter()
        .map(|path| match read_small(path.as_ref(), max_bytes) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SmallFile::Missing,
            Err(e) => SmallFile::Unreadable(e),
        })
        .collect()
}

fn read_small(path: &Path, max_bytes: u64) -> io::Result<SmallFile> {
    // Non-blocking: opening a FIFO put in a file's place must not wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > max_bytes {
        return Ok(SmallFile::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grew since it was looked at is read no further than the limit allows.
    File::take(file, max_bytes + 1).read_to_end(&mut bytes)?;
    Ok(match bytes.len() as u64 {
        len if len > max_bytes => SmallFile::TooLarge(len),
        _ => SmallFile::Read(bytes),
    })
}

/// The size of each regular file at `paths`, a symbolic link not followed;
/// `None` for anything else, or what cannot be looked at.
pub fn regular_file_sizes<P: AsRef<Path>>(paths: &[P]) -> Vec<Option<u64>> {
    paths
        .iter()
        .map(|path| {
            fs::symlink_metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        })
        .collect()
}

/// The inode number of each path, a symbolic link not followed; `None` for
/// what cannot be looked at. On ext4 and its like a file system hands out
/// inode numbers, and places the files' blocks, roughly in the order the
/// files were written: read in that order, a store's paths are read from a
/// cold page cache mostly forward, not at random.
pub fn inode_numbers<P: AsRef<Path>>(paths: &[P]) -> Vec<Option<u64>> {
    paths
        .iter()
        .map(|path| fs::symlink_metadata(path).ok().map(|m| m.ino()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_small_files_and_tells_the_others_apart() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        fs::write(at("small"), b"StorePath: x\n").unwrap();
        fs::write(at("large"), vec![b'x'; 100]).unwrap();
        fs::create_dir(at("dir")).unwrap();
        let fifo =
            std::ffi::CString::new(at("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let names = ["small", "large", "missing", "dir", "fifo"].map(at);
        let read = read_small_files(&names, 99);
        assert!(matches!(&read[0], SmallFile::Read(b) if b == b"StorePath: x\n"));
        assert!(matches!(read[1], SmallFile::TooLarge(100)));
        assert!(matches!(read[2], SmallFile::Missing));
        assert!(matches!(read[3], SmallFile::Unreadable(_)));
        assert!(matches!(read[4], SmallFile::Unreadable(_)));
    }

    #[test]
    fn sizes_of_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        fs::write(at("file"), b"12345").unwrap();
        symlink(at("file"), at("link")).unwrap();
        fs::create_dir(at("dir")).unwrap();
        let sizes = regular_file_sizes(&["file", "link", "dir", "missing"].map(at));
        assert_eq!(sizes, [Some(5), None, None, None]);
    }

    #[test]
    fn inode_numbers_of_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        fs::write(at("file"), b"").unwrap();
        fs::create_dir(at("dir")).unwrap();
        symlink("missing", at("dangling")).unwrap();
        let names = ["file", "dir", "dangling", "missing"].map(at);
        let expected: Vec<_> = names[..3]
            .iter()
            .map(|p| Some(fs::symlink_metadata(p).unwrap().ino()))
            .chain([None])
            .collect();
        assert_eq!(inode_numbers(&names), expected);
        assert_ne!(expected[0], expected[1]);
    }
}
