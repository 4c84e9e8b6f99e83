//! PNG and JPEG decode, including the header-first pixel limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simcase_imaging::{decode_bytes, header_dimensions, sniff, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    // simcase contains codec panics (a per-file error); libfuzzer-sys's hook would abort on
    // them anyway. Panics that escape decode_items still abort in fuzz_target!'s wrapper.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    if let Some(f) = sniff(data) {
        let _ = header_dimensions(data, f);
    }
    let opts = DecodeOptions {
        max_pixels: Some(16_000_000),
        ..Default::default()
    };
    let _ = decode_bytes(data, &opts);
});
