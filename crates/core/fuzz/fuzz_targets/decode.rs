//! Any input, read as an xz or a zstd stream (the first byte chooses) and
//! parsed as a NAR: errors only, no panic, and memory within the
//! decompressor's limit however much the stream claims to expand to.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use narcache_core::compress::Decoder;
use narcache_core::nar;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, stream)) = data.split_first() else {
        return;
    };
    let decoder: Box<dyn Read> = match choice & 1 {
        0 => Box::new(Decoder::xz(stream).unwrap()),
        _ => Box::new(Decoder::zstd(stream).unwrap()),
    };
    let _ = nar::parse(decoder, &mut (), Vec::new());
});
