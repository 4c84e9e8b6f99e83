//! A synthetic labelled archive drawn from a per-class model fitted to simcase's own embeddings
//! of a labelled manifest (issue 12, data set (b)): large enough to benchmark ANN at millions of
//! rows, with labels, splits and patients kept so that eval's P@1 can be compared between exact
//! and approximate search, and validated against the real data so it is neither easier nor
//! harder than it (see [`validate`]).
//!
//! The model, fitted by method of moments and never tuned on P@1:
//! * one *stratum* per modality, holding the shape of the within-class spread: a PCA of the
//!   pooled within-class residuals (top `rank` components with their variances, plus an
//!   isotropic residual carrying the rest of the trace);
//! * the spread split into a between-patient part (one offset per patient group, shared by its
//!   images) and a within-patient part (per image), from the groups with several images and the
//!   classes with several groups: a CT series is a run of similar slices, a new patient lands
//!   elsewhere;
//! * per class: its mean (full label), a spread scale (its own residual against what the
//!   stratum predicts, shrunk towards 1 by its degrees of freedom), its size and the sizes of
//!   its real patient groups.
//!
//! A draw is `normalise(mean_c + scale_c · (b_group + e_image))`. Every row's vector comes from
//! its own seeded generator (xoshiro256**, seeded by splitmix64 from the seed and the row), so
//! a draw is the same whatever the block size or thread count, and rows stream out in blocks
//! ([`Generator`]): 10M × 384 never needs more than one block in memory.

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// splitmix64: the seeding function (and a fine hash of a `u64`).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** with Box–Muller normals: small, fast and reproducible on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Rng {
    /// A generator seeded from `seed` through splitmix64.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *v = splitmix64(x);
        }
        Self { s, spare: None }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A standard normal (Box–Muller, the second value kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// One real labelled embedding the model is fitted on.
#[derive(Clone, Debug)]
pub struct Sample {
    /// `modality/anatomy/pathology`.
    pub label: String,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Patient (group) key.
    pub group: String,
    /// The L2-normalised embedding.
    pub vector: Vec<f32>,
}

/// The shape of the within-class spread of one modality.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stratum {
    /// The modality.
    pub name: String,
    /// Top principal directions of the pooled within-class residuals, `rank × dim`.
    pub components: Vec<f32>,
    /// Their standard deviations.
    pub sd: Vec<f32>,
    /// Standard deviation per dimension of the isotropic rest.
    pub iso_sd: f32,
    /// Total within-class variance (trace) per image.
    pub total_var: f64,
    /// Between-patient variance (trace): the spread of patient offsets.
    pub between_var: f64,
    /// Within-patient variance (trace): the spread of images around their patient.
    pub within_var: f64,
}

/// One class of the archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Class {
    /// `modality/anatomy/pathology`.
    pub label: String,
    /// Index into [`Model::strata`].
    pub stratum: usize,
    /// The class mean.
    pub mean: Vec<f32>,
    /// Spread scale relative to its stratum.
    pub scale: f32,
    /// Real images of the class.
    pub count: usize,
    /// Sizes of its real patient groups, with their split.
    pub groups: Vec<(String, usize)>,
}

/// The fitted per-class model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    /// The embedding model the real vectors came from.
    pub source: String,
    /// Vector dimension.
    pub dim: usize,
    /// The modalities' spread shapes.
    pub strata: Vec<Stratum>,
    /// The classes, by label.
    pub classes: Vec<Class>,
}

/// How a model is fitted.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// Principal components kept per stratum (the rest is isotropic).
    pub rank: usize,
    /// Pseudo degrees of freedom pulling a class's spread scale towards 1.
    pub scale_prior: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            rank: 64,
            scale_prior: 5.0,
        }
    }
}

fn modality(label: &str) -> &str {
    label.split('/').next().unwrap_or(label)
}

fn sq_dist(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - *y as f64).powi(2)).sum()
}

fn mean_of(vs: &[&[f32]], dim: usize) -> Vec<f64> {
    let mut m = vec![0f64; dim];
    for v in vs {
        for (a, b) in m.iter_mut().zip(v.iter()) {
            *a += *b as f64;
        }
    }
    let n = vs.len().max(1) as f64;
    m.iter_mut().for_each(|a| *a /= n);
    m
}

