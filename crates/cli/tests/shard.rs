//! Sharded ingest end to end, through the real binary: three `simcase index --shard i/3`
//! processes (each way of naming the share: `I/N`, `auto/N` from a Kubernetes Indexed Job's
//! index, `SIMCASE_SHARD` with a Slurm array task id) split a manifest of real images into
//! disjoint shares that cover it; `simcase merge` joins them into an index equal to a
//! single-process one (items, metadata, vectors, search results, patient groups), adds
//! nothing when run again, and refuses indexes that would not join.

mod common;
use common::{bin, data, run_ok, tmp};
use simcase_index::{ItemMeta, Reader};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One salt for every job of the archive, as a cluster would give them (a secret).
const SALT: &str = "00112233445566778899aabbccddeeff";

/// Every environment variable that could pick a share, removed so that only the test's count.
const SHARD_VARS: [&str; 3] = [
    "SIMCASE_SHARD",
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
];

fn simcase() -> Command {
    let mut c = bin();
    for v in SHARD_VARS {
        c.env_remove(v);
    }
    c.env("SIMCASE_PATIENT_SALT", SALT);
    c
}

/// A manifest of `n` rows of dev.csv (every `step`-th), with absolute paths, leaving out rows
/// whose file has the bytes of one taken already (identical content is one item, stored
/// under whichever path came first: a single run and a merge may pick different ones).
/// Returns it and its rows' paths.
fn manifest(to: &Path, n: usize, step: usize) -> (PathBuf, Vec<PathBuf>) {
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_string()];
    let root = std::fs::canonicalize(data()).unwrap();
    let mut seen = HashSet::new();
    let mut paths = Vec::new();
    for l in lines.step_by(step) {
        let p = root.join(l.split(',').next().unwrap());
        if !seen.insert(std::fs::read(&p).unwrap()) {
            continue;
        }
        out.push(format!("{}/{l}", root.display()));
        paths.push(p);
        if paths.len() == n {
            break;
        }
    }
    assert_eq!(paths.len(), n, "dev.csv has too few distinct rows");
    let p = to.join("manifest.csv");
    std::fs::write(&p, out.join("\n") + "\n").unwrap();
    (p, paths)
}

/// Every item of an index by content key: metadata and vector.
fn contents(dir: &Path) -> BTreeMap<String, (ItemMeta, Vec<f32>)> {
    let r = Reader::open(dir).unwrap();
    r.items()
        .unwrap()
        .into_iter()
        .map(|it| {
            let v = r.vector(it.id).unwrap().to_vec();
            (it.meta.hash.clone(), (it.meta, v))
        })
        .collect()
}

