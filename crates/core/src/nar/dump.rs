//! Writing a NAR: the serialisation of a file system tree, byte-identical to
//! `nix-store --dump` (NixOS/nix src/libutil/archive.cc).
//!
//! The tree is walked once and streamed into a writer: file contents are
//! copied through a fixed buffer, so memory does not grow with file sizes.
//! A [`Visit`] may watch the walk, seeing each entry as the NAR parser
//! would show it, so that what is derived from a NAR (its listing, its
//! debug-info members) needs no second pass.

use std::fs::{self, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::parse::{Node, NodeKind, Visit};

/// The most file content handed to the writer in one call.
pub(crate) const COPY_BUFFER: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum NarError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: cannot archive a {kind}; a store path may hold only regular files, directories and symlinks", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    #[error("{}: file changed while being read (expected {expected} bytes, got {actual})", path.display())]
    FileChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("writing the NAR: {0}")]
    Write(#[source] io::Error),
}

/// Writes the NAR serialisation of `path` (not following a symlink at
/// `path` itself) into `out`.
pub fn dump<W: Write>(path: &Path, out: &mut W) -> Result<(), NarError> {
    dump_visited(path, out, &mut ())
}

/// [`dump`], showing each entry to `visitor` as [`super::parse`] would
/// show it, contents excepted.
pub fn dump_visited<W: Write>(
    path: &Path,
    out: &mut W,
    visitor: &mut impl Visit,
) -> Result<(), NarError> {
    let mut dumper = Dumper {
        out,
        buf: Vec::new(),
        visitor,
        root_len: path.as_os_str().len(),
        offset: 0,
    };
    dumper.token(b"nix-archive-1")?;
    let meta = fs::symlink_metadata(path).map_err(|e| read_error(path, e))?;
    dumper.node(path, meta.file_type())
}

struct Dumper<'a, W, V> {
    out: &'a mut W,
    /// Grown to the largest file read so far, up to COPY_BUFFER: most store
    /// paths are small, and a full buffer per path cost page faults and,
    /// freed, an madvise of its pages.
    buf: Vec<u8>,
    visitor: &'a mut V,
    /// Length of the root's path, whose children's paths extend it.
    root_len: usize,
    /// NAR bytes written so far.
    offset: u64,
}