/// Top-`r` eigenpairs of `RᵀR / dof` for residuals `R` (`n × dim`, row-major), by subspace
/// iteration and a Rayleigh–Ritz step: (variances, components `r × dim`), largest first.
fn top_components(res: &[f64], n: usize, dim: usize, r: usize, dof: f64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(0x5EED);
    // Q: dim × r, stored column-major (r columns of dim values).
    let mut q: Vec<f64> = (0..dim * r).map(|_| rng.normal()).collect();
    let orthonormalise = |q: &mut [f64]| {
        for j in 0..r {
            for i in 0..j {
                let (a, b) = q.split_at_mut(j * dim);
                let qi = &a[i * dim..(i + 1) * dim];
                let qj = &mut b[..dim];
                let d: f64 = qi.iter().zip(qj.iter()).map(|(x, y)| x * y).sum();
                qj.iter_mut().zip(qi).for_each(|(y, x)| *y -= d * x);
            }
            let qj = &mut q[j * dim..(j + 1) * dim];
            let norm = qj.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
            qj.iter_mut().for_each(|x| *x /= norm);
        }
    };
    // Y = R Q (n × r, row-major).
    let project = |q: &[f64]| -> Vec<f64> {
        (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let row = &res[i * dim..(i + 1) * dim];
                (0..r).map(move |j| {
                    row.iter()
                        .zip(&q[j * dim..(j + 1) * dim])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                })
            })
            .collect()
    };
    orthonormalise(&mut q);
    for _ in 0..25 {
        let y = project(&q);
        // Z = Rᵀ Y, column-major dim × r.
        q = (0..r)
            .into_par_iter()
            .flat_map_iter(|j| {
                let mut z = vec![0f64; dim];
                for i in 0..n {
                    let c = y[i * r + j];
                    for (zk, rk) in z.iter_mut().zip(&res[i * dim..(i + 1) * dim]) {
                        *zk += c * rk;
                    }
                }
                z
            })
            .collect();
        orthonormalise(&mut q);
    }
    let y = project(&q);
    let mut b = vec![0f64; r * r];
    for i in 0..n {
        for a in 0..r {
            for c in 0..r {
                b[a * r + c] += y[i * r + a] * y[i * r + c];
            }
        }
    }
    // Eigen pairs, largest first.
    let (vals, vecs) =
        simcase_adapt::linalg::symmetric_eigen(&simcase_adapt::linalg::Square { n: r, a: b });
    let mut comps = vec![0f64; r * dim];
    let mut vars = Vec::with_capacity(r);
    for (out, (val, vec)) in vals.iter().zip(&vecs).enumerate() {
        vars.push((val / dof).max(0.0));
        for j in 0..r {
            let w = vec[j];
            for d in 0..dim {
                comps[out * dim + d] += w * q[j * dim + d];
            }
        }
    }
    (vars, comps)
}

