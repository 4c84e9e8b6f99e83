//! Compact vectors against exact search, on seeded clustered data shaped like embeddings
//! (class means plus noise, unit length): recall of f16 and i8 with the exact re-rank,
//! exact scores, filters, and an index folder's compact file kept in step, converted,
//! damaged and repaired.

use simcase_index::compact::{candidates, REFINE};
use simcase_index::{search_rows, CompactRows, Hit, ItemMeta, Precision, Reader, Writer};
use std::path::{Path, PathBuf};

/// A small seeded generator (xorshift64*), with normal draws by Box–Muller.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` unit vectors of `dim` from `classes` clusters (a mean per class plus isotropic noise
/// of about the mean's length, so that neighbours are close but not trivially so), and
/// `nq` queries drawn the same way.
fn clustered(
    n: usize,
    nq: usize,
    dim: usize,
    classes: usize,
    seed: u64,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = Rng(seed | 1);
    let means: Vec<Vec<f32>> = (0..classes)
        .map(|_| {
            let mut m: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
            normalise(&mut m);
            m
        })
        .collect();
    let sigma = 1.1 / (dim as f32).sqrt();
    let draw = |rng: &mut Rng| {
        let c = (rng.next() % classes as u64) as usize;
        let mut v: Vec<f32> = means[c].iter().map(|m| m + sigma * rng.normal()).collect();
        normalise(&mut v);
        v
    };
    let mut rows = Vec::with_capacity(n * dim);
    for _ in 0..n {
        rows.extend(draw(&mut rng));
    }
    let queries = (0..nq).map(|_| draw(&mut rng)).collect();
    (rows, queries)
}

fn ids(h: &[Hit]) -> Vec<u64> {
    h.iter().map(|h| h.row).collect()
}

/// Mean fraction of the exact top-k found in the approximate top-k.
fn recall(exact: &[Vec<Hit>], got: &[Vec<Hit>]) -> f64 {
    let mut s = 0.0;
    for (e, g) in exact.iter().zip(got) {
        let hit = e
            .iter()
            .filter(|h| g.iter().any(|x| x.row == h.row))
            .count();
        s += hit as f64 / e.len().max(1) as f64;
    }
    s / exact.len() as f64
}

const DIM: usize = 384;

