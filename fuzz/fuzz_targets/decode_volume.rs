//! NIfTI-1 (plain and gzip) and NRRD volumes, sliced along each axis.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simcase_imaging::{decode_items, Axis, DecodeOptions};

fuzz_target!(|data: &[u8]| {
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