impl Model {
    /// Fit to `samples` (all splits), embeddings of model `source`.
    pub fn fit(samples: &[Sample], source: &str, opts: FitOptions) -> Result<Model> {
        ensure!(!samples.is_empty(), "no labelled embeddings to fit");
        let dim = samples[0].vector.len();
        ensure!(
            samples.iter().all(|s| s.vector.len() == dim),
            "embeddings differ in dimension"
        );
        let mut by_class: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
        for s in samples {
            by_class.entry(s.label.as_str()).or_default().push(s);
        }
        let means: BTreeMap<&str, Vec<f64>> = by_class
            .iter()
            .map(|(l, ss)| {
                let vs: Vec<&[f32]> = ss.iter().map(|s| s.vector.as_slice()).collect();
                (*l, mean_of(&vs, dim))
            })
            .collect();
        let strata_names: Vec<String> = {
            let mut v: Vec<String> = by_class.keys().map(|l| modality(l).to_string()).collect();
            v.dedup();
            v
        };
        // Group sizes per class (a group = one patient in one split).
        let groups_of = |ss: &[&Sample]| -> BTreeMap<(String, String), Vec<usize>> {
            let mut g: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
            for (i, s) in ss.iter().enumerate() {
                g.entry((s.group.clone(), s.split.clone()))
                    .or_default()
                    .push(i);
            }
            g
        };
        let mut strata = Vec::new();
        for name in &strata_names {
            let classes: Vec<&str> = by_class
                .keys()
                .copied()
                .filter(|l| modality(l) == name)
                .collect();
            let n: usize = classes.iter().map(|l| by_class[l].len()).sum();
            let dof = (n - classes.len()) as f64;
            let mut res = Vec::with_capacity(n * dim);
            for l in &classes {
                for s in &by_class[l] {
                    res.extend(s.vector.iter().zip(&means[l]).map(|(x, m)| *x as f64 - m));
                }
            }
            let total: f64 = res.iter().map(|x| x * x).sum();
            let total_var = if dof > 0.0 { total / dof } else { 0.0 };
            let r = opts.rank.min(dim).min(dof as usize);
            let (vars, comps) = if r > 0 {
                top_components(&res, n, dim, r, dof)
            } else {
                (Vec::new(), Vec::new())
            };
            let kept: f64 = vars.iter().sum();
            let iso_var = if dim > r {
                ((total_var - kept) / (dim - r) as f64).max(0.0)
            } else {
                0.0
            };
            // Within-patient variance from groups of several images; between-patient from
            // classes with several groups (method of moments).
            let (mut wn, mut wd) = (0f64, 0f64);
            let (mut bn, mut bd) = (0f64, 0f64);
            let mut per_class = Vec::new();
            for l in &classes {
                let ss = &by_class[l];
                let groups = groups_of(ss);
                let mut sizes = Vec::new();
                for idx in groups.values() {
                    sizes.push(idx.len());
                    if idx.len() > 1 {
                        let vs: Vec<&[f32]> =
                            idx.iter().map(|&i| ss[i].vector.as_slice()).collect();
                        let gm = mean_of(&vs, dim);
                        wn += vs.iter().map(|v| sq_dist(&gm, v)).sum::<f64>();
                        wd += (idx.len() - 1) as f64;
                    }
                }
                let obs: f64 = ss.iter().map(|s| sq_dist(&means[l], &s.vector)).sum();
                per_class.push((obs, ss.len(), sizes));
            }
            let within_var = if wd > 0.0 { wn / wd } else { total_var };
            for (obs, nc, sizes) in &per_class {
                if sizes.len() < 2 {
                    continue;
                }
                let nc = *nc as f64;
                let sum_sq: f64 = sizes.iter().map(|&s| (s * s) as f64).sum();
                bn += obs - (nc - 1.0) * within_var;
                bd += nc - sum_sq / nc;
            }
            let between_var = if wd == 0.0 {
                0.0
            } else if bd > 0.0 {
                (bn / bd).max(0.0)
            } else {
                (total_var - within_var).max(0.0)
            };
            strata.push(Stratum {
                name: name.clone(),
                components: comps.iter().map(|&x| x as f32).collect(),
                sd: vars.iter().map(|v| v.sqrt() as f32).collect(),
                iso_sd: iso_var.sqrt() as f32,
                total_var,
                between_var,
                within_var,
            });
        }
        let mut classes = Vec::new();
        for (l, ss) in &by_class {
            let si = strata_names
                .iter()
                .position(|n| n == modality(l))
                .context("stratum")?;
            let st = &strata[si];
            let groups = groups_of(ss);
            let sizes: Vec<usize> = groups.values().map(|g| g.len()).collect();
            let nc = ss.len() as f64;
            let sum_sq: f64 = sizes.iter().map(|&s| (s * s) as f64).sum();
            let expected = (nc - 1.0) * st.within_var + (nc - sum_sq / nc) * st.between_var;
            let obs: f64 = ss.iter().map(|s| sq_dist(&means[l], &s.vector)).sum();
            let raw = if expected > 0.0 && nc > 1.0 {
                obs / expected
            } else {
                1.0
            };
            let m = nc - 1.0;
            let scale = ((m * raw + opts.scale_prior) / (m + opts.scale_prior)).sqrt();
            classes.push(Class {
                label: l.to_string(),
                stratum: si,
                mean: means[l].iter().map(|&x| x as f32).collect(),
                scale: scale as f32,
                count: ss.len(),
                groups: groups
                    .iter()
                    .map(|((_, split), idx)| (split.clone(), idx.len()))
                    .collect(),
            });
        }
        Ok(Model {
            source: source.to_string(),
            dim,
            strata,
            classes,
        })
    }