/// Recall@10 of the compact scan alone (the candidates' top 10 by compact score) and with the
/// exact re-rank, for one precision; every returned score must be the exact f32 score.
fn check_precision(p: Precision, floor_scan: f64, floor_rerank: f64) {
    let (rows, queries) = clustered(20_000, 100, DIM, 40, 12);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let exact: Vec<Vec<Hit>> = qs
        .iter()
        .map(|q| search_rows(&rows, DIM, &[q], 10, None).remove(0))
        .collect();
    let c = CompactRows::from_rows(p, &rows, DIM).unwrap();
    assert_eq!((c.len(), c.precision()), (20_000, p));
    assert_eq!(c.bytes(), 20_000 * DIM * p.bytes_per_value());
    // The compact stage alone: its own top 10.
    let scan: Vec<Vec<Hit>> = qs
        .iter()
        .map(|q| {
            let mut s: Vec<Hit> = (0..20_000)
                .map(|r| Hit {
                    row: r as u64,
                    score: c.approx_score(q, r).unwrap(),
                })
                .collect();
            s.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
            s.truncate(10);
            s
        })
        .collect();
    let r_scan = recall(&exact, &scan);
    let got = c.search(&rows, &qs, 10, None);
    let r = recall(&exact, &got);
    eprintln!("{p}: recall@10 compact scan {r_scan:.4}, with re-rank {r:.4}");
    assert!(r_scan >= floor_scan, "{p}: compact scan recall {r_scan}");
    assert!(r >= floor_rerank, "{p}: re-ranked recall {r}");
    for (q, hits) in qs.iter().zip(&got) {
        assert_eq!(hits.len(), 10);
        for h in hits {
            let r = h.row as usize;
            let want = simcase_index::dot(q, &rows[r * DIM..(r + 1) * DIM]);
            assert_eq!(h.score, want, "{p}: row {r} score is not the exact one");
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // A batch of queries (the many-query path) gives the same answers.
    let batch = c.search(&rows, &qs[..12], 10, None);
    for (a, b) in batch.iter().zip(&got) {
        assert_eq!(ids(a), ids(b));
    }
}

#[test]
fn f16_recall_with_rerank_against_exact() {
    check_precision(Precision::F16, 0.99, 0.999);
}

#[test]
fn i8_recall_with_rerank_against_exact() {
    check_precision(Precision::I8, 0.93, 0.995);
}

#[test]
fn filtered_compact_search_returns_the_exact_filtered_top_k() {
    let (rows, queries) = clustered(20_000, 40, DIM, 40, 99);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let keep = |r: u64| r % 10 == 3;
    for p in [Precision::F16, Precision::I8] {
        let c = CompactRows::from_rows(p, &rows, DIM).unwrap();
        let got = c.search(&rows, &qs, 10, Some(&keep));
        for (q, hits) in qs.iter().zip(&got) {
            assert!(
                hits.iter().all(|h| keep(h.row)),
                "{p}: a row the filter drops"
            );
            let want = search_rows(&rows, DIM, &[q], 10, Some(&keep)).remove(0);
            assert_eq!(hits, &want, "{p}");
        }
    }
}

/// The batch path (a block of compact rows widened to f32, one GEMM against every query)
/// answers exactly as the one-query path (the SIMD kernels): same rows, same order, same
/// exact scores, with and without a filter, for k 10 and 100, and with an uncovered tail.
#[test]
fn a_batch_of_queries_gets_the_one_query_answers() {
    let (rows, queries) = clustered(20_000, 64, DIM, 40, 31);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let keep = |r: u64| r % 7 != 2;
    for p in [Precision::F16, Precision::I8] {
        for (covered, k) in [(20_000, 10), (20_000, 100), (15_000, 10)] {
            let c = CompactRows::from_rows(p, &rows[..covered * DIM], DIM).unwrap();
            for filter in [None, Some(&keep as &(dyn Fn(u64) -> bool + Sync))] {
                let batch = c.search(&rows, &qs, k, filter);
                let exact = search_rows(&rows, DIM, &qs, k, filter);
                assert!(recall(&exact, &batch) >= 0.995, "{p} k {k}");
                for (q, b) in qs.iter().zip(&batch) {
                    let single = c.search(&rows, &[q], k, filter).remove(0);
                    assert_eq!(b, &single, "{p} k {k} covered {covered}");
                    assert_eq!(b.len(), k);
                    assert!(b.iter().all(|h| filter.is_none_or(|f| f(h.row))));
                }
            }
        }
    }
}

#[test]
fn rows_past_the_compact_ones_are_scanned_exactly() {
    let (rows, queries) = clustered(3_000, 10, DIM, 8, 5);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    // Compact copies of the first 1000 rows only: the other 2000 are the uncovered tail.
    let c = CompactRows::from_rows(Precision::I8, &rows[..1000 * DIM], DIM).unwrap();
    let got = c.search(&rows, &qs, 10, None);
    for (q, hits) in qs.iter().zip(&got) {
        let want = search_rows(&rows, DIM, &[q], 10, None).remove(0);
        assert_eq!(hits, &want);
        assert!(hits.iter().any(|h| h.row >= 1000), "the tail is searched");
    }
    assert!(candidates(10, REFINE) >= 42);
    assert!(CompactRows::from_rows(Precision::F32, &rows, DIM).is_err());
    assert!(CompactRows::from_rows(Precision::I8, &rows[..DIM + 1], DIM).is_err());
}

// ---- index folders --------------------------------------------------------------------------

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simcase-compact-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn add(w: &mut Writer, rows: &[f32], from: usize) {
    let batch: Vec<(ItemMeta, Vec<f32>)> = rows
        .chunks(DIM)
        .enumerate()
        .map(|(i, v)| {
            let meta = ItemMeta {
                path: format!("/x/{}.png", from + i),
                hash: format!("h{}", from + i),
                format: "png".into(),
                ..Default::default()
            };
            (meta, v.to_vec())
        })
        .collect();
    w.add(&batch).unwrap();
}

/// Index `rows` in batches of 500 into a new folder at precision `p` (set before any row).
fn build(dir: &Path, rows: &[f32], p: Precision) {
    let mut w = Writer::open(dir, "m", DIM).unwrap();
    w.set_precision(p).unwrap();
    for (i, part) in rows.chunks(500 * DIM).enumerate() {
        add(&mut w, part, i * 500);
    }
}

fn search_all(dir: &Path, qs: &[&[f32]]) -> Vec<Vec<Hit>> {
    Reader::open(dir).unwrap().search(qs, 10, None)
}

#[test]
fn an_index_keeps_its_compact_file_in_step_and_converts_both_ways() {
    let (rows, queries) = clustered(4_000, 20, DIM, 16, 21);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let exact: Vec<Vec<Hit>> = qs
        .iter()
        .map(|q| search_rows(&rows, DIM, &[q], 10, None).remove(0))
        .collect();
    let d = tmpdir("step");
    build(&d, &rows, Precision::I8);
    let file = d.join("vectors.i8");
    // Header (40 + 8·384 rounded up to a multiple of 64 → 3136 B) plus one byte per value, every row covered.
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        3136 + 4000 * DIM as u64
    );
    let r = Reader::open(&d).unwrap();
    assert_eq!(r.precision(), Precision::I8);
    assert_eq!(r.compact().unwrap().len(), 4000);
    let got = r.search(&qs, 10, None);
    assert!(recall(&exact, &got) >= 0.99, "{}", recall(&exact, &got));
    drop(r);
    // i8 → f16 → f32: each step replaces the file, the old one goes.
    let mut w = Writer::open(&d, "m", DIM).unwrap();
    assert_eq!(w.precision(), Precision::I8);
    assert!(!w.set_precision(Precision::I8).unwrap(), "nothing to do");
    assert!(w.set_precision(Precision::F16).unwrap());
    assert!(!file.exists() && d.join("vectors.f16").exists());
    assert_eq!(Reader::open(&d).unwrap().precision(), Precision::F16);
    let f16 = search_all(&d, &qs);
    assert!(recall(&exact, &f16) >= 0.999);
    assert!(w.set_precision(Precision::F32).unwrap());
    assert!(!d.join("vectors.f16").exists());
    drop(w);
    let r = Reader::open(&d).unwrap();
    assert_eq!(r.precision(), Precision::F32);
    assert_eq!(
        r.search(&qs, 10, None),
        search_rows(&rows, DIM, &qs, 10, None)
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_i8_quantiser_fitted_on_a_first_small_batch_is_refitted_as_the_index_grows() {
    let (rows, queries) = clustered(3_000, 20, DIM, 16, 33);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let d = tmpdir("refit");
    let mut w = Writer::open(&d, "m", DIM).unwrap();
    w.set_precision(Precision::I8).unwrap();
    add(&mut w, &rows[..4 * DIM], 0);
    let small = std::fs::read(d.join("vectors.i8")).unwrap();
    add(&mut w, &rows[4 * DIM..], 4);
    drop(w);
    let big = std::fs::read(d.join("vectors.i8")).unwrap();
    // The parameters (after the 32 fixed bytes) changed: fitted on all 3000 rows now.
    assert_ne!(small[32..32 + 8 * DIM], big[32..32 + 8 * DIM]);
    let want = CompactRows::from_rows(Precision::I8, &rows, DIM).unwrap();
    let r = Reader::open(&d).unwrap();
    for q in &qs {
        for row in [0, 1234, 2999] {
            assert_eq!(
                r.compact().unwrap().approx_score(q, row),
                want.approx_score(q, row)
            );
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_truncated_or_corrupt_compact_file_is_detected_and_rebuilt() {
    let (rows, queries) = clustered(2_000, 10, DIM, 8, 44);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let d = tmpdir("damage");
    build(&d, &rows, Precision::I8);
    let file = d.join("vectors.i8");
    let good = std::fs::read(&file).unwrap();
    let before = search_all(&d, &qs);
    // Truncated mid-row: readers search the uncovered rows exactly, the writer re-appends.
    let cut = 3136 + 700 * DIM + 17;
    std::fs::write(&file, &good[..cut]).unwrap();
    let r = Reader::open(&d).unwrap();
    assert_eq!(r.compact().unwrap().len(), 700);
    assert_eq!(r.search(&qs, 10, None), before);
    for (q, hits) in qs.iter().zip(r.search(&qs, 10, None)) {
        assert_eq!(hits, search_rows(&rows, DIM, &[q], 10, None).remove(0));
    }
    drop(r);
    drop(Writer::open(&d, "m", DIM).unwrap());
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "re-appended rows are the same bytes"
    );
    // Longer than the committed rows (a batch killed before its commit): the tail is cut.
    let mut long = good.clone();
    long.extend(vec![7u8; 3 * DIM]);
    std::fs::write(&file, &long).unwrap();
    assert_eq!(Reader::open(&d).unwrap().compact().unwrap().len(), 2000);
    drop(Writer::open(&d, "m", DIM).unwrap());
    assert_eq!(std::fs::read(&file).unwrap(), good);
    // A flipped parameter byte fails the checksum: a reader with no writer about rebuilds the
    // file on disk, with a quantiser fitted on all the committed rows.
    let fresh = CompactRows::from_rows(Precision::I8, &rows, DIM).unwrap();
    let rebuilt = |d: &Path| {
        let r = Reader::open(d).unwrap();
        let c = r.compact().unwrap();
        assert_eq!(c.len(), 2000);
        [0, 999, 1999]
            .iter()
            .all(|&row| c.approx_score(qs[0], row) == fresh.approx_score(qs[0], row))
    };
    assert!(!rebuilt(&d), "the writer fitted its quantiser on 1500 rows");
    let mut bad = good.clone();
    bad[100] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();
    assert_eq!(search_all(&d, &qs), before);
    let now = std::fs::read(&file).unwrap();
    assert!(
        now != bad && now.len() == good.len(),
        "rebuilt by the reader"
    );
    assert!(rebuilt(&d));
    // Bad magic while a writer holds the folder: this reader rebuilds in memory, and the
    // writer's next open repairs the file.
    let w = Writer::open(&d, "m", DIM).unwrap();
    bad = good.clone();
    bad[0] = b'X';
    std::fs::write(&file, &bad).unwrap();
    assert_eq!(search_all(&d, &qs), before);
    assert_eq!(std::fs::read(&file).unwrap(), bad, "left to the writer");
    drop(w);
    drop(Writer::open(&d, "m", DIM).unwrap());
    assert_eq!(std::fs::read(&file).unwrap().len(), good.len());
    assert!(rebuilt(&d), "rebuilt by the writer");
    // Missing altogether.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(search_all(&d, &qs), before);
    assert!(file.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_interrupted_conversion_leaves_the_old_index_and_is_cleaned_up() {
    let (rows, queries) = clustered(2_000, 10, DIM, 8, 55);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let d = tmpdir("interrupted");
    build(&d, &rows, Precision::F32);
    let exact = search_all(&d, &qs);
    // Killed while writing the temporary file, and killed after the rename but before the
    // precision was recorded: both leave an f32 index with a stray file.
    std::fs::write(d.join("vectors.i8.tmp"), b"SIMCVEC\0 half-written").unwrap();
    let r = Reader::open(&d).unwrap();
    assert_eq!(r.precision(), Precision::F32);
    assert_eq!(r.search(&qs, 10, None), exact);
    drop(r);
    let mut w = Writer::open(&d, "m", DIM).unwrap();
    assert!(
        !d.join("vectors.i8.tmp").exists(),
        "temp file removed on open"
    );
    w.set_precision(Precision::F16).unwrap();
    drop(w);
    let f16 = std::fs::read(d.join("vectors.f16")).unwrap();
    // Back at f32 by hand, with the f16 file left as a conversion killed before its commit
    // would leave it.
    let mut w = Writer::open(&d, "m", DIM).unwrap();
    w.set_precision(Precision::F32).unwrap();
    drop(w);
    std::fs::write(d.join("vectors.f16"), &f16).unwrap();
    assert_eq!(search_all(&d, &qs), exact);
    drop(Writer::open(&d, "m", DIM).unwrap());
    assert!(
        !d.join("vectors.f16").exists(),
        "stray compact file removed"
    );
    assert_eq!(search_all(&d, &qs), exact);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Measurement, not a check: single-query latency of the flat f32 scan and of each compact
/// precision with re-rank over 200k × 384 clustered rows, and recall@10 by re-rank factor.
/// `cargo test --release -p simcase-index --test compact -- --ignored --nocapture measure`
#[test]
#[ignore]
fn measure_scan_speed_and_recall_by_refine() {
    let n = 200_000;
    let (rows, queries) = clustered(n, 200, DIM, 100, 7);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let time = |f: &dyn Fn(&[f32]) -> Vec<Hit>| {
        let t = std::time::Instant::now();
        let out: Vec<Vec<Hit>> = qs.iter().map(|q| f(q)).collect();
        (t.elapsed().as_secs_f64() * 1e3 / qs.len() as f64, out)
    };
    let (ms, exact) = time(&|q| search_rows(&rows, DIM, &[q], 10, None).remove(0));
    eprintln!(
        "{n}×{DIM} on {} threads, kernels {}: f32 flat {ms:.2} ms/query",
        rayon::current_num_threads(),
        simcase_kernels::selection().isa
    );
    for p in [Precision::F16, Precision::I8] {
        let t = std::time::Instant::now();
        let c = CompactRows::from_rows(p, &rows, DIM).unwrap();
        let build = t.elapsed().as_secs_f64();
        for refine in [1, 2, 4, 8] {
            let (ms, got) = time(&|q| c.search_refine(&rows, &[q], 10, None, refine).remove(0));
            eprintln!(
                "{p}: built in {build:.2}s, {} MB; refine {refine} ({} candidates): {ms:.2} ms/query, recall@10 {:.4}, top-10 identical {:.3}",
                c.bytes() / 1_000_000,
                candidates(10, refine),
                recall(&exact, &got),
                exact.iter().zip(&got).filter(|(a, b)| ids(a) == ids(b)).count() as f64 / qs.len() as f64
            );
        }
    }
    // Recall@100 by re-rank factor, where the k + 32 floor no longer hides it.
    let exact100: Vec<Vec<Hit>> = qs[..50]
        .iter()
        .map(|q| search_rows(&rows, DIM, &[q], 100, None).remove(0))
        .collect();
    let c = CompactRows::from_rows(Precision::I8, &rows, DIM).unwrap();
    for refine in [1, 2, 4] {
        let got: Vec<Vec<Hit>> = qs[..50]
            .iter()
            .map(|q| c.search_refine(&rows, &[q], 100, None, refine).remove(0))
            .collect();
        eprintln!(
            "i8: k=100, refine {refine}: recall@100 {:.4}",
            recall(&exact100, &got)
        );
    }
    // Raw kernel throughput on one thread: one query against every row.
    let f16: Vec<u16> = rows.iter().map(|&x| simcase_kernels::f16_bits(x)).collect();
    let i8: Vec<i8> = rows
        .iter()
        .map(|&x| (x * 400.0).clamp(-127.0, 127.0) as i8)
        .collect();
    let q = qs[0];
    let rate = |f: &dyn Fn(usize) -> f32| {
        let t = std::time::Instant::now();
        let mut s = 0f32;
        for _ in 0..3 {
            for r in 0..n {
                s += f(r);
            }
        }
        (3.0 * n as f64 / t.elapsed().as_secs_f64() / 1e6, s)
    };
    let k = simcase_kernels::kernels();
    let (a, _) = rate(&|r| k.dot(q, &rows[r * DIM..(r + 1) * DIM]));
    let (b, _) = rate(&|r| k.dot_f16(q, &f16[r * DIM..(r + 1) * DIM]));
    let (c, _) = rate(&|r| k.dot_i8(q, &i8[r * DIM..(r + 1) * DIM]));
    eprintln!(
        "kernels ({}), 1 thread, {DIM}-d rows: f32 {a:.2} M rows/s, f16 {b:.2}, i8 {c:.2}",
        k.isa()
    );
}

/// CPU seconds this process has used (user + system, all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) in clock ticks of 1/100 s; after the `)` they are 12, 13.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// Batch throughput (one call with every query) of the exact f32 scan and the compact scans
/// with re-rank, over 200k × 384 clustered rows: the engines take turns, three rounds, best
/// wall-clock q/s and best q/s per CPU second of each (the second is steadier on a busy
/// machine).
/// `cargo test --release -p simcase-index --test compact -- --ignored --nocapture batch_throughput`
#[test]
#[ignore]
fn measure_batch_throughput() {
    let n = 200_000;
    let (rows, queries) = clustered(n, 500, DIM, 100, 7);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let f16 = CompactRows::from_rows(Precision::F16, &rows, DIM).unwrap();
    let i8 = CompactRows::from_rows(Precision::I8, &rows, DIM).unwrap();
    type Engine<'a> = (&'a str, Box<dyn Fn() -> Vec<Vec<Hit>> + 'a>);
    let engines: Vec<Engine> = vec![
        (
            "exact f32",
            Box::new(|| search_rows(&rows, DIM, &qs, 10, None)),
        ),
        (
            "f16 + re-rank",
            Box::new(|| f16.search(&rows, &qs, 10, None)),
        ),
        ("i8 + re-rank", Box::new(|| i8.search(&rows, &qs, 10, None))),
    ];
    let mut best = vec![(0f64, 0f64); engines.len()];
    for _ in 0..3 {
        for (b, (_, f)) in best.iter_mut().zip(&engines) {
            let (t, c) = (std::time::Instant::now(), cpu_seconds());
            assert_eq!(f().len(), qs.len());
            let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
            b.0 = b.0.max(qs.len() as f64 / wall);
            b.1 = b.1.max(qs.len() as f64 / cpu.max(0.01));
        }
    }
    eprintln!(
        "{n}×{DIM}, {} queries in one call, {} threads:",
        qs.len(),
        rayon::current_num_threads()
    );
    for ((name, _), (wall, cpu)) in engines.iter().zip(&best) {
        eprintln!(
            "  {name}: {wall:.0} q/s ({:.2}× exact), {cpu:.0} q per CPU second ({:.2}× exact)",
            wall / best[0].0,
            cpu / best[0].1
        );
    }
}
