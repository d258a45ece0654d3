//! Any input: the parser returns (never panics, never allocates what the
//! input claims), and accepts only inputs that are one whole NAR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use narcache_core::nar::{self, Node, NodeKind, Visit};

/// Looks at everything it is shown, so that the visitor's inputs are
/// exercised as well.
#[derive(Default)]
struct Tally {
    bytes: u64,
    announced: u64,
}

impl Visit for Tally {
    fn node(&mut self, node: &Node<'_>) {
        assert!(node.path.len() <= nar::MAX_PATH);
        if let NodeKind::Regular { size, .. } = node.kind {
            self.announced = self.announced.saturating_add(size);
        }
    }
    fn contents(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tally = Tally::default();
    if let Ok(identity) = nar::parse(data, &mut tally, Vec::new()) {
        assert_eq!(identity.size, data.len() as u64);
        assert_eq!(tally.bytes, tally.announced);
    }
});
