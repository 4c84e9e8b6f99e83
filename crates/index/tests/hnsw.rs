//! HNSW search against exact search on seeded clustered vectors: recall and exact scores,
//! filters inside the walk, the graph file as a cache (truncated and corrupted files rebuilt,
//! a build killed mid-way resumed from its last checkpoint by a real child process).

use simcase_index::hnsw::{Hnsw, HnswIndex, HnswParams, IndexType, Quant};
use simcase_index::store::ann;
use simcase_index::testdata::Clustered;
use simcase_index::{search_rows, Hit, ItemMeta, Snapshot, VectorIndex, Writer};
use std::path::{Path, PathBuf};

const DIM: usize = 384;

/// `n` unit vectors shaped like embeddings (the shared generator's test shape: 64 class
/// means, each row its class mean plus a point of a 16-d subspace of its class plus a little
/// isotropic noise).
fn clustered(n: usize, seed: u64) -> Vec<f32> {
    Clustered::TESTS.rows(n, seed)
}

fn recall(got: &[Vec<Hit>], want: &[Vec<Hit>]) -> f64 {
    let mut found = 0;
    let mut total = 0;
    for (g, w) in got.iter().zip(want) {
        total += w.len();
        found += w
            .iter()
            .filter(|h| g.iter().any(|x| x.row == h.row))
            .count();
    }
    found as f64 / total.max(1) as f64
}

fn queries(n: usize, seed: u64) -> Vec<Vec<f32>> {
    clustered(n, seed).chunks(DIM).map(|q| q.to_vec()).collect()
}

fn refs(qs: &[Vec<f32>]) -> Vec<&[f32]> {
    qs.iter().map(|q| q.as_slice()).collect()
}

#[test]
fn recall_against_exact_with_exact_scores() {
    let data = clustered(20_000, 1);
    let qs = queries(100, 2);
    let q = refs(&qs);
    let idx = HnswIndex::build(&data[..], DIM, HnswParams::default(), Quant::I8).unwrap();
    assert_eq!(idx.len(), 20_000);
    let got = idx.search(&q, 10, None).unwrap();
    let want = search_rows(&data, DIM, &q, 10, None);
    let r = recall(&got, &want);
    assert!(r >= 0.95, "recall@10 {r}");
    for (g, qv) in got.iter().zip(&q) {
        assert_eq!(g.len(), 10);
        assert!(g.windows(2).all(|w| w[0].score >= w[1].score));
        for h in g {
            let row = &data[h.row as usize * DIM..(h.row as usize + 1) * DIM];
            assert_eq!(h.score, simcase_index::dot(qv, row), "scores are exact f32");
        }
    }
    // Most top-10 lists are the exact ones, in the exact order.
    let ids = |h: &Vec<Hit>| h.iter().map(|x| x.row).collect::<Vec<_>>();
    let same = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| ids(g) == ids(w))
        .count();
    assert!(same >= 60, "{same}/100 top-10 lists identical to exact");
    // A degenerate graph (M 2, one candidate per step) misses: the floor above means something.
    let weak = HnswParams {
        m: 2,
        ef_construction: 1,
        ef_search: 1,
    };
    let bad = Hnsw::build(&data, DIM, weak, Quant::I8).unwrap();
    let cand: Vec<Vec<Hit>> = q
        .iter()
        .map(|qv| {
            bad.candidates(qv, 10, 20_000, None)
                .unwrap()
                .into_iter()
                .map(|row| Hit { row, score: 0.0 })
                .collect()
        })
        .collect();
    assert!(recall(&cand, &want) < r, "a weak graph scores no better");
}