/// `simcase search QUERY --index DIR --json` (plus `extra`) as (path, score) pairs.
fn search(index: &Path, query: &Path, extra: &[&str]) -> Vec<(String, f64)> {
    let out = run_ok(
        simcase()
            .arg("search")
            .arg(query)
            .arg("--index")
            .arg(index)
            .args(["-k", "8", "--json"])
            .args(extra),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A failed command's error: its last line on stderr, the only one that starts `error:`.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{cmd:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{err}");
    assert_eq!(err.matches("error").count(), 1, "{err}");
    last
}

#[test]
fn three_shards_merged_equal_one_index_of_the_same_input() {
    let t0 = std::time::Instant::now();
    let d = tmp("shard");
    let n = 96;
    let (m, paths) = manifest(&d, n, 9);
    let index = |dir: &Path| {
        let mut c = simcase();
        c.args(["index", "--quiet", "--manifest"])
            .arg(&m)
            .arg("--index")
            .arg(dir);
        c
    };
    // Bad share values fail at once, in one line naming the value.
    let e = fails(index(&d.join("bad")).args(["--shard", "3/3"]));
    assert_eq!(
        e,
        "error: --shard 3/3: I=3 is not below N=3 (shares are 0-based: 0..=2)"
    );
    let e = fails(index(&d.join("bad")).args(["--shard", "auto/3"]));
    assert!(e.contains("auto needs JOB_COMPLETION_INDEX"), "{e}");
    let e = fails(index(&d.join("bad")).env("SIMCASE_SHARD", "1/x"));
    assert!(e.starts_with("error: --shard 1/x: N must be"), "{e}");
    let e = fails(index(&d.join("bad")).env("SIMCASE_PATIENT_SALT", "not-hex-secret-value"));
    assert!(
        e.starts_with("error: SIMCASE_PATIENT_SALT is set but is not 32 to 128 hex digits"),
        "{e}"
    );
    assert!(!e.contains("secret"), "the value is never shown: {e}");
    assert!(
        !d.join("bad").exists(),
        "nothing written for a bad share or salt"
    );

    // Three independent jobs, run at once, each naming its share another way.
    let shards: Vec<PathBuf> = (0..3).map(|i| d.join(format!("shard{i}"))).collect();
    let mut jobs = Vec::new();
    for (i, dir) in shards.iter().enumerate() {
        let mut c = index(dir);
        match i {
            0 => c.args(["--shard", "0/3"]),
            1 => c
                .args(["--shard", "auto/3"])
                .env("JOB_COMPLETION_INDEX", "1"),
            _ => c
                .env("SIMCASE_SHARD", "auto/3")
                .env("SLURM_ARRAY_TASK_ID", "2"),
        };
        jobs.push((c.stderr(std::process::Stdio::piped()).spawn().unwrap(), i));
    }
    let single = d.join("single");
    run_ok(&mut index(&single));
    for (job, i) in jobs {
        let out = job.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "shard {i}: {err}");
        assert!(err.contains(&format!("shard {i}/3: ")), "{err}");
        assert!(err.contains(&format!(" of {n} inputs")), "{err}");
    }
    let t_index = t0.elapsed().as_secs_f64();

    // The shares are disjoint, cover the input, are what the rule predicts, and are not
    // lopsided.
    let whole = contents(&single);
    assert_eq!(whole.len(), n);
    let parts: Vec<_> = shards.iter().map(|s| contents(s)).collect();
    let mut union = BTreeSet::new();
    let roots = [simcase_ingest::manifest_root(&m)];
    for (i, part) in parts.iter().enumerate() {
        assert!(part.len() >= n / 5, "shard {i}: {} of {n}", part.len());
        for k in part.keys() {
            assert!(union.insert(k.clone()), "{k} in two shares");
        }
        let stored: BTreeSet<PathBuf> = part.values().map(|(m, _)| m.path.clone().into()).collect();
        let share = simcase_ingest::Shard {
            index: i as u32,
            count: 3,
        };
        let predicted: BTreeSet<PathBuf> = paths
            .iter()
            .filter(|p| share.holds(&simcase_ingest::shard_key(p, &roots)))
            .cloned()
            .collect();
        assert_eq!(stored, predicted, "shard {i}");
    }
    assert_eq!(union, whole.keys().cloned().collect());

    // Merged, they are the single index: items, every stored field, vectors.
    let merged = d.join("merged");
    let merge = || {
        let mut c = bin();
        c.arg("merge").args(&shards).arg("--into").arg(&merged);
        c
    };
    let out = merge().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("merged 3 indexes: {n} added, 0 already present")),
        "{err}"
    );
    let got = contents(&merged);
    assert_eq!(got.len(), n);
    let mut worst = 0f32;
    for (k, (meta, v)) in &whole {
        let (gm, gv) = &got[k];
        assert_eq!(gm, meta, "{k}: metadata");
        assert!(
            meta.label.is_some() && meta.patient_key.is_some(),
            "{meta:?}"
        );
        for (a, b) in v.iter().zip(gv) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst <= 1e-6, "vectors differ by {worst}");
    // The same answers, by image and by patient (keys made with one salt join).
    let queries = [
        "images/busi/benign_136.png",
        "images/brain_tumor_mri/Te-gl_0010.jpg",
        "images/ct_kidney/normal_0011.jpg",
    ];
    let qs: Vec<PathBuf> = queries
        .iter()
        .map(|q| data().join(q))
        .filter(|q| q.exists())
        .chain(paths.iter().step_by(40).cloned())
        .collect();
    assert!(qs.len() >= 3, "{qs:?}");
    for q in &qs {
        for extra in [&[][..], &["--group-by", "patient"]] {
            let (a, b) = (search(&single, q, extra), search(&merged, q, extra));
            assert_eq!(a.len(), b.len(), "{q:?} {extra:?}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.0, y.0, "{q:?} {extra:?}: {a:?} vs {b:?}");
                assert!((x.1 - y.1).abs() <= 1e-5, "{q:?}: {x:?} vs {y:?}");
            }
        }
    }

    // Again: nothing added, nothing changed.
    let out = run_ok(merge().arg("--quiet"));
    assert!(out.is_empty());
    let again = merge().output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(&format!("merged 3 indexes: 0 added, {n} already present")),
        "{err}"
    );
    assert_eq!(contents(&merged).len(), n);

    // Another model, or patient keys under another salt: refused, naming the folder.
    let other = d.join("other-model");
    {
        let mut w = simcase_index::Writer::open(&other, "efficientnet-lite0", 1280).unwrap();
        let meta = ItemMeta {
            path: "/x.png".into(),
            hash: "ab".repeat(32),
            format: "png".into(),
            ..Default::default()
        };
        w.add(&[(meta, vec![0.0; 1280])]).unwrap();
    }
    let e = fails(bin().arg("merge").arg(&other).arg("--into").arg(&merged));
    assert_eq!(
        e,
        format!(
            "error: {} holds 1280-d efficientnet-lite0 embeddings, not 384-d dinov2-s as {}: \
             merge only indexes of one model",
            other.display(),
            merged.display()
        )
    );
    let salted = d.join("other-salt");
    {
        // Made without SIMCASE_PATIENT_SALT (this process has none): a random salt.
        assert!(std::env::var_os("SIMCASE_PATIENT_SALT").is_none());
        let mut w = simcase_index::Writer::open(&salted, "dinov2-s", 384).unwrap();
        let meta = ItemMeta {
            path: "/y.png".into(),
            hash: "cd".repeat(32),
            format: "png".into(),
            patient_key: Some(w.settings().patient_key("P1")),
            ..Default::default()
        };
        w.add(&[(meta, vec![0.05; 384])]).unwrap();
    }
    let e = fails(bin().arg("merge").arg(&salted).arg("--into").arg(&merged));
    assert!(
        e.starts_with(&format!(
            "error: {} makes patient keys with another salt than {}'s",
            salted.display(),
            merged.display()
        )),
        "{e}"
    );
    // And a shard job pointed at an index of another salt stops before embedding anything.
    let e = fails(index(&salted).args(["--shard", "0/3"]));
    assert!(
        e.contains("makes patient keys with another salt than SIMCASE_PATIENT_SALT"),
        "{e}"
    );
    assert_eq!(contents(&merged).len(), n, "refusals change nothing");
    eprintln!(
        "3 shards + single index of {n} images: {t_index:.1}s; whole test {:.1}s; vectors \
         differ by at most {worst}",
        t0.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Walked folders shard by the path below the folder given, whatever it is called: the
/// same files fall to share 0 through a second mount point (a symlink here). Files that are
/// not images cost no embedding: each share records its own as failures, and the merge
/// carries the records over.
#[test]
fn walked_folders_shard_by_the_path_below_them_and_merge_their_failures() {
    let d = tmp("shard-walk");
    let archive = d.join("archive");
    for i in 0..36 {
        let sub = archive.join(format!("p{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("IM{i:03}.dat")),
            format!("not an image {i}"),
        )
        .unwrap();
    }
    let mount = d.join("mnt-b");
    std::os::unix::fs::symlink(&archive, &mount).unwrap();
    // The paths failures are recorded under (canonical), relative to the archive.
    let failed = |index: &Path| -> BTreeSet<String> {
        simcase_index::store::failures(index)
            .unwrap()
            .into_iter()
            .map(|f| {
                let p = PathBuf::from(f.path);
                p.strip_prefix(std::fs::canonicalize(&archive).unwrap())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let shard = |root: &Path, i: usize, dir: &Path| {
        let out = simcase()
            .args(["index", "--quiet", "--shard", &format!("{i}/3")])
            .arg(root)
            .arg("--index")
            .arg(dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "every file failed: {err}");
        assert!(err.contains(&format!("shard {i}/3: ")), "{err}");
    };
    let dirs: Vec<PathBuf> = (0..3).map(|i| d.join(format!("s{i}"))).collect();
    let mut all = BTreeSet::new();
    for (i, dir) in dirs.iter().enumerate() {
        shard(&archive, i, dir);
        let got = failed(dir);
        let share = simcase_ingest::Shard {
            index: i as u32,
            count: 3,
        };
        let want: BTreeSet<String> = (0..36)
            .map(|j| format!("p{}/IM{j:03}.dat", j % 4))
            .filter(|k| share.holds(k))
            .collect();
        assert_eq!(got, want, "share {i}");
        assert!(!got.is_empty());
        for k in got {
            assert!(all.insert(k), "in two shares");
        }
    }
    assert_eq!(all.len(), 36);
    let other = d.join("s0-other-mount");
    shard(&mount, 0, &other);
    assert_eq!(
        failed(&other),
        failed(&dirs[0]),
        "another mount point, the same share"
    );
    let merged = d.join("merged");
    let out = run_ok(bin().arg("merge").args(&dirs).arg("--into").arg(&merged));
    assert!(out.is_empty());
    let got = failed(&merged);
    assert_eq!(got, all, "every share's failures");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A merge killed (SIGKILL) after some commits leaves the committed part; running it again
/// adds the rest, and the result is the input, byte for byte.
#[test]
fn a_killed_merge_resumes_and_ends_equal_to_its_input() {
    let d = tmp("shard-kill");
    let (src, dst) = (d.join("src"), d.join("dst"));
    let rows = 16_000;
    {
        let mut w = simcase_index::Writer::open(&src, "dinov2-s", 384).unwrap();
        for start in (0..rows).step_by(4000) {
            let batch: Vec<_> = (start..start + 4000)
                .map(|i| {
                    let meta = ItemMeta {
                        path: format!("/arch/IM{i}.png"),
                        hash: format!("{:064x}", i as u128 * 0x9E37_79B9_7F4A_7C15),
                        format: "png".into(),
                        label: Some(format!("XR/chest/l{}", i % 7)),
                        ..Default::default()
                    };
                    let v: Vec<f32> = (0..384).map(|j| ((i * 31 + j) as f32).sin()).collect();
                    (meta, v)
                })
                .collect();
            w.add(&batch).unwrap();
        }
    }
    // Small batches: many commits, so that the kill lands between two of them.
    let mut job = bin()
        .arg("merge")
        .arg(&src)
        .arg("--into")
        .arg(&dst)
        .args(["--batch", "16"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let committed = |dir: &Path| {
        dir.join("index.sqlite").is_file() && Reader::open(dir).is_ok_and(|r| r.len() >= 1000)
    };
    while !committed(&dst) {
        assert!(t.elapsed().as_secs() < 120, "no commit seen");
        assert!(
            job.try_wait().unwrap().is_none(),
            "merge ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    job.kill().unwrap();
    job.wait().unwrap();
    let part = Reader::open(&dst).unwrap().len();
    assert!(
        (1000..rows).contains(&part),
        "killed with {part} of {rows} committed"
    );
    let out = bin()
        .arg("merge")
        .arg(&src)
        .arg("--into")
        .arg(&dst)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} added, {part} already present", rows - part)),
        "{err}"
    );
    let (a, b) = (contents(&src), contents(&dst));
    assert_eq!(a.len(), b.len());
    assert!(a == b, "items and vectors differ after the resumed merge");
    assert_eq!(
        std::fs::read(src.join("vectors.f32")).unwrap(),
        std::fs::read(dst.join("vectors.f32")).unwrap(),
        "the rows, in order, bit for bit"
    );
    eprintln!("killed at {part} of {rows} rows; resumed");
    std::fs::remove_dir_all(&d).unwrap();
}
