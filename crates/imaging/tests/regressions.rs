//! Inputs that once crashed, hung or exhausted memory under the fuzz targets (`fuzz/`), and
//! hand-made hostile headers: each must decode or fail with a one-line reason, quickly.

use simcase_imaging::{decode_items, Axis, DecodeOptions, FrameSelect};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn check(name: &str, bytes: &[u8]) {
    for axis in [Axis::Axial, Axis::Sagittal] {
        let opts = DecodeOptions {
            max_pixels: Some(16_000_000),
            frames: FrameSelect::All,
            axis,
            ..Default::default()
        };
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| decode_items(bytes, &opts))
            .unwrap_or_else(|_| panic!("{name}: panicked"));
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name}: took {:?}",
            t.elapsed()
        );
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{name}: {msg:?}");
        }
    }
}

#[test]
fn recorded_fuzz_inputs_fail_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        check(
            &e.file_name().to_string_lossy(),
            &std::fs::read(e.path()).unwrap(),
        );
        n += 1;
    }
    assert!(n >= 1);
}

/// Preamble, "DICM" and a meta group of one element: (0002,0010) UI "1.2.840.10008.1.2.1"
/// (explicit VR little endian).
fn explicit_le_preamble() -> Vec<u8> {
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    let ts = b"1.2.840.10008.1.2.1\0";
    f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    f.extend_from_slice(&(ts.len() as u16).to_le_bytes());
    f.extend_from_slice(ts);
    f
}

/// Declared lengths beyond the file are refused before dicom-rs reserves them.
#[test]
fn dicom_lengths_beyond_the_file_are_refused() {
    let mut f = explicit_le_preamble();
    // (0010,0010) OB claiming 3 GB, followed by 4 bytes.
    f.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
    f.extend_from_slice(&3_000_000_000u32.to_le_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    let e = decode_items(&f, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("claims 3000000000 bytes, 4 left"), "{e}");
    check("hostile-ob", &f);
    // Deeply nested undefined-length sequences stop at a depth limit instead of recursing on.
    let mut g = f[..f.len() - 16].to_vec();
    for _ in 0..200 {
        g.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        g.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    check("deep-sq", &g);
}

/// A data set written in implicit VR under a meta group that says explicit: its lengths are
/// checked and read the implicit way. Read as explicit, the bytes of its first value would
/// be an unknown VR with a 3.9 GB length, which dicom-rs would reserve.
#[test]
fn implicit_data_set_under_an_explicit_meta_group_is_read_as_implicit() {
    let mut f = explicit_le_preamble();
    // Implicit: (0008,8B1F), 4 bytes, value 00 00 00 EC. Explicit: VR "\x04\0", then a
    // reserved field and the length 0xEC000000.
    f.extend_from_slice(&[0x08, 0x00, 0x1F, 0x8B, 4, 0, 0, 0, 0, 0, 0, 0xEC]);
    let e = decode_items(&f, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pixel data"), "{e}");
    check("implicit-under-explicit", &f);
}

/// Volume headers that claim more voxels than exist, or than the limit allows.
#[test]
fn hostile_volume_headers_are_refused() {
    let nrrd =
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4000 4000 4000\nencoding: gzip\n\n\x1f\x8b";
    check("nrrd-huge", nrrd);
    let mut nii = vec![0u8; 352];
    nii[0..4].copy_from_slice(&348i32.to_le_bytes());
    nii[40..42].copy_from_slice(&3i16.to_le_bytes());
    for (k, d) in [(42, 30000u16), (44, 30000), (46, 30000)] {
        nii[k..k + 2].copy_from_slice(&d.to_le_bytes());
    }
    nii[70..72].copy_from_slice(&16i16.to_le_bytes()); // float32
    nii[72..74].copy_from_slice(&32i16.to_le_bytes());
    nii[108..112].copy_from_slice(&352f32.to_le_bytes());
    nii[344..348].copy_from_slice(b"n+1\0");
    let e = decode_items(&nii, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
    check("nifti-huge", &nii);
}