    /// Save as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    /// Load a model saved by [`Model::save`].
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let m: Model = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a synthetic-archive model", path.display()))?;
        ensure!(
            m.dim > 0
                && m.classes
                    .iter()
                    .all(|c| c.mean.len() == m.dim && c.stratum < m.strata.len())
                && m.strata
                    .iter()
                    .all(|s| s.components.len() == s.sd.len() * m.dim),
            "{}: inconsistent model (dimensions or strata)",
            path.display()
        );
        Ok(m)
    }

    /// Unit-variance noise shaped like stratum `s` (expected squared norm 1).
    fn shaped_noise(&self, s: &Stratum, rng: &mut Rng, out: &mut [f64]) {
        let norm = 1.0 / s.total_var.max(1e-300).sqrt();
        for o in out.iter_mut() {
            *o = rng.normal() * s.iso_sd as f64 * norm;
        }
        for (k, &sd) in s.sd.iter().enumerate() {
            let z = rng.normal() * sd as f64 * norm;
            let comp = &s.components[k * self.dim..(k + 1) * self.dim];
            for (o, c) in out.iter_mut().zip(comp) {
                *o += z * *c as f64;
            }
        }
    }

    /// The offset shared by one patient group of class `c`.
    fn group_offset(&self, c: usize, seed: u64) -> Vec<f64> {
        let cl = &self.classes[c];
        let s = &self.strata[cl.stratum];
        let mut v = vec![0f64; self.dim];
        self.shaped_noise(s, &mut Rng::new(seed), &mut v);
        let f = s.between_var.sqrt() * cl.scale as f64;
        v.iter_mut().for_each(|x| *x *= f);
        v
    }

    /// One image of class `c` around its group's offset, L2-normalised, into `out`.
    fn image(&self, c: usize, offset: &[f64], seed: u64, out: &mut [f32]) {
        let cl = &self.classes[c];
        let s = &self.strata[cl.stratum];
        let mut v = vec![0f64; self.dim];
        self.shaped_noise(s, &mut Rng::new(seed), &mut v);
        let f = s.within_var.sqrt() * cl.scale as f64;
        for ((x, m), o) in v.iter_mut().zip(&cl.mean).zip(offset) {
            *x = *m as f64 + o + f * *x;
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        for (o, x) in out.iter_mut().zip(&v) {
            *o = (x / n) as f32;
        }
    }

    /// Class sizes for `rows` rows in proportion to the real class sizes (largest remainder).
    pub fn quotas(&self, rows: usize) -> Vec<usize> {
        let total: usize = self.classes.iter().map(|c| c.count).sum();
        let exact: Vec<f64> = self
            .classes
            .iter()
            .map(|c| rows as f64 * c.count as f64 / total.max(1) as f64)
            .collect();
        let mut q: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
        let mut left = rows - q.iter().sum::<usize>();
        let mut order: Vec<usize> = (0..q.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            q[i] += 1;
            left -= 1;
        }
        q
    }
}

/// One synthetic row's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMeta {
    /// Index into [`Model::classes`].
    pub class: u32,
    /// Its patient group (unique within the draw).
    pub group: u64,
    /// 0..100, uniform and independent of the class: `bucket == 0` selects 1% of rows,
    /// `bucket < 10` 10%.
    pub bucket: u8,
}

/// Rows of a draw, streamed in blocks.
pub struct Generator<'a> {
    model: &'a Model,
    seed: u64,
    /// Groups still to emit: (class, size), in order; built lazily for archive draws.
    plan: Plan,
    row: u64,
    group: u64,
    /// Rows left of the current group (class, left, offset).
    current: Option<(usize, usize, Vec<f64>)>,
}

enum Plan {
    /// A fixed list of groups (class, size).
    Fixed(std::vec::IntoIter<(usize, usize)>),
    /// Classes drawn by remaining quota, group sizes from the class's real groups.
    Archive { left: Vec<usize> },
}

