//! The hot path of narcache: NAR serialisation and checking, hashing,
//! compression, reference scanning, reading Nix's database.
//! Pure Rust, no Node: the `narcache-node` crate binds it to JavaScript.

pub mod compress;
pub mod digest;
pub mod durable;
pub mod files;
pub mod nar;
pub mod nix32;
pub mod pack;
pub mod refscan;
pub mod store_db;
pub mod store_scan;
pub mod verify;

pub use compress::{
    compress_bytes, decompress_bytes, Compression, CompressionError, NarCompression,
};
pub use durable::{publish_files, sync_files, NewFile, PublishError, SyncError};
pub use nar::NarIdentity;
pub use pack::{pack, pack_into, PackError, PackOptions, Packed, Progress};
pub use store_db::{read_closure, DbPathInfo, StoreDbError};
pub use store_scan::{scan_closure, ScanError, ScannedPath};
pub use verify::{verify, verify_reader, NarCheck, VerifyError};