#[test]
fn filters_apply_during_the_walk_and_stay_correct() {
    let data = clustered(20_000, 3);
    let qs = queries(50, 4);
    let q = refs(&qs);
    let idx = HnswIndex::build(&data[..], DIM, HnswParams::default(), Quant::I8).unwrap();
    for (name, modulo, floor) in [("10%", 10u64, 0.95), ("1%", 100, 0.95)] {
        let keep = move |r: u64| r % modulo == 3;
        let got = idx.search(&q, 10, Some(&keep)).unwrap();
        let want = search_rows(&data, DIM, &q, 10, Some(&keep));
        for g in &got {
            assert_eq!(g.len(), 10, "{name}");
            assert!(
                g.iter().all(|h| keep(h.row)),
                "{name}: a hit fails the filter"
            );
        }
        let r = recall(&got, &want);
        assert!(r >= floor, "{name} filter: recall@10 {r}");
        // The same through the graph walk itself (what a larger index uses at this
        // selectivity), re-ranked exactly.
        let walked: Vec<Vec<Hit>> = q
            .iter()
            .map(|qv| {
                let mut h: Vec<Hit> = idx
                    .graph()
                    .candidates(qv, 64, 20_000, Some(&keep))
                    .unwrap()
                    .into_iter()
                    .map(|row| Hit {
                        row,
                        score: simcase_index::dot(
                            qv,
                            &data[row as usize * DIM..(row as usize + 1) * DIM],
                        ),
                    })
                    .collect();
                assert!(
                    h.iter().all(|x| keep(x.row)),
                    "{name}: the walk kept a failing row"
                );
                h.sort_by(|a, b| b.score.total_cmp(&a.score));
                h.truncate(10);
                h
            })
            .collect();
        let r = recall(&walked, &want);
        assert!(r >= 0.9, "{name} filter, graph walk: recall@10 {r}");
    }
    // The predicate runs inside the walk: asked for 20 rows that pass a 1% filter, the graph
    // returns 20 that pass (dropping results afterwards would leave about 0.2 of 20).
    let keep = |r: u64| r % 100 == 3;
    for qv in &q[..10] {
        let c = idx.graph().candidates(qv, 20, 20_000, Some(&keep)).unwrap();
        assert_eq!(c.len(), 20);
        assert!(c.iter().all(|&r| keep(r)));
    }
    // Rows past the searcher's own count (another snapshot's newer rows) never come back.
    let c = idx.graph().candidates(q[0], 50, 5_000, None).unwrap();
    assert!(!c.is_empty() && c.iter().all(|&r| r < 5_000));
    // Asking for most of the rows is answered exactly (a group-by pool grown to all).
    let all = idx.search(&q[..1], 15_000, None).unwrap();
    assert_eq!(all, search_rows(&data, DIM, &q[..1], 15_000, None));
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simcase-hnsw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn meta(i: usize) -> ItemMeta {
    ItemMeta {
        path: format!("/img/{i}.png"),
        hash: format!("h{i}"),
        format: "png".into(),
        ..Default::default()
    }
}

/// An index of `data`'s rows, committed in batches of 1000, with the given index type.
fn write_index(dir: &Path, data: &[f32], ty: IndexType) {
    let mut w = Writer::open(dir, "m", DIM).unwrap();
    w.set_ann(ty, HnswParams::default()).unwrap();
    let n = data.len() / DIM;
    for start in (0..n).step_by(1000) {
        let batch: Vec<(ItemMeta, Vec<f32>)> = (start..(start + 1000).min(n))
            .map(|i| (meta(i), data[i * DIM..(i + 1) * DIM].to_vec()))
            .collect();
        w.add(&batch).unwrap();
    }
}

/// Recall@10 of a fresh snapshot of `dir` against exact search over `data`.
fn snapshot_recall(dir: &Path, data: &[f32]) -> f64 {
    let snap = Snapshot::open(dir).unwrap();
    assert!(
        snap.graph().is_some(),
        "the snapshot searches through a graph"
    );
    let qs = queries(50, 9);
    let q = refs(&qs);
    let got = snap.search(&q, 10, None);
    let want = search_rows(data, DIM, &q, 10, None);
    recall(&got, &want)
}

#[test]
fn graph_file_is_a_cache_rebuilt_when_truncated_or_corrupt() {
    let dir = tmpdir("cache");
    let data = clustered(12_000, 5);
    write_index(&dir, &data[..10_000 * DIM], IndexType::Hnsw);
    // The writer added each batch to its graph and saved it on drop.
    assert_eq!(ann::check_saved(&dir).unwrap(), 10_000);
    // Rows committed later by a writer without a graph checkpoint are added on open.
    {
        let mut w = Writer::open(&dir, "m", DIM).unwrap();
        w.set_ann(IndexType::Flat, HnswParams::default()).unwrap();
        let batch: Vec<(ItemMeta, Vec<f32>)> = (10_000..12_000)
            .map(|i| (meta(i), data[i * DIM..(i + 1) * DIM].to_vec()))
            .collect();
        w.add(&batch).unwrap();
        w.set_ann(IndexType::Hnsw, HnswParams::default()).unwrap();
    }
    assert_eq!(
        ann::check_saved(&dir).unwrap(),
        10_000,
        "flat writes leave it"
    );
    let r = snapshot_recall(&dir, &data);
    assert!(r >= 0.95, "recall with 2000 rows added in memory: {r}");
    assert_eq!(
        ann::check_saved(&dir).unwrap(),
        10_000,
        "readers never write the graph"
    );
    let graph = dir.join(ann::GRAPH);
    let len = std::fs::metadata(&graph).unwrap().len();
    // Truncated.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&graph)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(ann::check_saved(&dir).is_err());
    let r = snapshot_recall(&dir, &data);
    assert!(r >= 0.95, "recall after rebuilding a truncated graph: {r}");
    let mut w = Writer::open(&dir, "m", DIM).unwrap();
    w.sync_graph(|_, _| {}).unwrap();
    assert_eq!(w.graph_rows(), Some(12_000));
    drop(w);
    assert_eq!(ann::check_saved(&dir).unwrap(), 12_000, "rewritten whole");
    // Corrupted in the middle, same length.
    let mut bytes = std::fs::read(&graph).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5A;
    }
    std::fs::write(&graph, &bytes).unwrap();
    let e = ann::check_saved(&dir).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
    let r = snapshot_recall(&dir, &data);
    assert!(r >= 0.95, "recall after rebuilding a corrupt graph: {r}");
    let mut w = Writer::open(&dir, "m", DIM).unwrap();
    w.sync_graph(|_, _| {}).unwrap();
    drop(w);
    assert_eq!(ann::check_saved(&dir).unwrap(), 12_000);
    // A missing sidecar: rebuilt as well.
    std::fs::remove_file(dir.join(ann::GRAPH_META)).unwrap();
    assert!(snapshot_recall(&dir, &data) >= 0.95);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child half of the kill test: build the graph of `dir`, checkpointing after every
/// step, and stall after the first checkpoint so that the parent kills it mid-build.
#[test]
fn child_builds_graph_until_killed() {
    let Some(dir) = std::env::var_os("SIMCASE_HNSW_KILL_CHILD") else {
        return; // only runs as the child of kill_mid_build_then_resume
    };
    let dir = PathBuf::from(dir);
    let mut w = Writer::open(&dir, "m", DIM).unwrap();
    w.set_graph_checkpoint_every(std::time::Duration::ZERO);
    w.set_ann(IndexType::Hnsw, HnswParams::default()).unwrap();
    w.sync_graph(|done, _| {
        if done > 0 && dir.join(ann::GRAPH_META).exists() {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    })
    .unwrap();
    panic!("the parent should have killed this build");
}

#[test]
fn kill_mid_build_then_resume() {
    let dir = tmpdir("kill");
    let data = clustered(40_000, 7);
    write_index(&dir, &data, IndexType::Flat);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_builds_graph_until_killed", "--nocapture"])
        .env("SIMCASE_HNSW_KILL_CHILD", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    // The first checkpoint is written after the second step (the first comes before any).
    let saved = loop {
        if let Ok(rows) = ann::check_saved(&dir) {
            break rows;
        }
        assert!(
            t.elapsed().as_secs() < 300,
            "no checkpoint from the child build"
        );
        assert!(child.try_wait().unwrap().is_none(), "child ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        saved > 0 && saved < 40_000,
        "killed mid-build at {saved} rows"
    );
    // Nothing committed is lost, and the next build resumes from the checkpoint.
    let mut w = Writer::open(&dir, "m", DIM).unwrap();
    assert_eq!(w.len(), 40_000);
    let mut first = None;
    w.sync_graph(|done, _| {
        first.get_or_insert(done);
    })
    .unwrap();
    let first = first.unwrap();
    assert!(
        first > saved && first <= saved + simcase_index::hnsw::BUILD_STEP,
        "resumed at {saved}: first step ended at {first}"
    );
    assert_eq!(w.graph_rows(), Some(40_000));
    drop(w);
    assert_eq!(ann::check_saved(&dir).unwrap(), 40_000);
    let r = snapshot_recall(&dir, &data);
    assert!(r >= 0.95, "recall after resuming: {r}");
    std::fs::remove_dir_all(&dir).unwrap();
}
