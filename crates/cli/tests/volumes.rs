//! Volumes through `simcase index` and `search --group-by volume`: NIfTI-1 from the nibabel
//! wheel's test data and NRRD volumes from the pyradiomics 2.2.0 sdist (real CT and MR).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYRADIOMICS: (&str, &str) = (
    "https://files.pythonhosted.org/packages/ac/1d/5c1f83b03abf37f91389046f54844231f048c29974eb11b0d68b203d32c9/pyradiomics-2.2.0.tar.gz",
    "7435a912aa860660c1ab960dde72a5be2fc8394fd4fa2bd249fe2387b10a205f",
);

/// `nifti/` (nibabel's test volumes) and `nrrd/` (pyradiomics' lung CT and breast MR),
/// fetched once per target dir and checked by SHA-256.
fn volumes() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("volumes");
    fetched_once(&root, |root| {
        let nifti = root.join("nifti");
        std::fs::create_dir_all(&nifti).unwrap();
        let wheel = simcase_models::pip_fetch(
            "nibabel",
            "5.4.2",
            "553482c5f1e1034fc312edf6fb7f32236c0056439845d1c29293b7e8c98d4854",
            root,
        )
        .unwrap();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).unwrap();
            let name = f.name().to_string();
            if let Some(rel) = name.strip_prefix("nibabel/tests/data/") {
                if rel.ends_with(".nii") || rel.ends_with(".nii.gz") {
                    let mut out = std::fs::File::create(nifti.join(rel)).unwrap();
                    std::io::copy(&mut f, &mut out).unwrap();
                }
            }
        }
        std::fs::remove_file(&wheel).unwrap();
        let sdist = root.join("pyradiomics-2.2.0.tar.gz");
        run_ok(
            Command::new("curl")
                .args(["-fsSL", "-o"])
                .arg(&sdist)
                .arg(PYRADIOMICS.0),
        );
        let sha = simcase_models::install::sha256_hex(&std::fs::read(&sdist).unwrap());
        assert_eq!(sha, PYRADIOMICS.1, "pyradiomics sdist checksum");
        let nrrd = root.join("nrrd");
        std::fs::create_dir_all(&nrrd).unwrap();
        run_ok(
            Command::new("tar")
                .arg("xzf")
                .arg(&sdist)
                .arg("-C")
                .arg(&nrrd)
                .args(["--strip-components=2", "--wildcards"])
                .args(["*/data/lung1_image.nrrd", "*/data/breast1_image.nrrd"]),
        );
        std::fs::remove_file(&sdist).unwrap();
    })
}

fn items(index: &Path) -> Vec<simcase_index::Item> {
    simcase_index::Reader::open(index).unwrap().items().unwrap()
}

