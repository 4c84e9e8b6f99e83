//! A folder of decompression bombs (valid files whose dimensions are huge and whose bytes are
//! few) beside real images, indexed by the real `simcase index` with a small decode budget and
//! several decode threads: the run completes, the real images are indexed, the bombs are
//! reduced or refused, and the process's peak RSS stays under the budget plus fixed overheads.

mod common;
use common::*;
use std::io::Write;
use std::path::Path;

/// A valid `w`×`h` 8-bit grey PNG, all one level: a few hundred KB for 64 M pixels.
fn grey_png(w: u32, h: u32, level: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let mut row = vec![level; w as usize + 1];
    row[0] = 0; // filter: none
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A gzip-wrapped NIfTI-1 volume of `dims` int16 zeros: 400 MB of voxels in well under 1 MB.
fn nifti_gz_bomb(dims: [u16; 3]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let dim = [
        3i16,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&4i16.to_le_bytes()); // datatype: int16
    h[72..74].copy_from_slice(&16i16.to_le_bytes()); // bitpix
    for i in 0..4 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes()); // pixdim
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    h[344..348].copy_from_slice(b"n+1\0");
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&h).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let total = 2 * dims.iter().map(|&d| u64::from(d)).product::<u64>();
    let mut left = total;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        z.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    z.finish().unwrap()
}

/// Run `cmd` to completion; its exit status and peak RSS in MiB (the kernel's own count of
/// this child, from `wait4`).
#[allow(clippy::zombie_processes)] // reaped by `wait4` below, which also gives its peak RSS
fn run_measured(cmd: &mut std::process::Command) -> (bool, f64, String) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (std's handle is dropped unwaited);
    // `status` and `usage` are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let log = reader.join().unwrap();
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss as f64 / 1024.0,
        log,
    )
}

/// Decode budget of the run (MiB), and what the process may hold beyond it: the model
/// (dinov2-s, 88 MB of weights, plus a batch's activations), the allocator's and the
/// runtime's own, and one bomb file's bytes per decode thread.
const BUDGET_MB: f64 = 160.0;
const OVERHEAD_MB: f64 = 640.0;

#[test]
fn a_folder_of_bombs_indexes_within_the_decode_budget() {
    let dir = tmp("bombs");
    let src = dir.join("files");
    std::fs::create_dir_all(&src).unwrap();
    // Bombs: four 8000×8000 grey PNGs (64 M pixels each: 1.1 GB as float RGB at full size, so
    // four decode threads at once would need 4.4 GB), a 7000×7000 JPEG, and a gzip-wrapped
    // 1000×1000×200 int16 NIfTI (400 MB inflated, 2.4 GB of slices) whose estimate is more
    // than the whole budget.
    for (i, level) in [0u8, 60, 120, 250].into_iter().enumerate() {
        std::fs::write(
            src.join(format!("bomb{i}.png")),
            grey_png(8000, 8000, level),
        )
        .unwrap();
    }
    let jpeg = {
        let img = image::GrayImage::from_fn(7000, 7000, |x, y| {
            image::Luma([if (x / 500 + y / 500).is_multiple_of(2) {
                30
            } else {
                220
            }])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    std::fs::write(src.join("bomb.jpg"), &jpeg).unwrap();
    std::fs::write(src.join("bomb.nii.gz"), nifti_gz_bomb([1000, 1000, 200])).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let len = f.unwrap().metadata().unwrap().len();
        assert!(len < 2 << 20, "bombs are small files: {len} bytes");
    }
    // A 4 GiB file (sparse): larger than the whole budget, refused before it is read.
    std::fs::File::create(src.join("huge.dcm"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    // Real images beside them.
    let real = [
        "images/busi/benign_136.png",
        "images/iqothnccd_lung_ct/Normal_case_372.jpg",
    ];
    for rel in real {
        let p = data().join(rel);
        std::fs::copy(&p, src.join(p.file_name().unwrap()))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }

    let index = dir.join("index");
    let (ok, peak_mb, log) = run_measured(
        bin()
            .args([
                "index",
                "--quiet",
                "--decode-threads",
                "4",
                "--decode-budget-mb",
            ])
            .arg(format!("{BUDGET_MB}"))
            .arg("--index")
            .arg(&index)
            .arg(&src),
    );
    println!("simcase index over bombs: peak RSS {peak_mb:.0} MiB (budget {BUDGET_MB} MiB)\n{log}");
    assert!(ok, "the run failed:\n{log}");
    let reader = simcase_index::Reader::open(&index).unwrap();
    let items = reader.items().unwrap();
    let indexed: Vec<String> = items
        .iter()
        .map(|i| {
            Path::new(&i.meta.path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // Every real image, every PNG bomb (reduced while decoding) and the JPEG (DCT-scaled).
    for f in std::fs::read_dir(&src).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        if name != "bomb.nii.gz" && name != "huge.dcm" {
            assert!(
                indexed.contains(&name),
                "{name} not indexed: {indexed:?}\n{log}"
            );
        }
    }
    // The volume is refused cleanly, naming the bytes it would need.
    let errors = reader.errors().unwrap();
    let nii = errors
        .iter()
        .find(|(p, _)| p.ends_with("bomb.nii.gz"))
        .unwrap_or_else(|| panic!("no error for the volume bomb: {errors:?}"));
    assert!(nii.1.contains("decode budget"), "{nii:?}");
    let huge = errors
        .iter()
        .find(|(p, _)| p.ends_with("huge.dcm"))
        .unwrap_or_else(|| panic!("no error for the 4 GiB file: {errors:?}"));
    assert!(
        huge.1.contains("4294967296 bytes") && huge.1.contains("decode budget"),
        "{huge:?}"
    );
    assert!(
        peak_mb < BUDGET_MB + OVERHEAD_MB,
        "peak RSS {peak_mb:.0} MiB over the bound {} MiB",
        BUDGET_MB + OVERHEAD_MB
    );
}
