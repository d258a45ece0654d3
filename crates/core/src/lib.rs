//! The hot path of narcache: NAR serialisation, hashing, compression.
//! Pure Rust, no Node: the `narcache-node` crate binds it to JavaScript.

pub mod compress;
pub mod digest;
pub mod nar;
pub mod nix32;
pub mod pack;

pub use compress::{Compression, CompressionError};
pub use pack::{pack, NarIdentity, PackError, PackOptions, Packed, Progress};