#[test]
fn volumes_index_as_slices_and_group_by_volume() {
    let root = volumes();
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = dir.join("index");
    let out = bin()
        .args(["index", "--quiet", "--slice-stride", "4", "--index"])
        .arg(&index)
        .arg(root.join("nifti"))
        .arg(root.join("nrrd"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Only the CIFTI matrix (not a volume) may fail, in one line.
    let reader = simcase_index::Reader::open(&index).unwrap();
    let errors = reader.errors().unwrap();
    assert!(errors.len() <= 1, "{errors:?}");
    assert!(!stderr.contains("example_nifti2"), "{stderr}");

    let all = items(&index);
    let lung: Vec<_> = all
        .iter()
        .filter(|i| i.meta.path.ends_with("lung1_image.nrrd"))
        .collect();
    // 48 axial slices, every 4th.
    assert_eq!(lung.len(), 12);
    for (k, it) in lung.iter().enumerate() {
        let e = &it.meta.extra;
        assert_eq!(e["axis"], "axial");
        assert_eq!(e["slice"].as_u64().unwrap(), 4 * k as u64);
        assert_eq!(e["slices"], 48);
        assert_eq!(e["volume"], lung[0].meta.extra["volume"]);
        assert_eq!(it.meta.format, "nrrd");
    }
    assert!(all
        .iter()
        .any(|i| i.meta.format == "nifti" && i.meta.path.ends_with(".nii.gz")));
    let volumes: std::collections::HashSet<String> = all
        .iter()
        .map(|i| i.meta.extra["volume"].as_str().unwrap().to_string())
        .collect();
    assert!(volumes.len() >= 6, "{volumes:?}");

    // Another axis of the same volume is a new view, not a duplicate.
    let nrrd = root.join("nrrd/lung1_image.nrrd");
    run_ok(
        bin()
            .args([
                "index",
                "--quiet",
                "--axis",
                "coronal",
                "--slice-stride",
                "128",
                "--index",
            ])
            .arg(&index)
            .arg(&nrrd),
    );
    let coronal: Vec<_> = items(&index)
        .into_iter()
        .filter(|i| i.meta.extra.get("axis").and_then(|a| a.as_str()) == Some("coronal"))
        .collect();
    assert_eq!(coronal.len(), 4);

    // A lung slice's nearest cases, grouped: distinct volumes, the query's own volume first.
    let q = lung[6].id;
    let out = run_ok(
        bin()
            .args([
                "search",
                "--json",
                "--group-by",
                "volume",
                "-k",
                "5",
                "--index",
            ])
            .arg(&index)
            .arg(format!("id:{q}")),
    );
    let hits: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let groups: Vec<&str> = hits.iter().map(|h| h["group"].as_str().unwrap()).collect();
    let mut distinct = groups.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), groups.len(), "{groups:?}");
    assert_eq!(
        groups[0],
        lung[0].meta.extra["volume"].as_str().unwrap(),
        "{out}"
    );
}

/// nibabel's NIfTI-2 example, read by simcase's own NIfTI-2 header reader: the shape, voxel
/// values and affine columns nibabel 5.4.2 reports for it, as `tools/make_nifti2_fixture.py`
/// wrote them to `tests/fixtures/nifti2.json` (from the same file, checked by SHA-256).
#[test]
fn nifti2_reads_as_nibabel_reads_it() {
    use std::io::Read;
    let fx_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti2.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx_path).unwrap()).unwrap();
    let gz = std::fs::read(volumes().join("nifti/example_nifti2.nii.gz")).unwrap();
    assert_eq!(
        simcase_models::install::sha256_hex(&gz),
        fx["sha256"].as_str().unwrap(),
        "not the file the fixture was made from"
    );
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(&bytes[4..8], b"n+2\0");
    let v = simcase_imaging::volume::read_nifti(&bytes, 1 << 30).unwrap();
    let shape: [usize; 3] = serde_json::from_value(fx["shape"].clone()).unwrap();
    assert_eq!(v.dims, shape);
    let [nx, ny, _] = shape;
    let voxels: Vec<[f64; 4]> = serde_json::from_value(fx["voxels"].clone()).unwrap();
    assert!(
        voxels.len() >= 8 + 64,
        "{} voxels in the fixture",
        voxels.len()
    );
    for [x, y, z, want] in voxels {
        let (x, y, z) = (x as usize, y as usize, z as usize);
        let got = v.data[x + nx * (y + ny * z)];
        assert_eq!(f64::from(got), want, "voxel ({x},{y},{z})");
    }
    let sum: f64 = v.data.iter().map(|&x| f64::from(x)).sum();
    let want_sum = fx["sum"].as_f64().unwrap();
    assert!(
        (sum - want_sum).abs() <= 1e-9 * want_sum.abs(),
        "sum {sum} vs nibabel's {want_sum}"
    );
    let dirs: [[f64; 3]; 3] = serde_json::from_value(fx["dirs"].clone()).unwrap();
    for (got, want) in v.dirs.iter().zip(dirs) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{:?} vs {dirs:?}", v.dirs);
        }
    }
}
