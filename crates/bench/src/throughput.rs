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

fn embed_rate(enc: &dyn Encoder, inputs: &[Vec<f32>], batch: usize) -> Result<f64> {
    let batch = batch.max(1);
    enc.embed(&inputs[..batch.min(inputs.len())])?; // warm-up
    let mut best = 0f64;
    for _ in 0..REPEATS {
        let t = Instant::now();
        for chunk in inputs.chunks(batch) {
            enc.embed(chunk)?;
        }
        best = best.max(inputs.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
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
pub fn embed(
    model: ModelId,
    batch: &[usize],
    images: usize,
    data: &Path,
    precisions: &[Precision],
    no_peer: bool,
) -> Result<()> {
    let enc = simcase_models::load(model, &default_device())?;
    let imgs = sample_images(data, images)?;
    let inputs: Vec<Vec<f32>> = (0..images.max(1))
        .map(|i| enc.preprocess().apply(&imgs[i % imgs.len()]))
        .collect();
    let peer = if no_peer {
        serde_json::Value::Null
    } else {
        let b: Vec<String> = batch.iter().map(|b| b.to_string()).collect();
        let p: Vec<String> = precisions.iter().map(|p| p.to_string()).collect();
        crate::peers::run(&[
            "embed".into(),
            "--model".into(),
            model.to_string(),
            "--images".into(),
            images.to_string(),
            "--batch".into(),
            b.join(","),
            "--precision".into(),
            p.join(","),
        ])?
    };
    simcase_models::set_precision(Precision::F32);
    let reference = enc.embed(&inputs)?;
    println!("| model | precision | batch | simcase img/s | peer | peer img/s | ratio |");
    println!("|---|---|---:|---:|---|---:|---:|");
    let mut fidelity = Vec::new();
    for &want in precisions {
        let (prec, notice) = simcase_models::set_precision(want);
        if let Some(n) = notice {
            eprintln!("{n}");
            continue;
        }
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
        for &b in batch {
            let ours = embed_rate(enc.as_ref(), &inputs, b)?;
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
/// into a scratch index, against the embed-only rate. The model must be installed.
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
        let embed_only = embed_rate(enc.as_ref(), &inputs, 16)?;
        let dir = std::env::temp_dir().join(format!("simcase-bench-ingest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = simcase_index::Writer::open(&dir, model.name(), enc.dim())?;
        let opts = simcase_ingest::Options {
            batch: 16,
            decode: Default::default(),
            decode_threads: 0,
            progress: false,
            relabel: false,
        };
        let t = Instant::now();
        let s = simcase_ingest::run(&mut w, enc.as_ref(), sources.clone(), &opts)?;
        let rate = s.added as f64 / t.elapsed().as_secs_f64();
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "| {model} | {prec} | {} | {embed_only:.2} | {rate:.2} | {:.0}% |",
            s.added,
            100.0 * rate / embed_only
        );
    }
    simcase_models::set_precision(Precision::F32);
    Ok(())
}
