//! DICOM decode (every frame): parser, codecs (native, RLE, JPEG, JPEG-LS, JPEG 2000), LUTs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simcase_imaging::{decode_items, DecodeOptions, FrameSelect};

fuzz_target!(|data: &[u8]| {
    // simcase contains codec panics (a per-file error); libfuzzer-sys's hook would abort on
    // them anyway. Panics that escape decode_items still abort in fuzz_target!'s wrapper.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let opts = DecodeOptions {
        max_pixels: Some(16_000_000),
        frames: FrameSelect::All,
        keep_phi: true,
        ..Default::default()
    };
    // Raw data sets without a preamble are accepted too; give the mutator both shapes.
    let _ = decode_items(data, &opts);
    if data.len() > 4 && &data[..4] != b"DICM" {
        let mut framed = vec![0u8; 128];
        framed.extend_from_slice(b"DICM");
        framed.extend_from_slice(data);
        let _ = decode_items(&framed, &opts);
    }
});
