//! One model, loaded once, fed by every request: queries that arrive while a batch is running
//! are embedded together in the next one (up to `max_batch`), so concurrent uploads share
//! GEMMs instead of queueing for the cores one by one.

use anyhow::{anyhow, Result};
use crossbeam_channel::{Receiver, Sender};
use simcase_models::Encoder;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

struct Job {
    input: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// Counters for `/api/stats`: how well requests were batched.
#[derive(Default)]
pub struct BatchStats {
    /// Batches run.
    pub batches: AtomicUsize,
    /// Images embedded.
    pub images: AtomicUsize,
    /// The largest batch so far.
    pub largest: AtomicUsize,
}

/// The server's one model, behind a queue that batches concurrent requests.
pub struct Embedder {
    tx: Sender<Job>,
    pre: simcase_models::Preprocess,
    /// Batching counters.
    pub stats: Arc<BatchStats>,
}

impl Embedder {
    /// Start the embedding thread around `enc`.
    pub fn start(enc: Box<dyn Encoder>, max_batch: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let stats = Arc::new(BatchStats::default());
        let pre = enc.preprocess().clone();
        let s = stats.clone();
        std::thread::Builder::new()
            .name("simcase-embed".into())
            .spawn(move || run(enc, rx, max_batch.max(1), &s))
            .expect("spawning the embedding thread");
        Self { tx, pre, stats }
    }

    /// Preprocessing for this model (done by the caller, off the embedding thread).
    pub fn preprocess(&self) -> &simcase_models::Preprocess {
        &self.pre
    }

    /// Embed one preprocessed input; waits for its batch.
    pub async fn embed(&self, input: Vec<f32>) -> Result<Vec<f32>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { input, reply })
            .map_err(|_| anyhow!("the embedding thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the embedding thread dropped the query"))?
    }
}

fn run(enc: Box<dyn Encoder>, rx: Receiver<Job>, max_batch: usize, stats: &BatchStats) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let inputs: Vec<Vec<f32>> = jobs
            .iter_mut()
            .map(|j| std::mem::take(&mut j.input))
            .collect();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.images.fetch_add(jobs.len(), Ordering::Relaxed);
        stats.largest.fetch_max(jobs.len(), Ordering::Relaxed);
        match enc.embed(&inputs) {
            Ok(vs) => {
                for (j, v) in jobs.into_iter().zip(vs) {
                    let _ = j.reply.send(Ok(v));
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                for j in jobs {
                    let _ = j.reply.send(Err(anyhow!("embedding failed: {msg}")));
                }
            }
        }
    }
}
