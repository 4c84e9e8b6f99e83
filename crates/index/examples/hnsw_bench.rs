//! Measures the HNSW backend against the exact scan on seeded synthetic vectors (the shared
//! generator of `simcase_index::testdata`, also behind `tests/hnsw.rs`): build time, memory per
//! vector (usearch's own figure, the saved graph file, the resident-set growth), single-query
//! latency and batch throughput, recall@10 after the exact re-rank for a few (M, ef_search), the
//! flat scan's latency (for the auto threshold), and filtered search by selectivity through
//! the graph and through the exact scan (for the fallback threshold).
//!
//! `cargo run --release -p simcase-index --example hnsw_bench -- ROWS [clustered|random]
//! [M,..] [EF_CONSTRUCTION] [i8|f16|f32] [--dim D] [--ef 16,64] [--no-filter]`

use simcase_index::hnsw::{search_graph, Hnsw, HnswParams, Quant};
use simcase_index::testdata::{self, Clustered};
use simcase_index::{search_rows, Hit};
use std::time::Instant;

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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| -> Option<String> {
        let i = args.iter().position(|a| a == name)?;
        args.remove(i);
        (i < args.len()).then(|| args.remove(i))
    };
    let dim: usize = flag("--dim").map_or(384, |s| s.parse().expect("--dim N"));
    let efs: Vec<usize> = flag("--ef").map_or_else(
        || vec![16, 32, 64, 128, 256],
        |s| {
            s.split(',')
                .map(|x| x.parse().expect("--ef 16,64"))
                .collect()
        },
    );
    let filters = match args.iter().position(|a| a == "--no-filter") {
        Some(i) => {
            args.remove(i);
            false
        }
        None => true,
    };
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let clustered = args.get(1).is_none_or(|s| s != "random");
    let ms: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![16]);
    let efc: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(128);
    let quant: Quant = args.get(4).map_or(Quant::I8, |s| s.parse().unwrap());
    let data = |n: usize, seed: u64| {
        if clustered {
            Clustered::BENCH.with_dim(dim).rows(n, seed)
        } else {
            testdata::random(n, dim, seed)
        }
    };
    println!(
        "{n} × {dim} {} vectors, {} threads",
        if clustered { "clustered" } else { "random" },
        rayon::current_num_threads()
    );
    let rows = data(n, 11);
    let qs = data(200, 12);
    let q: Vec<&[f32]> = qs.chunks(dim).collect();
    let saved = std::env::temp_dir().join(format!("hnsw_bench-{}.usearch", std::process::id()));
    // Exact: single-query latency and the truth.
    let t = Instant::now();
    let want: Vec<Vec<Hit>> = q
        .iter()
        .map(|x| search_rows(&rows, dim, &[x], 10, None).remove(0))
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
        let g = Hnsw::build(&rows, dim, params, quant).unwrap();
        let build = t.elapsed().as_secs_f64();
        let resident = rss().saturating_sub(before);
        g.save(&saved).unwrap();
        let file = std::fs::metadata(&saved).map_or(0, |m| m.len() as usize);
        let _ = std::fs::remove_file(&saved);
        println!(
            "{quant} M {m} ef_construction {efc}: build {build:.1}s ({:.0} rows/s), usearch {} B/vector, \
             saved file {} B/vector, RSS growth {} B/vector",
            n as f64 / build,
            g.memory_bytes() / n,
            file / n,
            resident / n
        );
        for &ef in &efs {
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
        let sels: &[f64] = if filters {
            &[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3]
        } else {
            &[]
        };
        for &sel in sels {
            let modulo = (1.0 / sel).round() as u64;
            let keep = move |r: u64| r.wrapping_mul(0x9E37_79B9_7F4A_7C15).is_multiple_of(modulo);
            let truth: Vec<Vec<Hit>> = q
                .iter()
                .map(|x| search_rows(&rows, dim, &[x], 10, Some(&keep)).remove(0))
                .collect();
            let t = Instant::now();
            let ex: Vec<Vec<Hit>> = q
                .iter()
                .map(|x| search_rows(&rows, dim, &[x], 10, Some(&keep)).remove(0))
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
                                &rows[r as usize * dim..(r as usize + 1) * dim],
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
