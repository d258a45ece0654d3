//! The hot path of narcache: NAR serialisation and checking, hashing,
//! compression.
//! Pure Rust, no Node: the `narcache-node` crate binds it to JavaScript.

pub mod compress;
pub mod digest;
pub mod nar;
pub mod nix32;
pub mod pack;
pub mod verify;

pub use compress::{Compression, CompressionError};
pub use nar::NarIdentity;
pub use pack::{pack, pack_into, PackError, PackOptions, Packed, Progress};
pub use verify::{verify, verify_reader, NarCheck, VerifyError};