impl<'a> Generator<'a> {
    /// `rows` rows with classes in proportion to the real data, in patient groups sized like
    /// the class's real ones.
    pub fn archive(model: &'a Model, rows: usize, seed: u64) -> Self {
        Self {
            model,
            seed,
            plan: Plan::Archive {
                left: model.quotas(rows),
            },
            row: 0,
            group: 0,
            current: None,
        }
    }

    /// The real data's structure exactly: for every real group of `split`, one synthetic
    /// group of the same class and size.
    pub fn like_split(model: &'a Model, split: &str, seed: u64) -> Self {
        let mut groups = Vec::new();
        for (c, cl) in model.classes.iter().enumerate() {
            for (s, n) in &cl.groups {
                if s == split {
                    groups.push((c, *n));
                }
            }
        }
        Self {
            model,
            seed,
            plan: Plan::Fixed(groups.into_iter()),
            row: 0,
            group: 0,
            current: None,
        }
    }

    fn next_group(&mut self) -> Option<(usize, usize)> {
        let mut rng = Rng::new(self.seed ^ splitmix64(0x6A09_E667 ^ self.group));
        match &mut self.plan {
            Plan::Fixed(it) => it.next(),
            Plan::Archive { left } => {
                let total: usize = left.iter().sum();
                if total == 0 {
                    return None;
                }
                let mut pick = rng.below(total as u64) as usize;
                let c = left
                    .iter()
                    .position(|&l| {
                        if pick < l {
                            true
                        } else {
                            pick -= l;
                            false
                        }
                    })
                    .unwrap_or(0);
                let sizes = &self.model.classes[c].groups;
                let size = if sizes.is_empty() {
                    1
                } else {
                    sizes[rng.below(sizes.len() as u64) as usize].1.max(1)
                };
                let size = size.min(left[c]);
                left[c] -= size;
                Some((c, size))
            }
        }
    }

    /// Up to `max` more rows: their labels and their vectors (`n × dim`); `None` when done.
    pub fn next_block(&mut self, max: usize) -> Option<(Vec<RowMeta>, Vec<f32>)> {
        let dim = self.model.dim;
        // Plan the block sequentially (cheap), then draw the vectors in parallel.
        let mut plan: Vec<(RowMeta, usize)> = Vec::new(); // (meta, offset index)
        let mut offsets: Vec<(usize, Vec<f64>)> = Vec::new();
        while plan.len() < max {
            if self.current.as_ref().is_none_or(|c| c.1 == 0) {
                let Some((c, size)) = self.next_group() else {
                    break;
                };
                let offset = self
                    .model
                    .group_offset(c, self.seed ^ splitmix64(0xBB67_AE85 ^ self.group));
                self.group += 1;
                self.current = Some((c, size, offset));
                if size == 0 {
                    continue;
                }
            }
            let Some((c, left, offset)) = self.current.as_mut() else {
                break;
            };
            if offsets.last().is_none_or(|o| o.0 as u64 != self.group - 1) {
                offsets.push(((self.group - 1) as usize, offset.clone()));
            }
            *left -= 1;
            let bucket = (splitmix64(self.seed ^ 0x3C6E_F372 ^ splitmix64(self.row)) % 100) as u8;
            plan.push((
                RowMeta {
                    class: *c as u32,
                    group: self.group - 1,
                    bucket,
                },
                offsets.len() - 1,
            ));
            self.row += 1;
        }
        if plan.is_empty() {
            return None;
        }
        let first_row = self.row - plan.len() as u64;
        let mut vectors = vec![0f32; plan.len() * dim];
        vectors
            .par_chunks_mut(dim)
            .zip(plan.par_iter())
            .enumerate()
            .for_each(|(i, (out, (meta, oi)))| {
                let seed = self.seed ^ splitmix64(first_row + i as u64);
                self.model
                    .image(meta.class as usize, &offsets[*oi].1, seed, out);
            });
        Some((plan.into_iter().map(|p| p.0).collect(), vectors))
    }
}

