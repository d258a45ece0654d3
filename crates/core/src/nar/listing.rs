//! The NAR listing: the JSON file `<hash>.ls` that `nix copy --to
//! 'file://…?write-nar-listing=true'` writes beside a narinfo, exactly as
//! Nix 2.8 writes it (NixOS/nix src/libstore/nar-accessor.cc `listNar`,
//! src/libstore/binary-cache-store.cc, src/libutil/json.cc):
//!
//! ```text
//! {"version":1,"root":{"type":"directory","entries":{"bin":{"type":"directory","entries":{
//!   "hi":{"type":"regular","size":3,"executable":true,"narOffset":400},
//!   "link":{"type":"symlink","target":"hi"}}}}}}
//! ```
//!
//! on one line, keys in that order, `executable` only when true, entries in
//! NAR order (raw bytes, as Nix's `std::map` sorts them), `narOffset` the
//! offset of a file's contents in the uncompressed NAR. Names and targets
//! are Nix's raw bytes, escaped as Nix 2.8's own JSON writer does: `"`, `\`,
//! `\n`, `\r`, `\t`, other bytes below 0x20 as `\u00xx`, every other byte
//! (invalid UTF-8 included) as it is.
//!
//! [`Listing`] builds it from the nodes a NAR shows in order, so it comes
//! from the same pass that writes or reads the NAR.

use super::parse::{Node, NodeKind, Visit};

/// Collects the listing of one NAR; [`Listing::finish`] gives its bytes.
#[derive(Debug)]
pub struct Listing {
    json: Vec<u8>,
    /// Directories whose entries are still being listed.
    open: usize,
}

impl Default for Listing {
    fn default() -> Self {
        Self {
            json: b"{\"version\":1,\"root\":".to_vec(),
            open: 0,
        }
    }
}

impl Listing {
    /// The listing's bytes, once every node of the NAR has been seen.
    pub fn finish(mut self) -> Vec<u8> {
        self.close_to(0);
        self.json.push(b'}');
        self.json
    }

    fn close_to(&mut self, depth: usize) {
        while self.open > depth {
            self.json.extend_from_slice(b"}}");
            self.open -= 1;
        }
    }

    fn number(&mut self, n: u64) {
        self.json.extend_from_slice(n.to_string().as_bytes());
    }

    fn string(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let json = &mut self.json;
        json.push(b'"');
        for &b in bytes {
            match b {
                b'"' | b'\\' => json.extend_from_slice(&[b'\\', b]),
                b'\n' => json.extend_from_slice(b"\\n"),
                b'\r' => json.extend_from_slice(b"\\r"),
                b'\t' => json.extend_from_slice(b"\\t"),
                0..=0x1f => json.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
                _ => json.push(b),
            }
        }
        json.push(b'"');
    }
}

impl Visit for Listing {
    fn node(&mut self, node: &Node<'_>) {
        // Nodes come parents first, so a node's depth tells which of the
        // directories listed so far it closes.
        let depth = if node.path.is_empty() {
            0
        } else {
            node.path.iter().filter(|&&b| b == b'/').count() + 1
        };
        self.close_to(depth);
        if depth > 0 {
            if self.json.last() != Some(&b'{') {
                self.json.push(b',');
            }
            let name = node.path.rsplit(|&b| b == b'/').next().unwrap_or(node.path);
            self.string(name);
            self.json.push(b':');
        }
        match node.kind {
            NodeKind::Regular {
                executable,
                size,
                offset,
            } => {
                self.json
                    .extend_from_slice(b"{\"type\":\"regular\",\"size\":");
                self.number(size);
                if executable {
                    self.json.extend_from_slice(b",\"executable\":true");
                }
                // Nix leaves out an offset of 0, which no file's contents have.
                self.json.extend_from_slice(b",\"narOffset\":");
                self.number(offset);
                self.json.push(b'}');
            }
            NodeKind::Symlink { target } => {
                self.json
                    .extend_from_slice(b"{\"type\":\"symlink\",\"target\":");
                self.string(target);
                self.json.push(b'}');
            }
            NodeKind::Directory => {
                self.json
                    .extend_from_slice(b"{\"type\":\"directory\",\"entries\":{");
                self.open += 1;
            }
        }
    }
}

