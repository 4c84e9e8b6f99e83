//! Throughput of the pipeline's stages, printed as Markdown tables beside the peers' figures:
//! embedding (img/s), exact search (ms/query) and end-to-end ingest (img/s). Timings belong
//! here, not in test asserts.

use anyhow::Result;
use simcase_imaging::decode_path;
use simcase_index::{FlatIndex, VectorIndex};
use simcase_models::{default_device, Encoder, ModelId, Precision};
use std::path::Path;
use std::time::Instant;

/// Repeats per measurement; the best is reported (for the peers too), since on a shared VM
/// the noise only ever slows a run down.
const REPEATS: usize = 3;

fn sample_images(data: &Path, n: usize) -> Result<Vec<simcase_imaging::Image>> {
    let sources = simcase_ingest::read_manifest(&data.join("dev.csv"))?;
    let mut imgs = Vec::new();
    for s in sources.iter().take(n.max(1)) {
        imgs.push(decode_path(&s.path, &Default::default())?.image);
    }
    anyhow::ensure!(
        !imgs.is_empty(),
        "{}: no images listed",
        data.join("dev.csv").display()
    );
    Ok(imgs)
}

/// Batch size of `bench ingest`, on both of its sides.
const INGEST_BATCH: usize = 16;

/// One batch of `inputs` at `batch`, untimed, so that packing and first-touch costs stay out
/// of the timings.
fn warm_up(enc: &dyn Encoder, inputs: &[Vec<f32>], batch: usize) -> Result<()> {
    enc.embed(&inputs[..batch.max(1).min(inputs.len())])?;
    Ok(())
}

/// img/s over `inputs` at `batch`, best of [`REPEATS`] after a warm-up batch.
fn embed_rate(enc: &dyn Encoder, inputs: &[Vec<f32>], batch: usize) -> Result<f64> {
    warm_up(enc, inputs, batch)?;
    let mut best = 0f64;
    for _ in 0..REPEATS {
        best = best.max(embed_once(enc, inputs, batch)?);
    }
    Ok(best)
}

/// img/s of one pass over `inputs` at `batch`.
fn embed_once(enc: &dyn Encoder, inputs: &[Vec<f32>], batch: usize) -> Result<f64> {
    let t = Instant::now();
    for chunk in inputs.chunks(batch.max(1)) {
        enc.embed(chunk)?;
    }
    Ok(inputs.len() as f64 / t.elapsed().as_secs_f64())
}

/// Merges a round of the peers' rates (`{peer: {batch: img/s}}`) into `best`, keeping each
/// figure's maximum over the rounds.
fn keep_best_peers(best: &mut serde_json::Value, round: serde_json::Value) {
    let (Some(b), Some(r)) = (best.as_object_mut(), round.as_object()) else {
        if best.is_null() {
            *best = round;
        }
        return;
    };
    for (name, rates) in r {
        let Some(rates) = rates.as_object() else {
            continue;
        };
        let slot = b
            .entry(name.clone())
            .or_insert_with(|| serde_json::json!({}));
        for (batch, rate) in rates {
            let (Some(new), Some(map)) = (rate.as_f64(), slot.as_object_mut()) else {
                continue;
            };
            let old = map.get(batch).and_then(|v| v.as_f64()).unwrap_or(0.0);
            map.insert(batch.clone(), serde_json::json!(old.max(new)));
        }
    }
}

/// `rows` pseudo-random unit vectors of `dim` (an LCG, so runs compare).
pub fn lcg_unit_vectors(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed;
    let mut v: Vec<f32> = (0..rows * dim)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    for r in v.chunks_mut(dim.max(1)) {
        let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
        r.iter_mut().for_each(|a| *a /= n);
    }
    v
}

