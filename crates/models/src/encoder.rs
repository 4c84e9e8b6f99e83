//! What a loaded model is to the rest of simcase: an [`Encoder`] (pixels in, L2-normalised
//! embeddings out) or a [`TextEncoder`], around any architecture that implements
//! [`ImageModel`] / [`TextModel`]. Batches are split across cores here, once for every model.

use crate::catalogue::ModelSpec;
use crate::tokenizer::TextTokenizer;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use simcase_imaging::{resize_bilinear, Image};

/// An image architecture's forward pass: `(b, 3, s, s)` normalised pixels → raw
/// (unnormalised) `(b, dim)` features.
pub trait ImageModel: Send + Sync {
    /// Raw `(b, dim)` features of a `(b, 3, s, s)` batch of normalised pixels.
    fn forward(&self, pixels: &Tensor) -> Result<Tensor>;
}

/// A text tower's forward pass: one tokenised text → raw `(1, dim)` features.
pub trait TextModel: Send + Sync {
    /// Raw `(1, dim)` features of one tokenised text.
    fn forward(&self, ids: &[u32]) -> Result<Tensor>;
}

/// How an [`Image`] becomes a model input: bilinear resize (PyTorch semantics), then optional
/// per-channel normalisation. A fused encoder (`a+b`) has one input per model: the first
/// model's here, the others' in `also`, concatenated in that order by [`Preprocess::apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Square side the image is resized to.
    pub size: usize,
    /// Per-channel `(mean, std)` applied after the resize, if any.
    pub mean_std: Option<([f32; 3], [f32; 3])>,
    /// The further models' inputs of a fused encoder (empty for one model).
    pub also: Vec<Preprocess>,
}

impl Preprocess {
    /// One model's input: resized to `size`, normalised by `mean_std` if given.
    pub fn new(size: usize, mean_std: Option<([f32; 3], [f32; 3])>) -> Self {
        Self {
            size,
            mean_std,
            also: Vec::new(),
        }
    }

    /// Values of this input alone (`3 × size × size`), without `also`'s.
    pub fn own_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// `3 × size × size` planar values, then those of each `also` input.
    pub fn apply(&self, img: &Image) -> Vec<f32> {
        let mut r = resize_bilinear(img, self.size, self.size).data;
        if let Some((mean, std)) = self.mean_std {
            let n = self.size * self.size;
            for c in 0..3 {
                for v in &mut r[c * n..(c + 1) * n] {
                    *v = (*v - mean[c]) / std[c];
                }
            }
        }
        for p in &self.also {
            r.extend(p.apply(img));
        }
        r
    }
}

/// An image encoder: preprocessed pixels in, L2-normalised embeddings out.
pub trait Encoder: Send + Sync {
    /// The catalogue name of the model.
    fn name(&self) -> &str;
    /// Length of the embeddings.
    fn dim(&self) -> usize;
    /// How images become this encoder's input.
    fn preprocess(&self) -> &Preprocess;
    /// Raw (unnormalised) features for a `(b, 3, s, s)` batch.
    fn features(&self, pixels: &Tensor) -> Result<Tensor>;
    /// The device the model runs on.
    fn device(&self) -> &Device;

    /// Embed already-preprocessed inputs; rows come back L2-normalised.
    fn embed(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.preprocess().size;
        let mut flat = Vec::with_capacity(inputs.len() * 3 * s * s);
        for x in inputs {
            anyhow::ensure!(x.len() == 3 * s * s, "input is not 3x{s}x{s}");
            flat.extend_from_slice(x);
        }
        let t = Tensor::from_vec(flat, (inputs.len(), 3, s, s), self.device())?;
        let f = self.features(&t)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(f.into_iter().map(l2_normalize).collect())
    }

    /// Preprocess and embed decoded images.
    fn embed_images(&self, imgs: &[&Image]) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<Vec<f32>> = imgs.iter().map(|i| self.preprocess().apply(i)).collect();
        self.embed(&inputs)
    }
}

/// Scales `v` to unit L2 norm (an all-zero vector is returned unchanged).
pub fn l2_normalize(mut v: Vec<f32>) -> Vec<f32> {
    l2_normalize_in_place(&mut v);
    v
}

