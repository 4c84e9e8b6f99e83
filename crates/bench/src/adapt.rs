//! `simcase bench adapt`: how long `simcase adapt` takes to learn each method from an archive of
//! `rows` labelled rows, and what a view costs a query, against numpy doing the same whitening
//! work in the same run. Why synthetic rows: the target ("under 60 s on 2 cores for 10k rows")
//! is about size, and dev.csv has 3k rows; the rows here are unit vectors drawn around class
//! centres with an anisotropic spread (so that whitening has something to undo), split
//! 80/10/10 into train, val and test like a manifest.

use anyhow::Result;
use rayon::prelude::*;
use simcase_adapt::{Method, Sample};
use std::time::Instant;

/// What to generate.
pub struct Opts {
    /// Rows in all (train, val, test).
    pub rows: usize,
    /// Their width.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// Methods timed.
    pub methods: Vec<Method>,
    /// Skip numpy.
    pub no_peer: bool,
}

/// `rows` unit vectors of `dim` around `classes` centres, their labels, and their splits
/// (0 train, 1 val, 2 test).
fn data(rows: usize, dim: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>, Vec<u8>) {
    let mut rng = crate::synth::Rng::new(seed);
    let centres: Vec<f32> = (0..classes * dim).map(|_| rng.normal() as f32).collect();
    // Per-dimension spread from 0.2 to 3: a few directions dominate, as in real embeddings.
    let spread: Vec<f32> = (0..dim)
        .map(|j| 0.2 + 2.8 * ((j * 7919) % dim) as f32 / dim as f32)
        .collect();
    let mut v = Vec::with_capacity(rows * dim);
    let mut labels = Vec::with_capacity(rows);
    for _ in 0..rows {
        let c = rng.below(classes as u64) as usize;
        let start = v.len();
        for j in 0..dim {
            v.push(centres[c * dim + j] * 0.3 + rng.normal() as f32 * spread[j]);
        }
        simcase_models::l2_normalize_in_place(&mut v[start..]);
        labels.push(c as u32);
    }
    let split = (0..rows)
        .map(|i| match i % 10 {
            8 => 1,
            9 => 2,
            _ => 0,
        })
        .collect();
    (v, labels, split)
}

/// Run the benchmark and print its table (times in seconds and microseconds, the CPU named).
pub fn run(o: &Opts) -> Result<()> {
    anyhow::ensure!(
        o.rows >= 100 && o.dim >= 2 && o.classes >= 2,
        "need at least 100 rows, 2 dimensions and 2 classes"
    );
    let (v, labels, split) = data(o.rows, o.dim, o.classes, 42);
    let names: Vec<String> = (0..o.classes).map(|c| format!("class{c}")).collect();
    let rows: Vec<Sample> = v
        .chunks(o.dim)
        .enumerate()
        .map(|(i, r)| Sample {
            id: i as u64,
            vector: r,
            label: Some(names[labels[i] as usize].as_str()),
        })
        .collect();
    let pick = |s: u8| -> Vec<Sample> {
        rows.iter()
            .zip(&split)
            .filter(|(_, &x)| x == s)
            .map(|(r, _)| *r)
            .collect()
    };
    let (train, val, test) = (pick(0), pick(1), pick(2));
    let peer = if o.no_peer {
        None
    } else {
        match peer(o, &v, &labels, &split) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("numpy peer unavailable: {e:#}");
                None
            }
        }
    };
    println!(
        "adaptation of {} rows ({} train, {} val, {} test), {}-d, {} classes; CPU: {}",
        o.rows,
        train.len(),
        val.len(),
        test.len(),
        o.dim,
        o.classes,
        crate::scale::cpu_model(),
    );
    println!(
        "| method | fit s (tuning on val included) | numpy s | ratio (time) | map all rows s | \
         µs/query | test P@1 frozen → adapted |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (train_refs, test_refs): (Vec<&Sample>, Vec<&Sample>) =
        (train.iter().collect(), test.iter().collect());
    let frozen = simcase_adapt::p1(None, &train_refs, &test_refs);
    for &m in &o.methods {
        let t = Instant::now();
        let fitted = simcase_adapt::fit(m, &train, &val)?;
        let fit_s = t.elapsed().as_secs_f64();
        let a = &fitted.adapter;
        let t = Instant::now();
        let mut mapped = vec![0f32; o.rows * a.dim_out];
        mapped
            .par_chunks_mut(a.dim_out)
            .zip(v.par_chunks(o.dim))
            .for_each(|(out, x)| out.copy_from_slice(&a.apply(x)));
        let map_s = t.elapsed().as_secs_f64();
        let reps = 2000;
        let t = Instant::now();
        for i in 0..reps {
            std::hint::black_box(a.apply(rows[i % rows.len()].vector));
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        std::hint::black_box(&mapped);
        let adapted = simcase_adapt::p1(Some(a), &train_refs, &test_refs);
        let np = peer
            .as_ref()
            .and_then(|p| p[m.name()].as_f64())
            .filter(|_| m == Method::Whiten);
        let (np_s, ratio) = match np {
            Some(s) => (format!("{s:.2}"), format!("{:.2}", fit_s / s)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {fit_s:.2} | {np_s} | {ratio} | {map_s:.3} | {us:.1} | {frozen:.3} → \
             {adapted:.3} |",
            m.name()
        );
    }
    println!(
        "(numpy: the same whitening with the same 5 shrinkage values tuned by val P@1, \
         float64 scatter and Cholesky; a search in a view maps the query once: the µs/query.)"
    );
    Ok(())
}

/// numpy's seconds for the same whitening fit, from `tools/bench_peers.py adapt`.
fn peer(o: &Opts, v: &[f32], labels: &[u32], split: &[u8]) -> Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("simcase-bench-adapt-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bytes = |x: &[f32]| x.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("rows.f32"), bytes(v))?;
    let lab: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    std::fs::write(dir.join("labels.u32"), lab)?;
    std::fs::write(dir.join("split.u8"), split)?;
    let r = crate::peers::run(&[
        "adapt".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--rows".into(),
        o.rows.to_string(),
        "--dim".into(),
        o.dim.to_string(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    r
}
