//! Inputs that once crashed, hung or exhausted memory under the fuzz targets (`fuzz/`), and
//! hand-made hostile headers: each must fail with its own expected one-line reason, quickly,
//! and within a memory limit.
//!
//! Each test runs its body in a child process (this test binary, re-run on that one test)
//! whose address space is capped by `ulimit -v` (RLIMIT_AS), so a return of the bugs that
//! reserved gigabytes from a few kilobytes aborts the child and fails the test on any
//! machine, however much memory it has.

use simcase_imaging::{decode_items, Axis, DecodeOptions, FrameSelect};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The cap on the child's address space. The bugs reserved 3–4.2 GB; decoding these inputs
/// needs well under this (the child prints its peak, `VmPeak`).
const ADDRESS_SPACE_KB: u64 = 1 << 20; // 1 GiB
const CHILD: &str = "SIMCASE_REGRESSION_CHILD";

/// Run the calling test `name` again in a child process under the memory limit, and fail
/// unless it ran there and passed. Returns true in the child, where the body should run.
fn in_limited_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KB} || exit 99; exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        // Few malloc arenas: each reserves 64 MB of address space per thread.
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} under a {ADDRESS_SPACE_KB} KB address-space limit: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    print!("{stdout}");
    false
}

/// Peak virtual memory of this process, from /proc (Linux), for the log.
fn vm_peak() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmPeak"))
                .map(String::from)
        })
        .unwrap_or_default()
}

/// Decode `bytes` along two axes; each must give an error containing `want`, on one line,
/// within 10 s, without panicking.
fn check(name: &str, bytes: &[u8], want: &str) {
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
        let msg = match r {
            Ok(items) => panic!("{name}: decoded {} items; expected {want:?}", items.len()),
            Err(e) => e.to_string(),
        };
        assert!(!msg.contains('\n'), "{name}: {msg:?}");
        assert!(msg.contains(want), "{name}: {msg:?}, expected {want:?}");
        if axis == Axis::Axial {
            println!("{name}: {msg}");
        }
    }
}

/// Each recorded input and the reason it must be refused with: the check that fuzzing
/// showed was missing, not just any error.
const RECORDED: [(&str, &str); 7] = [
    // Declared lengths beyond their container, refused before dicom-rs reserves them: a
    // bare data set, a deflated one, OB inside a sequence item, a second Pixel Data header,
    // an undefined-length UN sequence.
    (
        "bare-dataset-oom.bin",
        "(0008,8B1F) claims 3959422976 bytes",
    ),
    (
        "dicom-oom-deflated.dcm",
        "(D4D4,D4D4) claims 3570717908 bytes",
    ),
    (
        "dicom-oom-ob-in-item.dcm",
        "(0020,4900) claims 4294849842 bytes",
    ),
    (
        "dicom-oom-second-pixel-data.dcm",
        "pixel data claims 4294967049 bytes",
    ),
    (
        "dicom-oom-un-sequence.dcm",
        "(0008,1115) claims 3758161918 bytes",
    ),
    // dicom-rs's RLE decoder panics on a short segment; the panic is contained.
    ("dicom-rle-panic-2.dcm", "decoder failed on malformed data"),
    (
        "dicom-rle-short-segment-panic.dcm",
        "decoder failed on malformed data",
    ),
];

#[test]
fn recorded_fuzz_inputs_fail_cleanly() {
    if !in_limited_child("recorded_fuzz_inputs_fail_cleanly") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let listed: Vec<&str> = RECORDED.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files, listed,
        "every recorded input needs its expected error"
    );
    for (file, want) in RECORDED {
        check(file, &std::fs::read(dir.join(file)).unwrap(), want);
    }
    println!("{}", vm_peak());
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
    if !in_limited_child("dicom_lengths_beyond_the_file_are_refused") {
        return;
    }
    let mut f = explicit_le_preamble();
    // (0010,0010) OB claiming 3 GB, followed by 4 bytes.
    f.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
    f.extend_from_slice(&3_000_000_000u32.to_le_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    check("hostile-ob", &f, "claims 3000000000 bytes, 4 left");
    // Deeply nested undefined-length sequences stop at a depth limit instead of recursing on.
    let mut g = f[..f.len() - 16].to_vec();
    for _ in 0..200 {
        g.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        g.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    check("deep-sq", &g, "nested deeper than 64");
}

/// A data set written in implicit VR under a meta group that says explicit: its lengths are
/// checked and read the implicit way. Read as explicit, the bytes of its first value would
/// be an unknown VR with a 3.9 GB length, which dicom-rs would reserve.
#[test]
fn implicit_data_set_under_an_explicit_meta_group_is_read_as_implicit() {
    if !in_limited_child("implicit_data_set_under_an_explicit_meta_group_is_read_as_implicit") {
        return;
    }
    let mut f = explicit_le_preamble();
    // Implicit: (0008,8B1F), 4 bytes, value 00 00 00 EC. Explicit: VR "\x04\0", then a
    // reserved field and the length 0xEC000000.
    f.extend_from_slice(&[0x08, 0x00, 0x1F, 0x8B, 4, 0, 0, 0, 0, 0, 0, 0xEC]);
    check("implicit-under-explicit", &f, "no pixel data");
}

/// Volume headers that claim more voxels than exist, or than the limit allows.
#[test]
fn hostile_volume_headers_are_refused() {
    if !in_limited_child("hostile_volume_headers_are_refused") {
        return;
    }
    let nrrd =
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4000 4000 4000\nencoding: gzip\n\n\x1f\x8b";
    check("nrrd-huge", nrrd, "too large: 4000x16000000");
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
    check("nifti-huge", &nii, "too large: 30000x900000000");
}