/// [`l2_normalize`] in place, for a slice (an all-zero slice stays zero).
pub fn l2_normalize_in_place(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// A catalogue model with its weights loaded: the [`Encoder`] every image model is served as.
pub(crate) struct Loaded {
    spec: ModelSpec,
    pre: Preprocess,
    device: Device,
    model: Box<dyn ImageModel>,
    /// One single-thread pool per core, for batch-parallel CPU inference (see `features`).
    lanes: Vec<rayon::ThreadPool>,
}

impl Loaded {
    pub(crate) fn new(spec: ModelSpec, model: Box<dyn ImageModel>, device: &Device) -> Self {
        Self {
            pre: spec.preprocess(),
            spec,
            device: device.clone(),
            model,
            lanes: cpu_lanes(device),
        }
    }
}

/// Run one forward on a rayon pool thread when it runs on the CPU. From outside the pool, every
/// parallel op of a forward (about a hundred an image) is a job injected into the pool while
/// the caller sleeps on a latch: two wake-ups per op, and a third thread on two cores. Inside,
/// an op splits by work stealing between the pool's threads. In-process A/B on a 2-core Zen 4
/// (alternating images, 64 per window): 4–6% faster at f32, 10–16% at bf16, 12–19% at int8
/// (DINOv2-S, batch 1).
fn on_pool<T: Send>(device: &Device, forward: impl FnOnce() -> T + Send) -> T {
    if device.is_cpu() {
        rayon::scope(|_| forward())
    } else {
        forward()
    }
}

/// Single-thread pools, one per core. Splitting a batch across cores (each core runs whole
/// images) beats splitting every GEMM across cores: no barrier per layer, and each core keeps
/// its own activations in cache. Measured on the 2-core target: +20% for DINOv2-S at batch 16.
/// Each lane then runs one image at a time, taking the batch's next, not a sub-batch: one
/// image's activations (257 × 1536 floats at most for DINOv2-S) stay near the core, eight
/// images' do not. Measured
/// on a 2-core Zen 3 at batch 16, three runs each: DINOv2-S 8.3–8.7 img/s against 6.9–7.5,
/// EfficientNet-Lite0 58–72 against 51, LiteMedSAM (batch 4) 0.79 against 0.70.
fn cpu_lanes(device: &Device) -> Vec<rayon::ThreadPool> {
    if !device.is_cpu() {
        return Vec::new();
    }
    let n = rayon::current_num_threads();
    if n < 2 {
        return Vec::new();
    }
    (0..n)
        .filter_map(|i| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("simcase-lane-{i}"))
                .build()
                .ok()
        })
        .collect()
}

impl Encoder for Loaded {
    fn name(&self) -> &str {
        self.spec.name
    }
    fn dim(&self) -> usize {
        self.spec.dim
    }
    fn preprocess(&self) -> &Preprocess {
        &self.pre
    }
    fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        if self.lanes.len() < 2 || b < 2 {
            return on_pool(&self.device, || self.model.forward(pixels));
        }
        // Each lane takes the next image until none is left, so an odd batch or a slowed
        // core does not leave the other lanes waiting.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let model = self.model.as_ref();
        let lane = |pool: &rayon::ThreadPool| -> Result<Vec<(usize, Tensor)>> {
            pool.install(|| {
                let mut rows = Vec::new();
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if j >= b {
                        return Ok(rows);
                    }
                    rows.push((j, model.forward(&pixels.narrow(0, j, 1)?)?));
                }
            })
        };
        let parts: Vec<Result<Vec<(usize, Tensor)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .lanes
                .iter()
                .take(b)
                .map(|pool| s.spawn(|| lane(pool)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("encoder lane panicked")))
                })
                .collect()
        });
        let mut rows = Vec::with_capacity(b);
        for part in parts {
            rows.extend(part?);
        }
        rows.sort_unstable_by_key(|(j, _)| *j);
        let rows: Vec<Tensor> = rows.into_iter().map(|(_, t)| t).collect();
        Ok(Tensor::cat(&rows, 0)?)
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// A text tower that embeds into its image encoder's space (CLIP family), for text-to-image
/// search.
pub trait TextEncoder: Send + Sync {
    /// The catalogue name of the model.
    fn name(&self) -> &str;
    /// Length of the embeddings (the image encoder's, as they share a space).
    fn dim(&self) -> usize;
    /// Token ids as the tower sees them (start and end tokens included, truncated).
    fn tokenize(&self, text: &str) -> Result<Vec<u32>>;
    /// Raw (unnormalised) `(1, dim)` features of one tokenised text.
    fn features(&self, ids: &[u32]) -> Result<Tensor>;

    /// L2-normalised embeddings, comparable by cosine with the image embeddings.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        texts
            .iter()
            .map(|t| {
                let f = self.features(&self.tokenize(t)?)?;
                Ok(l2_normalize(f.flatten_all()?.to_vec1::<f32>()?))
            })
            .collect()
    }
}

/// A catalogue model's text tower with its weights and tokenizer loaded.
pub(crate) struct LoadedText {
    pub(crate) spec: ModelSpec,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) model: Box<dyn TextModel>,
    pub(crate) device: Device,
}

impl TextEncoder for LoadedText {
    fn name(&self) -> &str {
        self.spec.name
    }
    fn dim(&self) -> usize {
        self.spec.dim
    }
    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }
    fn features(&self, ids: &[u32]) -> Result<Tensor> {
        on_pool(&self.device, || self.model.forward(ids))
    }
}