/// The files of a NAR that Nix's debug-info index links to
/// (`index-debug-info=true`): regular files
/// `lib/debug/.build-id/<2 hex>/<38 hex>.debug`, lowercase hex, as the
/// regular expressions of NixOS/nix src/libstore/binary-cache-store.cc
/// have them. Symlinks there are not indexed, as in Nix.
#[derive(Debug, Default)]
pub struct DebugInfoMembers {
    /// Their paths in the NAR (`lib/debug/.build-id/…`), in NAR order.
    pub found: Vec<String>,
}

const BUILD_ID_DIR: &[u8] = b"lib/debug/.build-id/";

impl Visit for DebugInfoMembers {
    fn node(&mut self, node: &Node<'_>) {
        if !matches!(node.kind, NodeKind::Regular { .. }) {
            return;
        }
        let Some(rest) = node.path.strip_prefix(BUILD_ID_DIR) else {
            return;
        };
        let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let matches = rest.len() == 2 + 1 + 38 + 6
            && hex(&rest[..2])
            && rest[2] == b'/'
            && hex(&rest[3..41])
            && &rest[41..] == b".debug";
        if matches {
            // Only ASCII: valid UTF-8.
            self.found
                .push(String::from_utf8_lossy(node.path).into_owned());
        }
    }
}

/// Either of the above, or both, from one pass.
#[derive(Debug, Default)]
pub struct NarIndex {
    pub listing: Option<Listing>,
    pub debug_info: Option<DebugInfoMembers>,
}

impl NarIndex {
    pub fn new(listing: bool, debug_info: bool) -> Self {
        Self {
            listing: listing.then(Listing::default),
            debug_info: debug_info.then(DebugInfoMembers::default),
        }
    }

    /// Whether there is anything to collect: if not, a pass need not visit.
    pub fn wanted(&self) -> bool {
        self.listing.is_some() || self.debug_info.is_some()
    }

    /// The listing's bytes and the debug-info members, of those asked for.
    pub fn finish(self) -> (Option<Vec<u8>>, Option<Vec<String>>) {
        (
            self.listing.map(Listing::finish),
            self.debug_info.map(|d| d.found),
        )
    }
}