/// P@1 (micro, the paper's modified P@N) at the three label levels, for queries with labels
/// `query_labels` whose ranked neighbours are rows of an index labelled `index_labels`.
pub fn p_at_1(
    index_labels: &[&str],
    query_labels: &[&str],
    hits: &[Vec<simcase_index::Hit>],
) -> [f64; 3] {
    let mut out = [0f64; 3];
    for (lvl, o) in out.iter_mut().enumerate() {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for l in index_labels {
            *counts.entry(simcase_eval::at_level(l, lvl)).or_default() += 1;
        }
        let qs: Vec<(String, Vec<String>)> = query_labels
            .iter()
            .zip(hits)
            .map(|(q, hs)| {
                let ranked = hs
                    .iter()
                    .take(1)
                    .map(|h| simcase_eval::at_level(index_labels[h.row as usize], lvl))
                    .collect();
                (simcase_eval::at_level(q, lvl), ranked)
            })
            .collect();
        *o = simcase_eval::precision_report(&qs, &counts)
            .p
            .get(&1)
            .map_or(0.0, |m| m.micro);
    }
    out
}

/// P@1 of `test` rows against `train` rows under exact search.
pub fn exact_p_at_1(dim: usize, train: (&[f32], &[&str]), test: (&[f32], &[&str])) -> [f64; 3] {
    let qs: Vec<&[f32]> = test.0.chunks_exact(dim).collect();
    let hits = simcase_index::search_rows(train.0, dim, &qs, 1, None);
    p_at_1(train.1, test.1, &hits)
}

/// The generator's check against the real data.
#[derive(Clone, Debug, Serialize)]
pub struct Validation {
    /// The embedding model.
    pub source: String,
    /// Real P@1 (index = train, queries = test) at modality, modality/anatomy, full label.
    pub real: [f64; 3],
    /// P@1 of each synthetic draw (same classes, groups and counts per split as the real data).
    pub draws: Vec<[f64; 3]>,
    /// Their mean.
    pub mean: [f64; 3],
    /// mean − real.
    pub diff: [f64; 3],
    /// Median cosine of a real test image to its nearest real train image.
    pub real_nn_cos: f64,
    /// Median cosine of a synthetic test image to its nearest *real* image (any split): a
    /// near-copy generator would push this towards 1.
    pub synth_to_real_nn_cos: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Draw the real data's structure (every real group of train and test, same class and size)
/// once per seed and score each draw with the paper's protocol under exact search, beside the
/// real data's own score.
pub fn validate(samples: &[Sample], model: &Model, seeds: &[u64]) -> Result<Validation> {
    let dim = model.dim;
    let pick = |split: &str| -> (Vec<f32>, Vec<&str>) {
        let ss: Vec<&Sample> = samples.iter().filter(|s| s.split == split).collect();
        (
            ss.iter().flat_map(|s| s.vector.iter().copied()).collect(),
            ss.iter().map(|s| s.label.as_str()).collect(),
        )
    };
    let (rtr, rtr_l) = pick("train");
    let (rte, rte_l) = pick("test");
    ensure!(
        !rtr_l.is_empty() && !rte_l.is_empty(),
        "validation needs train and test rows"
    );
    let real = exact_p_at_1(dim, (&rtr, &rtr_l), (&rte, &rte_l));
    let cos_to = |base: &[f32], q: &[f32]| -> f64 {
        let qs: Vec<&[f32]> = q.chunks_exact(dim).collect();
        median(
            simcase_index::search_rows(base, dim, &qs, 1, None)
                .iter()
                .map(|h| h.first().map_or(0.0, |h| h.score as f64))
                .collect(),
        )
    };
    let real_nn_cos = cos_to(&rtr, &rte);
    let all_real: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.vector.iter().copied())
        .collect();
    let mut draws = Vec::new();
    let mut near = Vec::new();
    for &seed in seeds {
        let draw = |split: &str, seed: u64| -> (Vec<f32>, Vec<&str>) {
            let mut g = Generator::like_split(model, split, seed);
            let (mut v, mut l) = (Vec::new(), Vec::new());
            while let Some((meta, vs)) = g.next_block(4096) {
                v.extend(vs);
                l.extend(
                    meta.iter()
                        .map(|m| model.classes[m.class as usize].label.as_str()),
                );
            }
            (v, l)
        };
        let (str_, str_l) = draw("train", seed);
        let (ste, ste_l) = draw("test", splitmix64(seed ^ 0x7E57));
        draws.push(exact_p_at_1(dim, (&str_, &str_l), (&ste, &ste_l)));
        near.push(cos_to(&all_real, &ste));
    }
    let n = draws.len().max(1) as f64;
    let mut mean = [0f64; 3];
    for d in &draws {
        for (m, x) in mean.iter_mut().zip(d) {
            *m += x / n;
        }
    }
    let diff = [mean[0] - real[0], mean[1] - real[1], mean[2] - real[2]];
    Ok(Validation {
        source: model.source.clone(),
        real,
        draws,
        mean,
        diff,
        real_nn_cos,
        synth_to_real_nn_cos: median(near),
    })
}

