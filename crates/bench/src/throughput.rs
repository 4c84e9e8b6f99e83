//! Throughput of the pipeline's stages, printed as Markdown tables beside the peers' figures:
//! embedding (img/s), exact search (ms/query) and end-to-end ingest (img/s). Timings belong
//! here, not in test asserts.

use anyhow::Result;
use simcase_imaging::decode_path;
use simcase_index::{FlatIndex, VectorIndex};
use simcase_models::{default_device, Encoder, ModelId, Precision};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Repeats per measurement; the best is reported (for the peers too), since on a shared VM
/// the noise only ever slows a run down.
const REPEATS: usize = 3;

/// Idle time before each timed pass of `bench embed`, on both sides: longer than OpenMP's
/// default block time (200 ms), during which the last pass's worker threads still spin.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

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

/// img/s of one pass over `inputs` at `batch`.
fn embed_once(enc: &dyn Encoder, inputs: &[Vec<f32>], batch: usize) -> Result<f64> {
    let t = Instant::now();
    for chunk in inputs.chunks(batch.max(1)) {
        enc.embed(chunk)?;
    }
    Ok(inputs.len() as f64 / t.elapsed().as_secs_f64())
}

/// The figures of one side (simcase at a precision, a peer, ingest or embed-only) at one
/// batch size: one img/s per round.
#[derive(Default)]
struct Passes(Vec<f64>);

impl Passes {
    fn best(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }

