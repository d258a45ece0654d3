//! NAR (Nix ARchive): the serialisation of a store path that Nix hashes,
//! signs and ships in binary caches. [`dump`] writes one from a file system
//! tree, [`parse`] reads one back and checks it, both streaming; either
//! may show its entries to a [`Visit`] such as [`Listing`].

mod dump;
mod listing;
mod parse;

pub(crate) use dump::COPY_BUFFER;
pub use dump::{dump, dump_visited, NarError};
pub use listing::{DebugInfoMembers, Listing, NarIndex};
pub use parse::{
    parse, Expected, Found, Node, NodeKind, ParseError, Visit, MAX_DEPTH, MAX_NAME, MAX_PATH,
    MAX_TARGET,
};

use crate::digest::Sha256Hash;

/// What names a NAR in a narinfo: its SHA-256 (`NarHash`) and size (`NarSize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NarIdentity {
    pub hash: Sha256Hash,
    pub size: u64,
}

/// The NAR grammar spelled out by hand, independent of the writer and the
/// parser, to build expected and malformed NARs in tests.
#[cfg(test)]
pub(crate) mod spelled {
    /// A NAR string: u64 little-endian length, the bytes, zero padding.
    pub fn s(bytes: &[u8]) -> Vec<u8> {
        let mut v = (bytes.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(bytes);
        v.resize(v.len() + (8 - bytes.len() % 8) % 8, 0);
        v
    }

    pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    pub fn nar(node: Vec<u8>) -> Vec<u8> {
        cat(&[s(b"nix-archive-1"), node])
    }

    pub fn regular(contents: &[u8], exec: bool) -> Vec<u8> {
        let mut v = cat(&[s(b"("), s(b"type"), s(b"regular")]);
        if exec {
            v.extend(cat(&[s(b"executable"), s(b"")]));
        }
        v.extend(cat(&[s(b"contents"), s(contents), s(b")")]));
        v
    }

    pub fn symlink(target: &[u8]) -> Vec<u8> {
        cat(&[
            s(b"("),
            s(b"type"),
            s(b"symlink"),
            s(b"target"),
            s(target),
            s(b")"),
        ])
    }

    pub fn directory(entries: &[Vec<u8>]) -> Vec<u8> {
        cat(&[
            s(b"("),
            s(b"type"),
            s(b"directory"),
            entries.concat(),
            s(b")"),
        ])
    }

    pub fn entry(name: &[u8], node: Vec<u8>) -> Vec<u8> {
        cat(&[
            s(b"entry"),
            s(b"("),
            s(b"name"),
            s(name),
            s(b"node"),
            node,
            s(b")"),
        ])
    }
}