impl Visit for NarIndex {
    fn node(&mut self, node: &Node<'_>) {
        if let Some(listing) = &mut self.listing {
            listing.node(node);
        }
        if let Some(debug_info) = &mut self.debug_info {
            debug_info.node(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nar::spelled::{self, directory, entry, nar, regular};
    use crate::nar::{dump_visited, parse};
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    fn listing_of(bytes: &[u8]) -> Vec<u8> {
        let mut listing = Listing::default();
        parse(bytes, &mut listing, Vec::new()).unwrap();
        listing.finish()
    }

    fn text_of(bytes: &[u8]) -> String {
        String::from_utf8(listing_of(bytes)).unwrap()
    }

    #[test]
    fn lists_as_nix_does() {
        // The example of issue 20, checked there against Nix 2.8.
        let bytes = nar(directory(&[entry(
            b"bin",
            directory(&[
                entry(b"hi", regular(b"hi\n", true)),
                entry(b"link", spelled::symlink(b"hi")),
            ]),
        )]));
        let offset = bytes.windows(3).position(|w| w == b"hi\n").unwrap();
        assert_eq!(
            text_of(&bytes),
            format!(
                "{{\"version\":1,\"root\":{{\"type\":\"directory\",\"entries\":{{\"bin\":{{\"type\":\"directory\",\"entries\":{{\
                 \"hi\":{{\"type\":\"regular\",\"size\":3,\"executable\":true,\"narOffset\":{offset}}},\
                 \"link\":{{\"type\":\"symlink\",\"target\":\"hi\"}}}}}}}}}}}}"
            )
        );
    }

    #[test]
    fn closes_directories_at_any_depth() {
        let bytes = nar(directory(&[
            entry(b"a", directory(&[entry(b"b", directory(&[]))])),
            entry(b"c", directory(&[])),
            entry(b"d", regular(b"", false)),
        ]));
        let text = text_of(&bytes);
        let offset = text.split("\"narOffset\":").nth(1).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"version\":1,\"root\":{{\"type\":\"directory\",\"entries\":{{\
                 \"a\":{{\"type\":\"directory\",\"entries\":{{\"b\":{{\"type\":\"directory\",\"entries\":{{}}}}}}}},\
                 \"c\":{{\"type\":\"directory\",\"entries\":{{}}}},\
                 \"d\":{{\"type\":\"regular\",\"size\":0,\"narOffset\":{offset}"
            )
        );
    }

    #[test]
    fn single_nodes_at_the_root() {
        assert_eq!(
            text_of(&nar(spelled::symlink(b"/x"))),
            r#"{"version":1,"root":{"type":"symlink","target":"/x"}}"#
        );
        assert_eq!(
            text_of(&nar(regular(b"abc", false))),
            r#"{"version":1,"root":{"type":"regular","size":3,"narOffset":96}}"#
        );
    }

    #[test]
    fn escapes_as_nix_2_8() {
        let mut name = b"q\"b\\n\nr\rt\t\x01\x1f\x7f".to_vec();
        name.extend_from_slice("é".as_bytes());
        name.push(0xff);
        let bytes = nar(spelled::symlink(&name));
        let mut listing = Listing::default();
        parse(&bytes[..], &mut listing, Vec::new()).unwrap();
        let mut expected =
            br#"{"version":1,"root":{"type":"symlink","target":"q\"b\\n\nr\rt\t\u0001\u001f"#
                .to_vec();
        expected.push(0x7f);
        expected.extend_from_slice("é".as_bytes());
        expected.extend_from_slice(b"\xff\"}}");
        assert_eq!(listing.finish(), expected);
    }

    #[test]
    fn debug_info_members_as_nix_matches_them() {
        let id = "0123456789abcdef0123456789abcdef012345";
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("lib/debug/.build-id/ab");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{id}.debug")), b"elf").unwrap();
        // Not matched: uppercase, a short id, a symlink, another extension, a deeper file.
        fs::write(dir.join(format!("{}.debug", id.to_uppercase())), b"").unwrap();
        fs::write(dir.join("0123.debug"), b"").unwrap();
        std::os::unix::fs::symlink("x", dir.join(format!("{}.debug", &id.replace('0', "1"))))
            .unwrap();
        fs::write(dir.join(format!("{id}.dbg")), b"").unwrap();
        fs::create_dir_all(tree.path().join("lib/debug/.build-id/AB")).unwrap();
        fs::write(
            tree.path()
                .join(format!("lib/debug/.build-id/AB/{id}.debug")),
            b"",
        )
        .unwrap();
        let mut index = NarIndex::new(true, true);
        let mut bytes = Vec::new();
        dump_visited(tree.path(), &mut bytes, &mut index).unwrap();
        let (listing, members) = index.finish();
        assert_eq!(
            members.unwrap(),
            [format!("lib/debug/.build-id/ab/{id}.debug")]
        );
        // The pass that wrote the NAR lists what parsing it lists.
        assert_eq!(listing_of(&bytes), listing.unwrap());
    }

    #[test]
    fn dump_and_parse_list_the_same_odd_tree() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path().join("root/");
        fs::create_dir(&root).unwrap();
        for name in [&b"a\nb"[..], b"\xff\xfe", "é".as_bytes(), b"q\"", b"\x01"] {
            let name = std::ffi::OsStr::from_bytes(name);
            fs::create_dir(root.join(name)).unwrap();
            fs::write(root.join(name).join("f"), b"12345678x").unwrap();
        }
        fs::set_permissions(root.join("é/f"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("\t", root.join("s")).unwrap();
        let mut listing = Listing::default();
        let mut bytes = Vec::new();
        dump_visited(&root, &mut bytes, &mut listing).unwrap();
        assert_eq!(listing.finish(), listing_of(&bytes));
    }
}