    /// The median over the rounds of `self`'s pass over `peer`'s pass in the same round: the
    /// two ran back to back, so a drift of the machine's speed over minutes cancels.
    fn paired_ratio(&self, peer: &Passes) -> f64 {
        let mut r: Vec<f64> = self.0.iter().zip(&peer.0).map(|(a, b)| a / b).collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
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
/// under `peers`' malloc policy, unless `peers` is `None`; each precision other than f32 also
/// gets its worst and mean cosine to f32's embeddings of the same images. The model must be
/// installed.
///
/// The peers are loaded once (`tools/bench_peers.py embed --serve`), and each of `rounds`
/// rounds times one pass of every peer and one of simcase at every precision, batch size by
/// batch size, back to back (simcase first in every other round). On a shared VM whose speed
/// drifts by tens of percent over minutes, whole runs of one side then the other compare one
/// side's good minute with the other's bad one; passes seconds apart do not. Each ratio is
/// given twice: best pass over best pass, and the median over the rounds of the ratio of the
/// two passes of a round.
pub fn embed(
    model: ModelId,
    batch: &[usize],
    images: usize,
    data: &Path,
    precisions: &[Precision],
    peers: Option<crate::peers::PeerHeap>,
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
    let mut peers = match peers {
        None => None,
        Some(heap) => Some(crate::peers::Serving::start(
            &[
                "embed".into(),
                "--model".into(),
                model.to_string(),
                "--images".into(),
                images.to_string(),
                "--batch".into(),
                b.join(","),
                "--precision".into(),
                p.join(","),
            ],
            heap,
        )?),
    };
    let names: Vec<String> = peers.as_ref().map_or(Vec::new(), |s| s.peers().to_vec());
    for &prec in &runnable {
        simcase_models::set_precision(prec);
        for &b in batch {
            warm_up(enc.as_ref(), &inputs, b)?;
        }
    }
    let mut ours: HashMap<(Precision, usize), Passes> = HashMap::new();
    let mut theirs: HashMap<(&str, usize), Passes> = HashMap::new();
    let rounds = rounds.max(1);
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for &b in batch {
            let mut run_ours = || -> Result<()> {
                for &prec in &runnable {
                    simcase_models::set_precision(prec);
                    // As the peers do before theirs: the other side's worker threads stop
                    // spinning (OpenMP's and onnxruntime's) before this pass is timed.
                    std::thread::sleep(SETTLE);
                    let rate = embed_once(enc.as_ref(), &inputs, b)?;
                    ours.entry((prec, b)).or_default().0.push(rate);
                }
                Ok(())
            };
            if round % 2 == 1 {
                run_ours()?;
            }
            if let Some(s) = peers.as_mut() {
                for name in &names {
                    let rate = s.pass(name, b)?;
                    theirs.entry((name.as_str(), b)).or_default().0.push(rate);
                }
            }
            if round % 2 == 0 {
                run_ours()?;
            }
        }
    }
    drop(peers);
    println!(
        "| model | precision | batch | simcase img/s | peer | peer img/s | ratio of bests | paired ratio |"
    );
    println!("|---|---|---:|---:|---|---:|---:|---:|");
    for &prec in &runnable {
        for &b in batch {
            let ours = &ours[&(prec, b)];
            let mut printed = false;
            for name in &names {
                // f32 peers beside every precision; a bf16 or int8 peer beside its own.
                let own = |p: Precision| name.ends_with(&format!(" {p}"));
                if (own(Precision::Bf16) && prec != Precision::Bf16)
                    || (own(Precision::Int8) && prec != Precision::Int8)
                {
                    continue;
                }
                if let Some(t) = theirs.get(&(name.as_str(), b)) {
                    println!(
                        "| {model} | {prec} | {b} | {:.2} | {name} | {:.2} | {:.2}x | {:.2}x |",
                        ours.best(),
                        t.best(),
                        ours.best() / t.best(),
                        ours.paired_ratio(t)
                    );
                    printed = true;
                }
            }
            if !printed {
                println!(
                    "| {model} | {prec} | {b} | {:.2} | - | - | - | - |",
                    ours.best()
                );
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
/// size ([`INGEST_BATCH`]); the two take turns, [`REPEATS`] passes each, and the ratio is given
/// as best over best and as the median of the turns' paired ratios. The model must be
/// installed.
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
    println!(
        "| model | precision | images | embed-only img/s | ingest img/s | ingest / embed (bests) | paired |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for &want in precisions {
        let (prec, notice) = simcase_models::set_precision(want);
        if let Some(n) = notice {
            eprintln!("{n}");
            continue;
        }
        // Embed-only and ingest take turns, REPEATS each, so that both sides see the same
        // minutes of a VM whose speed drifts.
        warm_up(enc.as_ref(), &inputs, INGEST_BATCH)?;
        let (mut embed_only, mut ingest, mut added) = (Passes::default(), Passes::default(), 0);
        for _ in 0..REPEATS {
            embed_only
                .0
                .push(embed_once(enc.as_ref(), &inputs, INGEST_BATCH)?);
            let (r, n) = ingest_once(model, enc.as_ref(), &sources)?;
            ingest.0.push(r);
            added = n;
        }
        let (e, i) = (embed_only.best(), ingest.best());
        println!(
            "| {model} | {prec} | {added} | {e:.2} | {i:.2} | {:.0}% | {:.0}% |",
            100.0 * i / e,
            100.0 * ingest.paired_ratio(&embed_only)
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
    use super::Passes;

    /// A machine that slows down round by round: the best passes compare one side's fast
    /// round with the other's, the paired ratio compares passes of the same round and finds
    /// the true 1.25x whatever the drift; the median ignores one disturbed round.
    #[test]
    fn paired_ratio_cancels_drift_that_bests_do_not() {
        let speed = [1.0, 0.8, 0.6, 0.5, 0.9];
        let ours = Passes(speed.iter().map(|s| 10.0 * s).collect());
        let mut peer = Passes(speed.iter().map(|s| 8.0 * s).collect());
        assert_eq!(ours.best(), 10.0);
        assert!((ours.paired_ratio(&peer) - 1.25).abs() < 1e-12);
        // The peer's one good round: best over best halves, the paired median holds.
        peer.0[3] = 20.0;
        assert!((ours.best() / peer.best() - 0.5).abs() < 1e-12);
        assert!((ours.paired_ratio(&peer) - 1.25).abs() < 1e-12);
        // An even count takes the mean of the middle two; nothing paired gives NaN.
        let two = Passes(vec![2.0, 6.0]);
        assert!((two.paired_ratio(&Passes(vec![1.0, 2.0])) - 2.5).abs() < 1e-12);
        assert!(two.paired_ratio(&Passes(Vec::new())).is_nan());
    }
}
