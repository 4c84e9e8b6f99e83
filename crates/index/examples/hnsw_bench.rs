//! Measures the HNSW backend against the exact scan on seeded synthetic vectors: build time,
//! resident memory per vector, single-query latency and batch throughput, recall@10 for a few
//! (M, ef_search), the flat scan's latency (for the auto threshold), and filtered search by
//! selectivity through the graph and through the exact scan (for the fallback threshold).
//!
//! `cargo run --release -p simcase-index --example hnsw_bench -- ROWS [clustered|random] [M,..]`

use simcase_index::hnsw::{search_graph, Hnsw, HnswParams, Quant};
use simcase_index::{search_rows, Hit};
use std::time::Instant;

const DIM: usize = 384;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn normal(&mut self) -> f32 {
        let u = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let v = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// Unit vectors: random, or clustered like embeddings (256 class means, each row its mean
/// plus a point of a 8-d subspace of its class plus a little isotropic noise).
fn data(n: usize, clustered: bool, seed: u64) -> Vec<f32> {
    // The classes are the same for every seed: rows and queries of one archive.
    let mut rng = Rng(42);
    let unit = |rng: &mut Rng| {
        let mut m: Vec<f32> = (0..DIM).map(|_| rng.normal()).collect();
        normalise(&mut m);
        m
    };
    let classes: Vec<(Vec<f32>, Vec<Vec<f32>>)> = (0..256)
        .map(|_| (unit(&mut rng), (0..8).map(|_| unit(&mut rng)).collect()))
        .collect();
    let mut rng = Rng(seed ^ 0xABCD);
    let mut out = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        let mut v: Vec<f32> = if clustered {
            let (m, basis) = &classes[(rng.next() % 256) as usize];
            let mut v: Vec<f32> = m.iter().map(|x| x + 0.004 * rng.normal()).collect();
            for b in basis {
                let z = 0.25 * rng.normal();
                v.iter_mut().zip(b).for_each(|(x, y)| *x += z * y);
            }
            v
        } else {
            (0..DIM).map(|_| rng.normal()).collect()
        };
        normalise(&mut v);
        out.extend(v);
    }
    out
}

fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

fn recall(got: &[Vec<Hit>], want: &[Vec<Hit>]) -> f64 {
    let (mut f, mut t) = (0, 0);
    for (g, w) in got.iter().zip(want) {
        t += w.len();
        f += w
            .iter()
            .filter(|h| g.iter().any(|x| x.row == h.row))
            .count();
    }
    f as f64 / t.max(1) as f64
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let clustered = args.get(2).is_none_or(|s| s != "random");
    let ms: Vec<usize> = args
        .get(3)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![16]);
    let efc: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(128);
    let quant: Quant = args.get(5).map_or(Quant::I8, |s| s.parse().unwrap());
    println!(
        "{n} × {DIM} {} vectors, {} threads",
        if clustered { "clustered" } else { "random" },
        rayon::current_num_threads()
    );
    let rows = data(n, clustered, 11);
    let qs = data(200, clustered, 12);
    let q: Vec<&[f32]> = qs.chunks(DIM).collect();
    // Exact: single-query latency and the truth.
    let t = Instant::now();
    let want: Vec<Vec<Hit>> = q
        .iter()
        .map(|x| search_rows(&rows, DIM, &[x], 10, None).remove(0))
        .collect();
    let flat_ms = t.elapsed().as_secs_f64() * 1e3 / q.len() as f64;
    println!("flat exact scan: {flat_ms:.2} ms/query (single query, all threads)");
    for &m in &ms {
        let params = HnswParams {
            m,
            ef_construction: efc,
            ef_search: 64,
        };
        let before = rss();
        let t = Instant::now();
        let g = Hnsw::build(&rows, DIM, params, quant).unwrap();
        let build = t.elapsed().as_secs_f64();
        let resident = rss().saturating_sub(before);
        println!(
            "{quant} M {m} ef_construction {efc}: build {build:.1}s ({:.0} rows/s), usearch {} B/vector, \
             RSS growth {} B/vector",
            n as f64 / build,
            g.memory_bytes() / n,
            resident / n
        );
        for ef in [16, 32, 64, 128, 256] {
            let mut lat = Vec::new();
            let mut got = Vec::new();
            for x in &q {
                let t = Instant::now();
                got.push(search_graph(&g, &rows, n, &[x], 10, ef, None).remove(0));
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let t = Instant::now();
            let _ = search_graph(&g, &rows, n, &q, 10, ef, None);
            let qps = q.len() as f64 / t.elapsed().as_secs_f64();
            let exact_lists = got.iter().zip(&want).filter(|(a, b)| a == b).count();
            println!(
                "  ef {ef:>3}: recall@10 {:.4}, top-10 identical {:.1}%, p50 {:.3} ms p99 {:.3} ms, \
                 batch {qps:.0} q/s",
                recall(&got, &want),
                100.0 * exact_lists as f64 / q.len() as f64,
                pct(&mut lat.clone(), 0.5),
                pct(&mut lat, 0.99),
            );
        }
        // Filtered: the graph walk with the predicate vs the exact scan of passing rows.
        for sel in [0.001f64, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3] {
            let modulo = (1.0 / sel).round() as u64;
            let keep = move |r: u64| r.wrapping_mul(0x9E37_79B9_7F4A_7C15).is_multiple_of(modulo);
            let truth: Vec<Vec<Hit>> = q
                .iter()
                .map(|x| search_rows(&rows, DIM, &[x], 10, Some(&keep)).remove(0))
                .collect();
            let t = Instant::now();
            let ex: Vec<Vec<Hit>> = q
                .iter()
                .map(|x| search_rows(&rows, DIM, &[x], 10, Some(&keep)).remove(0))
                .collect();
            let ex_ms = t.elapsed().as_secs_f64() * 1e3 / q.len() as f64;
            let t = Instant::now();
            let gr: Vec<Vec<Hit>> = q
                .iter()
                .map(|x| {
                    let mut h: Vec<Hit> = g
                        .candidates(x, 64, n, Some(&keep))
                        .unwrap()
                        .into_iter()
                        .map(|r| Hit {
                            row: r,
                            score: simcase_index::dot(
                                x,
                                &rows[r as usize * DIM..(r as usize + 1) * DIM],
                            ),
                        })
                        .collect();
                    h.sort_by(|a, b| b.score.total_cmp(&a.score));
                    h.truncate(10);
                    h
                })
                .collect();
            let gr_ms = t.elapsed().as_secs_f64() * 1e3 / q.len() as f64;
            println!(
                "  filter {:>5.1}%: graph walk {gr_ms:.3} ms recall {:.4} | exact scan {ex_ms:.3} ms recall {:.4}",
                sel * 100.0,
                recall(&gr, &truth),
                recall(&ex, &truth)
            );
        }
        drop(g);
    }
}
