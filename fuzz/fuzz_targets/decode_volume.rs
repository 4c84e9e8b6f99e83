//! NIfTI-1 (plain and gzip) and NRRD volumes, sliced along each axis.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simcase_imaging::{decode_items, Axis, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    // simcase contains codec panics (a per-file error); libfuzzer-sys's hook would abort on
    // them anyway. Panics that escape decode_items still abort in fuzz_target!'s wrapper.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    for axis in [Axis::Axial, Axis::Coronal, Axis::Sagittal] {
        let opts = DecodeOptions {
            max_pixels: Some(16_000_000),
            axis,
            ..Default::default()
        };
        if decode_items(data, &opts).is_err() {
            break;
        }
    }
});