/// `simcase bench embed`: img/s at each batch size and precision over `images` real images
/// from `data/dev.csv` (cycled), against PyTorch / onnxruntime (and PyTorch bf16 for bf16)
/// unless `no_peer`; each precision other than f32 also gets its worst and mean cosine to
/// f32's embeddings of the same images. The model must be installed.
///
/// The measurement runs `rounds` times, the peers then simcase in each, and each side's best
/// over the rounds is compared: on a shared VM whose speed drifts by tens of percent over
/// minutes, a ratio of one side's good minute to the other's bad one says nothing.
pub fn embed(
    model: ModelId,
    batch: &[usize],
    images: usize,
    data: &Path,
    precisions: &[Precision],
    no_peer: bool,
    rounds: usize,
) -> Result<()> {
    let enc = simcase_models::load(model, &default_device())?;
    let imgs = sample_images(data, images)?;
    let inputs: Vec<Vec<f32>> = (0..images.max(1))
        .map(|i| enc.preprocess().apply(&imgs[i % imgs.len()]))
        .collect();
    simcase_models::set_precision(Precision::F32);
    let reference = enc.embed(&inputs)?;
    // The precisions this CPU runs (a notice for the others), each with its cosine to f32.
    let mut runnable = Vec::new();
    let mut fidelity = Vec::new();
    for &want in precisions {
        let (prec, notice) = simcase_models::set_precision(want);
        if let Some(n) = notice {
            eprintln!("{n}");
            continue;
        }
        runnable.push(prec);
        if prec != Precision::F32 {
            let got = enc.embed(&inputs)?;
            let cos: Vec<f32> = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .collect();
            let worst = cos.iter().copied().fold(1f32, f32::min);
            let mean = cos.iter().sum::<f32>() / cos.len().max(1) as f32;
            fidelity.push((prec, worst, mean));
        }
    }
    let b: Vec<String> = batch.iter().map(|b| b.to_string()).collect();
    let p: Vec<String> = precisions.iter().map(|p| p.to_string()).collect();
    let peer_args = [
        "embed".into(),
        "--model".into(),
        model.to_string(),
        "--images".into(),
        images.to_string(),
        "--batch".into(),
        b.join(","),
        "--precision".into(),
        p.join(","),
    ];
    let mut peer = serde_json::Value::Null;
    let mut ours = std::collections::HashMap::new();
    for round in 0..rounds.max(1) {
        if rounds > 1 {
            eprintln!("round {} of {rounds}", round + 1);
        }
        if !no_peer {
            keep_best_peers(&mut peer, crate::peers::run(&peer_args)?);
        }
        for &prec in &runnable {
            simcase_models::set_precision(prec);
            for &b in batch {
                let rate = embed_rate(enc.as_ref(), &inputs, b)?;
                let best: &mut f64 = ours.entry((prec, b)).or_default();
                *best = best.max(rate);
            }
        }
    }
    println!("| model | precision | batch | simcase img/s | peer | peer img/s | ratio |");
    println!("|---|---|---:|---:|---|---:|---:|");
    for &prec in &runnable {
        for &b in batch {
            let ours = ours[&(prec, b)];
            let mut printed = false;
            if let Some(p) = peer.as_object() {
                for (name, rates) in p {
                    // f32 peers beside every precision; a bf16 or int8 peer beside its own.
                    let own = |p: Precision| name.ends_with(&format!(" {p}"));
                    if (own(Precision::Bf16) && prec != Precision::Bf16)
                        || (own(Precision::Int8) && prec != Precision::Int8)
                    {
                        continue;
                    }
                    if let Some(r) = rates[b.to_string()].as_f64() {
                        println!(
                            "| {model} | {prec} | {b} | {ours:.2} | {name} | {r:.2} | {:.2}x |",
                            ours / r
                        );
                        printed = true;
                    }
                }
            }
            if !printed {
                println!("| {model} | {prec} | {b} | {ours:.2} | - | - | - |");
            }
        }
    }
    simcase_models::set_precision(Precision::F32);
    for (p, worst, mean) in fidelity {
        println!(
            "\n{model} {p} against f32 on these {} images: cosine worst {worst:.5}, mean {mean:.5}",
            inputs.len()
        );
    }
    Ok(())
}

/// `simcase bench search`: exact top-`k` latency over `rows` random unit vectors of `dim`, one
/// query and a batch of `batch`, against FAISS unless `no_peer`.
pub fn search(rows: &[usize], dim: usize, batch: usize, k: usize, no_peer: bool) -> Result<()> {
    anyhow::ensure!(
        dim > 0 && batch > 0 && k > 0,
        "dim, batch and k must be > 0"
    );
    let peer = if no_peer {
        serde_json::Value::Null
    } else {
        let r: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        crate::peers::run(&[
            "search".into(),
            "--rows".into(),
            r.join(","),
            "--dim".into(),
            dim.to_string(),
            "--batch".into(),
            batch.to_string(),
            "--k".into(),
            k.to_string(),
        ])?
    };
    println!("| rows | dim | queries | simcase ms/query | FAISS ms/query | ratio (time) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in rows {
        let data = lcg_unit_vectors(n, dim, 42);
        let qs = lcg_unit_vectors(batch, dim, 7);
        let idx = FlatIndex::new(data, dim);
        for nq in [1usize, batch] {
            let qrefs: Vec<&[f32]> = qs.chunks(dim).take(nq).collect();
            idx.search(&qrefs, k, None)?; // warm-up (page-in)
            let reps = if nq == 1 { 20 } else { 3 };
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(idx.search(&qrefs, k, None)?);
            }
            let ours = t.elapsed().as_secs_f64() * 1e3 / (reps * nq) as f64;
            match peer[n.to_string()][nq.to_string()].as_f64() {
                Some(f) => println!(
                    "| {n} | {dim} | {nq} | {ours:.3} | {f:.3} | {:.2} |",
                    ours / f
                ),
                None => println!("| {n} | {dim} | {nq} | {ours:.3} | - | - |"),
            }
        }
    }
    Ok(())
}