impl Validation {
    /// The comparison as a Markdown table.
    pub fn render(&self) -> String {
        let mut s = format!(
            "Synthetic archive check ({}, {} draws the size of dev.csv, exact search, P@1 micro):\n\n\
             | level | real | synthetic (mean) | min | max | difference |\n|---|---:|---:|---:|---:|---:|\n",
            self.source,
            self.draws.len()
        );
        for (i, lvl) in simcase_eval::LEVELS.iter().enumerate() {
            let v: Vec<f64> = self.draws.iter().map(|d| d[i]).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            s += &format!(
                "| {lvl} | {:.3} | {:.3} | {lo:.3} | {hi:.3} | {:+.3} |\n",
                self.real[i], self.mean[i], self.diff[i]
            );
        }
        s += &format!(
            "\nmedian cosine to the nearest real image: real test→train {:.3}, synthetic test→real {:.3}\n",
            self.real_nn_cos, self.synth_to_real_nn_cos
        );
        s
    }
}

/// Fit (or load from `cache`) the model of `model_id`'s embeddings of the labelled `manifest`,
/// embedding it through eval's cached per-model index under `work`; also returns the samples.
pub fn fit_from_manifest(
    manifest: &Path,
    model_id: simcase_models::ModelId,
    work: &Path,
    opts: FitOptions,
) -> Result<(Model, Vec<Sample>)> {
    let eval_opts = simcase_eval::protocol::Options {
        manifest: manifest.to_path_buf(),
        work: Some(work.join("eval")),
        batch: 16,
        quiet: true,
    };
    let (reader, rows, _missing) = simcase_eval::protocol::embed_manifest(
        &eval_opts,
        model_id,
        Some(simcase_query::GroupBy::Patient),
    )?;
    let mut samples = Vec::with_capacity(rows.len());
    for r in &rows {
        let v = reader
            .vector(r.id())
            .with_context(|| format!("{}: no embedding for item {}", manifest.display(), r.id()))?;
        samples.push(Sample {
            label: r.label().to_string(),
            split: r.split().to_string(),
            group: r.group().to_string(),
            vector: v.to_vec(),
        });
    }
    let cache = work.join(format!(
        "synth-model-{model_id}-r{}-p{}.json",
        opts.rank, opts.scale_prior
    ));
    let model = match Model::load(&cache) {
        Ok(m) if m.classes.iter().map(|c| c.count).sum::<usize>() == samples.len() => m,
        _ => {
            let m = Model::fit(&samples, model_id.name(), opts)?;
            m.save(&cache)?;
            m
        }
    };
    Ok((model, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes in two modalities, patients of several images, around distinct means.
    fn toy() -> Vec<Sample> {
        let dim = 16;
        let mut rng = Rng::new(9);
        let mut out = Vec::new();
        for (ci, (label, n, per)) in [
            ("CT/chest/a", 40, 4),
            ("CT/chest/b", 20, 2),
            ("MR/brain/c", 12, 1),
        ]
        .into_iter()
        .enumerate()
        {
            for i in 0..n {
                let mut v: Vec<f32> = (0..dim)
                    .map(|d| if d == ci { 3.0 } else { 0.0 } + rng.normal() as f32 * 0.4)
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                out.push(Sample {
                    label: label.into(),
                    split: if i % 3 == 0 { "test" } else { "train" }.into(),
                    group: format!("p{}", i / per),
                    vector: v,
                });
            }
        }
        out
    }

    fn draw(model: &Model, rows: usize, seed: u64, block: usize) -> (Vec<RowMeta>, Vec<f32>) {
        let mut g = Generator::archive(model, rows, seed);
        let (mut m, mut v) = (Vec::new(), Vec::new());
        while let Some((mm, vv)) = g.next_block(block) {
            assert!(mm.len() <= block);
            m.extend(mm);
            v.extend(vv);
        }
        (m, v)
    }

    #[test]
    fn a_draw_is_fixed_by_its_seed_and_keeps_class_proportions() {
        let model = Model::fit(
            &toy(),
            "toy",
            FitOptions {
                rank: 4,
                scale_prior: 5.0,
            },
        )
        .unwrap();
        assert_eq!(model.classes.len(), 3);
        let rows = 7200;
        let (m1, v1) = draw(&model, rows, 42, 1000);
        // Another block size, same rows: blocks and threads do not change a draw.
        let (m2, v2) = draw(&model, rows, 42, 333);
        assert_eq!(m1, m2);
        assert_eq!(v1, v2);
        let (m3, v3) = draw(&model, rows, 43, 1000);
        assert_ne!(v1, v3);
        assert_ne!(m1, m3);
        // Classes exactly in proportion 40 : 20 : 12.
        let mut counts = [0usize; 3];
        for m in &m1 {
            counts[m.class as usize] += 1;
        }
        assert_eq!(counts, [4000, 2000, 1200]);
        // 10 rows of 40 : 20 : 12 = 5.56 : 2.78 : 1.67, largest remainders first.
        assert_eq!(model.quotas(10), vec![5, 3, 2]);
        // Unit vectors, and near their class mean rather than another's.
        for (m, v) in m1.iter().zip(v1.chunks_exact(model.dim)) {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4, "norm² {n}");
            let best = (0..3)
                .max_by(|&a, &b| {
                    let d = |c: usize| simcase_index::dot(v, &model.classes[c].mean);
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            assert_eq!(best, m.class as usize);
        }
        // Buckets: about 1% are 0 and 10% below 10.
        let b0 = m1.iter().filter(|m| m.bucket == 0).count() as f64 / rows as f64;
        let b10 = m1.iter().filter(|m| m.bucket < 10).count() as f64 / rows as f64;
        assert!(
            (0.005..0.015).contains(&b0) && (0.085..0.115).contains(&b10),
            "{b0} {b10}"
        );
        // Groups are runs of one class, sized like the class's real groups (4, 2 or 1).
        let mut sizes: BTreeMap<u64, (u32, usize)> = BTreeMap::new();
        for m in &m1 {
            let e = sizes.entry(m.group).or_insert((m.class, 0));
            assert_eq!(e.0, m.class);
            e.1 += 1;
        }
        for (c, n) in sizes.values() {
            assert!(*n <= [4, 2, 1][*c as usize], "class {c} group of {n}");
        }
    }

    #[test]
    fn like_split_copies_the_real_structure_and_the_model_round_trips() {
        let samples = toy();
        let model = Model::fit(&samples, "toy", FitOptions::default()).unwrap();
        let mut g = Generator::like_split(&model, "test", 1);
        let (meta, _) = g.next_block(usize::MAX).unwrap();
        let real_test = samples.iter().filter(|s| s.split == "test").count();
        assert_eq!(meta.len(), real_test);
        let dir = std::env::temp_dir().join(format!("simcase-synth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.json");
        model.save(&p).unwrap();
        let back = Model::load(&p).unwrap();
        assert_eq!(back.classes.len(), model.classes.len());
        assert_eq!(back.classes[1].mean, model.classes[1].mean);
        std::fs::write(&p, b"{\"source\":1}").unwrap();
        let e = Model::load(&p).unwrap_err().to_string();
        assert!(e.contains("m.json: not a synthetic-archive model"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn components_are_the_top_eigenvectors() {
        // Residuals with variance 9 along e0, 4 along e1 and 1 elsewhere.
        let (n, dim) = (4000, 8);
        let mut rng = Rng::new(3);
        let mut res = Vec::new();
        for _ in 0..n {
            for d in 0..dim {
                let sd = [3.0, 2.0][..].get(d).copied().unwrap_or(1.0);
                res.push(rng.normal() * sd);
            }
        }
        let (vars, comps) = top_components(&res, n, dim, 2, n as f64);
        assert!(
            (vars[0] - 9.0).abs() < 0.6 && (vars[1] - 4.0).abs() < 0.3,
            "{vars:?}"
        );
        assert!(comps[0].abs() > 0.99 && comps[dim + 1].abs() > 0.99);
    }
}