impl<W: Write, V: Visit> Dumper<'_, W, V> {
    /// `ft` is the type that `path` had when its directory was read.
    fn node(&mut self, path: &Path, ft: FileType) -> Result<(), NarError> {
        self.tokens(&[b"(", b"type"])?;
        if ft.is_file() {
            self.regular(path)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|e| read_error(path, e))?;
            let target = target.as_os_str().as_bytes();
            self.tokens(&[b"symlink", b"target", target])?;
            self.visit(path, NodeKind::Symlink { target });
        } else if ft.is_dir() {
            self.directory(path)?;
        } else {
            return Err(NarError::UnsupportedFileType {
                path: path.to_owned(),
                kind: kind_name(&ft),
            });
        }
        self.token(b")")
    }

    fn regular(&mut self, path: &Path) -> Result<(), NarError> {
        // Size and mode come from the open file, so that the header matches
        // the bytes we then read; not following a symlink that replaced the
        // file since its directory was read.
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| read_error(path, e))?;
        let meta = file.metadata().map_err(|e| read_error(path, e))?;
        if !meta.is_file() {
            let changed = io::Error::other("no longer a regular file");
            return Err(read_error(path, changed));
        }
        self.token(b"regular")?;
        let executable = meta.permissions().mode() & 0o100 != 0;
        if executable {
            self.tokens(&[b"executable", b""])?;
        }
        self.token(b"contents")?;
        let expected = meta.len();
        self.write(&expected.to_le_bytes())?;
        let kind = NodeKind::Regular {
            executable,
            size: expected,
            offset: self.offset,
        };
        self.visit(path, kind);
        // At least one byte: a file that grew since its size was read must show it.
        let wanted = usize::try_from(expected).map_or(COPY_BUFFER, |n| n.clamp(1, COPY_BUFFER));
        if self.buf.len() < wanted {
            self.buf.resize(wanted, 0);
        }
        let mut copied = 0u64;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(path, e)),
            };
            copied += n as u64;
            if copied > expected {
                break;
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(NarError::Write)?;
            self.offset += n as u64;
        }
        if copied != expected {
            return Err(NarError::FileChanged {
                path: path.to_owned(),
                expected,
                actual: copied,
            });
        }
        self.padding(expected)
    }

    fn directory(&mut self, path: &Path) -> Result<(), NarError> {
        self.token(b"directory")?;
        self.visit(path, NodeKind::Directory);
        // The types come with the names (from the directory itself on most
        // file systems): one system call per entry fewer than an lstat each.
        let mut entries = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| read_error(path, e))? {
            let entry = entry.map_err(|e| read_error(path, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| read_error(&entry.path(), e))?;
            entries.push((entry.file_name(), ft));
        }
        // Nix sorts entries by their raw bytes.
        entries.sort_unstable_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
        for (name, ft) in entries {
            let child = path.join(&name);
            self.tokens(&[b"entry", b"(", b"name", name.as_bytes(), b"node"])?;
            self.node(&child, ft)?;
            self.token(b")")?;
        }
        Ok(())
    }

    /// Shows the node at `path` to the visitor, named as the parser names
    /// it: relative to the root, which `path` extends.
    fn visit(&mut self, path: &Path, kind: NodeKind<'_>) {
        // Without a possible panic, this is nothing once a visitor that
        // does nothing is inlined.
        let below = (path.as_os_str().as_bytes().get(self.root_len..)).unwrap_or_default();
        let path = below.strip_prefix(b"/").unwrap_or(below);
        self.visitor.node(&Node { path, kind });
    }

    fn tokens(&mut self, tokens: &[&[u8]]) -> Result<(), NarError> {
        tokens.iter().try_for_each(|t| self.token(t))
    }

    /// A NAR string: u64 little-endian length, the bytes, zero padding to a
    /// multiple of eight.
    fn token(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.write(&(bytes.len() as u64).to_le_bytes())?;
        self.write(bytes)?;
        self.padding(bytes.len() as u64)
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = (8 - len % 8) % 8;
        self.write(&[0u8; 8][..pad as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.out.write_all(bytes).map_err(NarError::Write)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

fn read_error(path: &Path, source: io::Error) -> NarError {
    NarError::Read {
        path: path.to_owned(),
        source,
    }
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nar::spelled::{self, directory, entry, nar, regular};
    use std::os::unix::fs::symlink;

    fn dump_vec(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        dump(path, &mut out).unwrap();
        out
    }

    #[test]
    fn single_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"hello").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(dump_vec(&f), nar(regular(b"hello", false)));
        // Only the owner's execute bit counts.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o655)).unwrap();
        assert_eq!(dump_vec(&f), nar(regular(b"hello", false)));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o744)).unwrap();
        assert_eq!(dump_vec(&f), nar(regular(b"hello", true)));
    }

    #[test]
    fn tree_with_sorted_raw_byte_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(root.join("B"), b"").unwrap();
        fs::write(root.join("a b"), b"12345678").unwrap();
        let non_utf8 = std::ffi::OsStr::from_bytes(b"\xff\xfe");
        fs::write(root.join(non_utf8), b"x").unwrap();
        fs::write(root.join("é"), b"").unwrap();
        symlink("../nowhere", root.join("dangling")).unwrap();
        for p in ["B", "a b", "é"] {
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(root.join(non_utf8), fs::Permissions::from_mode(0o755)).unwrap();

        // Byte order: "B" < "a b" < "dangling" < "empty" < "é" (0xc3) < 0xff.
        let expected = nar(directory(&[
            entry(b"B", regular(b"", false)),
            entry(b"a b", regular(b"12345678", false)),
            entry(b"dangling", spelled::symlink(b"../nowhere")),
            entry(b"empty", directory(&[])),
            entry("é".as_bytes(), regular(b"", false)),
            entry(b"\xff\xfe", regular(b"x", true)),
        ]));
        assert_eq!(dump_vec(&root), expected);
    }

    #[test]
    fn symlink_at_top_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        symlink("/etc/passwd", &link).unwrap();
        assert_eq!(dump_vec(&link), nar(spelled::symlink(b"/etc/passwd")));
    }

    #[test]
    fn refuses_fifo_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = dump(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            NarError::UnsupportedFileType { kind: "FIFO", .. }
        ));
        assert!(err.to_string().contains("pipe"), "{err}");
    }

    #[test]
    fn missing_path_names_it() {
        let err = dump(Path::new("/nonexistent/narcache"), &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/narcache: "),
            "{err}"
        );
    }
}