/// `simcase bench ingest`: decode + embed + commit of the first `images` rows of `manifest`
/// into a scratch index, against the embed-only rate of the same images at the same batch
/// size ([`INGEST_BATCH`]); the two
/// take turns, best of [`REPEATS`] each. The model must be installed.
pub fn ingest(
    manifest: &Path,
    model: ModelId,
    images: usize,
    precisions: &[Precision],
) -> Result<()> {
    let enc = simcase_models::load(model, &default_device())?;
    let mut sources = simcase_ingest::read_manifest(manifest)?;
    sources.truncate(images);
    let decoded: Vec<_> = sources
        .iter()
        .filter_map(|s| decode_path(&s.path, &Default::default()).ok())
        .collect();
    anyhow::ensure!(
        !decoded.is_empty(),
        "{}: none of the first {images} rows decodes",
        manifest.display()
    );
    let inputs: Vec<Vec<f32>> = decoded
        .iter()
        .map(|d| enc.preprocess().apply(&d.image))
        .collect();
    println!("| model | precision | images | embed-only img/s | ingest img/s | ingest / embed |");
    println!("|---|---|---:|---:|---:|---:|");
    for &want in precisions {
        let (prec, notice) = simcase_models::set_precision(want);
        if let Some(n) = notice {
            eprintln!("{n}");
            continue;
        }
        // Embed-only and ingest take turns, best of REPEATS each, so that both sides see
        // the same minutes of a VM whose speed drifts.
        warm_up(enc.as_ref(), &inputs, INGEST_BATCH)?;
        let (mut embed_only, mut rate, mut added) = (0f64, 0f64, 0);
        for _ in 0..REPEATS {
            embed_only = embed_only.max(embed_once(enc.as_ref(), &inputs, INGEST_BATCH)?);
            let (r, n) = ingest_once(model, enc.as_ref(), &sources)?;
            (rate, added) = (rate.max(r), n);
        }
        println!(
            "| {model} | {prec} | {added} | {embed_only:.2} | {rate:.2} | {:.0}% |",
            100.0 * rate / embed_only
        );
    }
    simcase_models::set_precision(Precision::F32);
    Ok(())
}

/// img/s and rows added of one ingest of `sources` into a scratch index, removed after.
fn ingest_once(
    model: ModelId,
    enc: &dyn Encoder,
    sources: &[simcase_ingest::Source],
) -> Result<(f64, usize)> {
    let dir = std::env::temp_dir().join(format!("simcase-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut w = simcase_index::Writer::open(&dir, model.name(), enc.dim())?;
    let opts = simcase_ingest::Options {
        batch: INGEST_BATCH,
        decode: Default::default(),
        decode_threads: 0,
        progress: false,
        relabel: false,
    };
    let t = Instant::now();
    let s = simcase_ingest::run(&mut w, enc, sources.to_vec(), &opts)?;
    let rate = s.added as f64 / t.elapsed().as_secs_f64();
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((rate, s.added))
}

#[cfg(test)]
mod tests {
    use super::keep_best_peers;
    use serde_json::json;

    /// Each peer figure keeps its best over the rounds; a peer or batch seen in one round only
    /// is kept; the first round is taken whole.
    #[test]
    fn peers_keep_their_best_over_rounds() {
        let mut best = serde_json::Value::Null;
        keep_best_peers(&mut best, json!({"PyTorch f32": {"1": 7.0, "16": 9.0}}));
        keep_best_peers(
            &mut best,
            json!({"PyTorch f32": {"1": 8.5, "16": 6.0}, "onnxruntime f32": {"1": 5.0}}),
        );
        assert_eq!(
            best,
            json!({"PyTorch f32": {"1": 8.5, "16": 9.0}, "onnxruntime f32": {"1": 5.0}})
        );
        // A round that printed nothing usable changes nothing.
        keep_best_peers(&mut best, json!({"PyTorch f32": "failed"}));
        assert_eq!(best["PyTorch f32"]["1"], json!(8.5));
    }
}
