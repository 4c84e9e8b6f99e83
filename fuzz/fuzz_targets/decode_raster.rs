//! PNG and JPEG decode, including the header-first pixel limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simcase_imaging::{decode_bytes, header_dimensions, sniff, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    if let Some(f) = sniff(data) {
        let _ = header_dimensions(data, f);
    }
    let opts = DecodeOptions {
        max_pixels: Some(16_000_000),
        ..Default::default()
    };
    let _ = decode_bytes(data, &opts);
});
