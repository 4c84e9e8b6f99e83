//! Compact vectors: f16 or 8-bit scalar-quantised copies of `vectors.f32`, scanned first to
//! find candidates that the f32 rows (memory-mapped, on disk) then re-rank exactly. The
//! compact file is a cache of `vectors.f32`, which stays the truth and is never rewritten: it
//! is validated on open (header checksum, dimension, length) and repaired or rebuilt from the
//! f32 rows with one `warn!` line, and a reader that finds it short scans the uncovered rows
//! exactly, so a stale cache can cost speed but never change a result.
//!
//! File layout (little-endian): `SIMCVEC\0`, format version (u32), precision (u32: 1 f16,
//! 2 i8), dim (u32), 0 (u32), rows the quantiser was fitted on (u64), the quantiser's
//! parameters (i8: `dim` offsets then `dim` scales, f32), the first 8 bytes of the SHA-256
//! of everything before them, zero padding to a multiple of 64; then rows, append-only.

use crate::flat::{par_topk, search_rows, TopK, GEMM_MIN_QUERIES};
use crate::store::durable;
use crate::Hit;
use anyhow::{bail, Context, Result};
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use simcase_kernels::{f16_bits, kernels, sgemm, MatMut, MatRef, Threads};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::str::FromStr;

/// How an index keeps the vectors its search scans first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Only `vectors.f32`: exact scan, 4 B per value.
    #[default]
    F32,
    /// `vectors.f16` (2 B per value), candidates re-ranked with the f32 rows.
    F16,
    /// `vectors.i8` (1 B per value, scalar-quantised per dimension), candidates re-ranked
    /// with the f32 rows.
    I8,
}

impl Precision {
    /// Every precision, widest first.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::I8];

    /// The name `--precision` takes and `meta` stores.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::I8 => "i8",
        }
    }

    /// The compact file of this precision in an index folder (`None` for f32, which has none).
    pub fn file_name(self) -> Option<&'static str> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some("vectors.f16"),
            Precision::I8 => Some("vectors.i8"),
        }
    }

    fn code(self) -> u32 {
        match self {
            Precision::F32 => 0,
            Precision::F16 => 1,
            Precision::I8 => 2,
        }
    }

    /// Bytes per value.
    pub fn bytes_per_value(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
            Precision::I8 => 1,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        Precision::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(t))
            .with_context(|| format!("unknown precision {s:?}: choose one of f32, f16, i8"))
    }
}

/// The default re-rank factor: the compact scan keeps `max(k·REFINE, k + 32)` candidates for
/// the exact f32 re-rank. Measured on 200k × 384 clustered unit vectors (the ignored
/// `measure_scan_speed_and_recall_by_refine` test): i8 recall@10 and recall@100 are already
/// 1.0 at factor 1, and the re-rank of a few hundred rows costs well under the noise of the
/// scan, so 4 is a margin for real archives with denser neighbourhoods.
pub const REFINE: usize = 4;

/// Candidates the compact scan keeps for a top-`k` with re-rank factor `refine`.
pub fn candidates(k: usize, refine: usize) -> usize {
    k.saturating_mul(refine.max(1)).max(k.saturating_add(32))
}

/// A per-dimension affine scalar quantiser: `x_d ≈ off_d + scale_d·c` with `c` in −127..=127.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantiser {
    off: Vec<f32>,
    scale: Vec<f32>,
}

impl Quantiser {
    /// Fitted to the range of each dimension over `rows` (row-major, `dim` values each); with
    /// no rows, the range −1..1 of a unit vector's values. Values outside the fitted range
    /// (rows added later) are clamped.
    pub fn fit(rows: &[f32], dim: usize) -> Self {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for r in rows.chunks_exact(dim.max(1)) {
            for d in 0..dim {
                let v = r[d];
                if v.is_finite() {
                    lo[d] = lo[d].min(v);
                    hi[d] = hi[d].max(v);
                }
            }
        }
        let mut off = Vec::with_capacity(dim);
        let mut scale = Vec::with_capacity(dim);
        for d in 0..dim {
            let (l, h) = if lo[d] <= hi[d] {
                (lo[d], hi[d])
            } else {
                (-1.0, 1.0)
            };
            off.push(0.5 * (l + h));
            scale.push(((h - l) / 254.0).max(1e-9));
        }
        Self { off, scale }
    }

    fn encode_into(&self, v: &[f32], out: &mut Vec<i8>) {
        for ((&x, &o), &s) in v.iter().zip(&self.off).zip(&self.scale) {
            let c = ((x - o) / s).round();
            // NaN clamps to 0 through the cast.
            out.push(c.clamp(-127.0, 127.0) as i8);
        }
    }

    /// The query weights `q_d·scale_d` and the bias `Σ q_d·off_d`: `q·x ≈ dot_i8(q', c) + bias`.
    pub fn query(&self, q: &[f32]) -> (Vec<f32>, f32) {
        let w = q.iter().zip(&self.scale).map(|(a, s)| a * s).collect();
        let bias = q.iter().zip(&self.off).map(|(a, o)| a * o).sum();
        (w, bias)
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.off
            .iter()
            .chain(&self.scale)
            .flat_map(|x| x.to_le_bytes())
            .collect()
    }
}

/// The compact rows themselves: owned (built in memory) or the rows of a mapped file.
enum Codes {
    F16(Vec<u16>),
    I8(Vec<i8>),
    Mapped { map: memmap2::Mmap, start: usize },
}

/// Compact rows of one precision, searchable with an exact f32 re-rank: what an index folder's
/// `vectors.f16`/`vectors.i8` holds, or built in memory from rows by [`CompactRows::from_rows`].
pub struct CompactRows {
    precision: Precision,
    dim: usize,
    rows: usize,
    quant: Option<Quantiser>,
    codes: Codes,
}

fn encode_rows(precision: Precision, quant: Option<&Quantiser>, rows: &[f32]) -> Vec<u8> {
    match (precision, quant) {
        (Precision::I8, Some(q)) => {
            let mut v = Vec::with_capacity(rows.len());
            for r in rows.chunks_exact(q.off.len().max(1)) {
                q.encode_into(r, &mut v);
            }
            v.into_iter().map(|c| c as u8).collect()
        }
        _ => rows
            .iter()
            .flat_map(|&x| f16_bits(x).to_le_bytes())
            .collect(),
    }
}

impl CompactRows {
    /// Compact copies of `rows` (row-major, `dim` values each) in memory: f16 by rounding,
    /// i8 with a [`Quantiser`] fitted to them. For benchmarks and tests; an index keeps its
    /// compact rows in a file. `F32` has no compact form and is refused.
    pub fn from_rows(precision: Precision, rows: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            bail!("{} values are not whole rows of {dim}", rows.len());
        }
        let n = rows.len() / dim;
        Ok(match precision {
            Precision::F32 => bail!("f32 has no compact rows"),
            Precision::F16 => Self {
                precision,
                dim,
                rows: n,
                quant: None,
                codes: Codes::F16(rows.iter().map(|&x| f16_bits(x)).collect()),
            },
            Precision::I8 => {
                let q = Quantiser::fit(rows, dim);
                let mut codes = Vec::with_capacity(rows.len());
                for r in rows.chunks_exact(dim) {
                    q.encode_into(r, &mut codes);
                }
                Self {
                    precision,
                    dim,
                    rows: n,
                    quant: Some(q),
                    codes: Codes::I8(codes),
                }
            }
        })
    }

    /// The precision of the rows.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Rows held (an index's may cover fewer than its committed rows; the rest are scanned
    /// exactly).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of compact data (rows only).
    pub fn bytes(&self) -> usize {
        self.rows * self.dim * self.precision.bytes_per_value()
    }

    fn f16_rows(&self) -> &[u16] {
        match &self.codes {
            Codes::F16(v) => v,
            Codes::Mapped { map, start } => {
                let b = &map[*start..*start + self.bytes()];
                // SAFETY: any bit pattern is a valid u16; the map is page-aligned and `start`
                // a multiple of 64, so the prefix is empty (checked).
                let (pre, v, _) = unsafe { b.align_to::<u16>() };
                assert!(pre.is_empty(), "compact rows are aligned");
                v
            }
            Codes::I8(_) => &[],
        }
    }

    fn i8_rows(&self) -> &[i8] {
        match &self.codes {
            Codes::I8(v) => v,
            Codes::Mapped { map, start } => {
                let b = &map[*start..*start + self.bytes()];
                // SAFETY: u8 and i8 have the same size, alignment and valid bit patterns.
                unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
            }
            Codes::F16(_) => &[],
        }
    }

    /// The compact stage's estimate of `q · row r` (the bias of i8 included).
    pub fn approx_score(&self, q: &[f32], r: usize) -> Option<f32> {
        if r >= self.rows {
            return None;
        }
        let d = self.dim;
        Some(match &self.quant {
            Some(qt) => {
                let (w, bias) = qt.query(q);
                kernels().dot_i8(&w, &self.i8_rows()[r * d..(r + 1) * d]) + bias
            }
            None => kernels().dot_f16(q, &self.f16_rows()[r * d..(r + 1) * d]),
        })
    }

    /// Top-`k` by exact inner product, as [`search_rows`] over `exact` (the f32 rows these
    /// compact rows are copies of; rows past [`len`](Self::len) are scanned exactly), with
    /// the default re-rank factor [`REFINE`].
    pub fn search(
        &self,
        exact: &[f32],
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Vec<Vec<Hit>> {
        self.search_refine(exact, queries, k, keep, REFINE)
    }

    /// [`search`](Self::search) keeping `max(k·refine, k + 32)` candidates from the compact
    /// scan for the exact re-rank. Scores are the exact f32 inner products (the same kernel as
    /// a single-query flat scan), best first, ties by ascending row; `keep` is applied during
    /// the scan.
    pub fn search_refine(
        &self,
        exact: &[f32],
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
        refine: usize,
    ) -> Vec<Vec<Hit>> {
        let dim = self.dim;
        let total = exact.len() / dim.max(1);
        if k == 0 || total == 0 || queries.is_empty() {
            return vec![Vec::new(); queries.len()];
        }
        let covered = self.rows.min(total);
        let cand = candidates(k, refine);
        if cand >= covered {
            // Every compact row would be a candidate: the exact scan is the same answer, cheaper.
            return search_rows(exact, dim, queries, k, keep);
        }
        let kern = kernels();
        // Stage 1: the compact scan. i8 queries carry their quantiser weights; the bias is the
        // same for every row of a query, so ranking ignores it.
        let weights: Vec<Vec<f32>> = match &self.quant {
            Some(qt) => queries.iter().map(|q| qt.query(q).0).collect(),
            None => Vec::new(),
        };
        let (f16, i8) = (self.f16_rows(), self.i8_rows());
        let nq = queries.len();
        if nq >= GEMM_MIN_QUERIES {
            // Batch: the queries (or their i8 weights) as one row-major matrix for the GEMM.
            let mut qmat = Vec::with_capacity(nq * dim);
            for (qi, q) in queries.iter().enumerate() {
                qmat.extend_from_slice(if self.quant.is_some() {
                    &weights[qi]
                } else {
                    &q[..dim]
                });
            }
            let stage = par_topk(covered, nq, cand, |start, end, tops| {
                self.scan_gemm(&qmat, nq, start, end, keep, tops)
            });
            return self.rerank(exact, queries, k, keep, stage);
        }
        let stage = par_topk(covered, nq, cand, |start, end, tops| {
            const BLOCK: usize = 256;
            for b in (start..end).step_by(BLOCK) {
                let be = (b + BLOCK).min(end);
                for (qi, top) in tops.iter_mut().enumerate() {
                    for r in b..be {
                        if keep.is_some_and(|f| !f(r as u64)) {
                            continue;
                        }
                        let s = if self.quant.is_some() {
                            kern.dot_i8(&weights[qi], &i8[r * dim..(r + 1) * dim])
                        } else {
                            kern.dot_f16(queries[qi], &f16[r * dim..(r + 1) * dim])
                        };
                        top.push(r as u64, s);
                    }
                }
            }
        });
        self.rerank(exact, queries, k, keep, stage)
    }

    /// The compact scores of rows `start..end` for every query at once (`qmat`: `nq` rows
    /// of `dim`, the i8 weights or the f16 path's queries): the rows are widened to f32 into
    /// a scratch block (exactly: every f16 and every code is an f32), then one GEMM scores
    /// the block against all queries, which reads each row once per batch instead of once per
    /// query. The sums are the single-query kernels' up to rounding order.
    fn scan_gemm(
        &self,
        qmat: &[f32],
        nq: usize,
        start: usize,
        end: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
        tops: &mut [TopK],
    ) {
        thread_local! {
            /// Each thread's widened block and scores, reused across chunks and searches.
            static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        let dim = self.dim;
        let rows = end - start;
        SCRATCH.with_borrow_mut(|(block, scores)| {
            block.resize(rows * dim, 0.0);
            if self.quant.is_some() {
                let codes = &self.i8_rows()[start * dim..end * dim];
                block
                    .iter_mut()
                    .zip(codes)
                    .for_each(|(x, &c)| *x = c as f32);
            } else {
                self.f16_rows()[start * dim..end * dim]
                    .reinterpret_cast::<half::f16>()
                    .convert_to_f32_slice(block.as_mut_slice());
            }
            scores.resize(nq * rows, 0.0);
            // scores (nq×rows) = qmat (nq×dim) · blockᵀ (dim×rows); the shapes fit by
            // construction.
            let shapes = MatMut::row_major(scores, nq, rows).and_then(|s| {
                let q = MatRef::row_major(qmat, nq, dim)?;
                let b = MatRef::row_major(block, rows, dim)?.t();
                sgemm(s, false, q, b, Threads::One)
            });
            if let Err(e) = shapes {
                unreachable!("compact batch scan: {e}");
            }
            let kept: Vec<bool> = (start..end)
                .map(|r| keep.is_none_or(|f| f(r as u64)))
                .collect();
            for (top, srow) in tops.iter_mut().zip(scores.chunks_exact(rows)) {
                top.push_row_scores(start, srow, &kept);
            }
        })
    }

    /// Stage 2: the exact f32 re-rank of each query's compact candidates (`stage`), with the
    /// rows the compact file does not cover scanned exactly; the queries in parallel.
    fn rerank(
        &self,
        exact: &[f32],
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
        stage: Vec<TopK>,
    ) -> Vec<Vec<Hit>> {
        let dim = self.dim;
        let total = exact.len() / dim.max(1);
        let covered = self.rows.min(total);
        let kern = kernels();
        // Rows the compact file does not cover yet: exactly, in f32.
        let tail: Vec<Vec<Hit>> = if covered < total {
            let shifted = |r: u64| keep.is_none_or(|f| f(r + covered as u64));
            search_rows(&exact[covered * dim..], dim, queries, k, Some(&shifted))
        } else {
            vec![Vec::new(); queries.len()]
        };
        // Exact re-rank of the candidates with the f32 rows.
        stage
            .into_par_iter()
            .zip(tail)
            .zip(queries)
            .map(|((cands, tail), q)| {
                let cands = cands.into_sorted();
                let mut top = TopK::new(k, cands.len() + tail.len());
                for h in cands {
                    let r = h.row as usize;
                    top.push(h.row, kern.dot(q, &exact[r * dim..(r + 1) * dim]));
                }
                for h in tail {
                    // Re-scored with the same kernel as the candidates (a batch of queries
                    // scans the tail by GEMM, whose last bits may differ).
                    let r = h.row as usize + covered;
                    top.push(r as u64, kern.dot(q, &exact[r * dim..(r + 1) * dim]));
                }
                top.into_sorted()
            })
            .collect()
    }
}

// ---- the index's setting ----

/// The `meta` key of an index's precision (absent: f32).
const META_KEY: &str = "precision";

/// The precision stored in an index's `meta` table (f32 when absent); an unknown value is an
/// error naming it.
pub(crate) fn stored(conn: &rusqlite::Connection) -> Result<Precision> {
    use rusqlite::OptionalExtension;
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_KEY], |r| {
            r.get(0)
        })
        .optional()?;
    v.map_or(Ok(Precision::F32), |v| v.parse())
}

/// Record `p` in `meta`, in one transaction of its own.
pub(crate) fn record(conn: &rusqlite::Connection, p: Precision) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [META_KEY, p.name()],
    )?;
    tx.commit()?;
    Ok(())
}

// ---- the file -------------------------------------------------------------------------------

const MAGIC: &[u8; 8] = b"SIMCVEC\0";
const FORMAT: u32 = 1;
/// Bytes before the parameters.
const FIXED: usize = 32;

fn header_len(precision: Precision, dim: usize) -> usize {
    let params = if precision == Precision::I8 {
        8 * dim
    } else {
        0
    };
    (FIXED + params + 8).div_ceil(64) * 64
}

fn header(precision: Precision, dim: usize, fitted: u64, quant: Option<&Quantiser>) -> Vec<u8> {
    let mut h = Vec::with_capacity(header_len(precision, dim));
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT.to_le_bytes());
    h.extend_from_slice(&precision.code().to_le_bytes());
    h.extend_from_slice(&(dim as u32).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&fitted.to_le_bytes());
    if let Some(q) = quant {
        h.extend_from_slice(&q.to_bytes());
    }
    let sum = Sha256::digest(&h);
    h.extend_from_slice(&sum[..8]);
    h.resize(header_len(precision, dim), 0);
    h
}

fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// What a valid file's header says.
#[derive(Debug)]
struct Header {
    fitted: u64,
    quant: Option<Quantiser>,
    len: usize,
}

/// Read and check the header of `path`; `Err` is the reason it is unusable.
fn read_header(
    file: &mut File,
    precision: Precision,
    dim: usize,
) -> std::result::Result<Header, String> {
    let want = header_len(precision, dim);
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size < want as u64 {
        return Err(format!("{size} bytes, shorter than its {want}-byte header"));
    }
    let mut h = vec![0u8; want];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut h))
        .map_err(|e| e.to_string())?;
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
    if &h[..8] != MAGIC {
        return Err("bad magic".into());
    }
    if u32_at(8) != FORMAT {
        return Err(format!("format version {}, not {FORMAT}", u32_at(8)));
    }
    if u32_at(12) != precision.code() {
        return Err(format!(
            "precision code {}, not {}",
            u32_at(12),
            precision.code()
        ));
    }
    if u32_at(16) as usize != dim {
        return Err(format!("dimension {}, not {dim}", u32_at(16)));
    }
    let params = if precision == Precision::I8 {
        8 * dim
    } else {
        0
    };
    let body = FIXED + params;
    if Sha256::digest(&h[..body])[..8] != h[body..body + 8] {
        return Err("header checksum mismatch".into());
    }
    let fitted = u64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
    let quant = (precision == Precision::I8).then(|| {
        let f = |o: usize| f32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
        Quantiser {
            off: (0..dim).map(|d| f(FIXED + 4 * d)).collect(),
            scale: (0..dim).map(|d| f(FIXED + 4 * (dim + d))).collect(),
        }
    });
    Ok(Header {
        fitted,
        quant,
        len: want,
    })
}

/// The writer's handle on the compact file of an index folder, kept covering exactly the
/// committed rows.
pub(crate) struct CompactFile {
    precision: Precision,
    dim: usize,
    file: File,
    header_len: usize,
    quant: Option<Quantiser>,
    fitted: u64,
    rows: usize,
}

/// Remove the temporary files a killed build or conversion left, and the compact files of
/// precisions other than `keep` (a conversion killed after its commit leaves the old one).
pub(crate) fn clean(dir: &Path, keep: Precision) -> Result<()> {
    let mut removed = false;
    for p in Precision::ALL {
        let Some(name) = p.file_name() else { continue };
        for n in [tmp_name(name), name.to_string()] {
            if n == name && p == keep {
                continue;
            }
            let path = dir.join(&n);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                tracing::info!("removed {}, left by an interrupted build", path.display());
                removed = true;
            }
        }
    }
    if removed {
        durable::sync_dir(dir)?;
    }
    Ok(())
}

impl CompactFile {
    /// Build the file of `precision` from `rows` (all committed f32 rows): to a temporary
    /// name, fsynced, renamed into place, directory synced.
    pub(crate) fn build(
        dir: &Path,
        precision: Precision,
        dim: usize,
        rows: &[f32],
    ) -> Result<Self> {
        let name = precision.file_name().context("f32 has no compact file")?;
        let tmp = dir.join(tmp_name(name));
        let quant = (precision == Precision::I8).then(|| Quantiser::fit(rows, dim));
        let n = rows.len() / dim.max(1);
        {
            let mut f =
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(&header(precision, dim, n as u64, quant.as_ref()))?;
            // In slices, so that a large index is not encoded into memory at once.
            for part in rows.chunks(dim.max(1) * 65536) {
                f.write_all(&encode_rows(precision, quant.as_ref(), part))?;
            }
            f.sync_all()
                .with_context(|| format!("syncing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, dir.join(name))
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        durable::sync_dir(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(name))?;
        Ok(Self {
            precision,
            dim,
            file,
            header_len: header_len(precision, dim),
            quant,
            fitted: n as u64,
            rows: n,
        })
    }

    /// Open the file of `precision` so that it covers exactly the committed `rows`: a file
    /// that is missing or fails its header check is rebuilt (one warning), a longer one is
    /// truncated, a shorter one gets the missing rows appended.
    pub(crate) fn open(dir: &Path, precision: Precision, dim: usize, rows: &[f32]) -> Result<Self> {
        let name = precision.file_name().context("f32 has no compact file")?;
        let path = dir.join(name);
        let committed = rows.len() / dim.max(1);
        let opened = OpenOptions::new().read(true).write(true).open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(
                    "{}: {e}; rebuilding it from {}",
                    path.display(),
                    crate::store::VECTORS
                );
                return Self::build(dir, precision, dim, rows);
            }
        };
        let h = match read_header(&mut file, precision, dim) {
            Ok(h) => h,
            Err(why) => {
                tracing::warn!(
                    "{}: {why}; rebuilding it from {}",
                    path.display(),
                    crate::store::VECTORS
                );
                return Self::build(dir, precision, dim, rows);
            }
        };
        let row_bytes = dim * precision.bytes_per_value();
        let size = file.metadata()?.len() as usize;
        let have = (size - h.len) / row_bytes.max(1);
        let mut me = Self {
            precision,
            dim,
            file,
            header_len: h.len,
            quant: h.quant,
            fitted: h.fitted,
            rows: have.min(committed),
        };
        if size != h.len + me.rows * row_bytes {
            // Rows past the committed ones (a batch killed before its commit), or a torn row.
            me.file.set_len((h.len + me.rows * row_bytes) as u64)?;
            me.file.sync_all()?;
        }
        if me.rows < committed {
            me.append(me.rows, &rows[me.rows * dim..])?;
        }
        me.refit_if_grown(dir, rows)?;
        Ok(me)
    }

    /// Write the compact rows of `batch` (f32 rows) at row `at` and fsync them.
    pub(crate) fn append(&mut self, at: usize, batch: &[f32]) -> Result<()> {
        let row_bytes = self.dim * self.precision.bytes_per_value();
        self.file
            .seek(SeekFrom::Start((self.header_len + at * row_bytes) as u64))?;
        for part in batch.chunks(self.dim.max(1) * 65536) {
            self.file
                .write_all(&encode_rows(self.precision, self.quant.as_ref(), part))?;
        }
        self.file.sync_data()?;
        self.rows = at + batch.len() / self.dim.max(1);
        Ok(())
    }

    /// Whether [`refit_if_grown`](Self::refit_if_grown) would rebuild at `committed` rows.
    pub(crate) fn needs_refit(&self, committed: usize) -> bool {
        self.precision == Precision::I8 && (self.fitted as usize) < committed / 2
    }

    /// An i8 quantiser fitted on fewer than half of the committed rows (a new index's first
    /// batch) is refitted on all of them: the file is rebuilt. Amortised, every row is
    /// encoded at most about twice more.
    pub(crate) fn refit_if_grown(&mut self, dir: &Path, rows: &[f32]) -> Result<()> {
        if self.needs_refit(rows.len() / self.dim.max(1)) {
            *self = Self::build(dir, self.precision, self.dim, rows)?;
        }
        Ok(())
    }

    /// Rows the file covers.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
}

/// Map the compact file of `precision` for reading, covering at most `committed` rows. `Err`
/// is the reason it is unusable (missing, bad header); a short file is fine (the uncovered
/// rows are scanned exactly).
pub(crate) fn map(
    dir: &Path,
    precision: Precision,
    dim: usize,
    committed: usize,
) -> std::result::Result<CompactRows, String> {
    let name = precision.file_name().ok_or("f32 has no compact file")?;
    let mut file = File::open(dir.join(name)).map_err(|e| e.to_string())?;
    let h = read_header(&mut file, precision, dim)?;
    let row_bytes = dim * precision.bytes_per_value();
    let size = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    let rows = ((size - h.len) / row_bytes.max(1)).min(committed);
    // SAFETY: the file is only appended to past the rows mapped here, or replaced by a rename
    // (which leaves this mapping on the old file); truncation only cuts rows past the
    // committed ones, which are never mapped.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .len(h.len + rows * row_bytes)
            .map(&file)
    }
    .map_err(|e| e.to_string())?;
    Ok(CompactRows {
        precision,
        dim,
        rows,
        quant: h.quant,
        codes: Codes::Mapped { map, start: h.len },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_round_trip_and_unknown_ones_list_the_choices() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!(" I8 ".parse::<Precision>().unwrap(), Precision::I8);
        let e = "bf16".parse::<Precision>().unwrap_err().to_string();
        assert_eq!(e, "unknown precision \"bf16\": choose one of f32, f16, i8");
        assert_eq!(Precision::default(), Precision::F32);
    }

    #[test]
    fn quantiser_reconstructs_within_half_a_step_and_clamps_outliers() {
        let dim = 3;
        let rows = [0.5, -1.0, 2.0, -0.5, 1.0, 2.0, 0.0, 0.0, 2.0];
        let q = Quantiser::fit(&rows, dim);
        let mut c = Vec::new();
        for r in rows.chunks(dim) {
            c.clear();
            q.encode_into(r, &mut c);
            for d in 0..dim {
                let back = q.off[d] + q.scale[d] * c[d] as f32;
                assert!(
                    (back - r[d]).abs() <= 0.5 * q.scale[d] + 1e-6,
                    "{back} vs {}",
                    r[d]
                );
            }
        }
        c.clear();
        q.encode_into(&[9.0, -9.0, f32::NAN], &mut c);
        assert_eq!(c, vec![127, -127, 0]);
        // The query transform gives the dot product with the reconstruction.
        let x = [0.3f32, -0.2, 2.0];
        c.clear();
        q.encode_into(&x, &mut c);
        let query = [0.7f32, 0.1, -0.4];
        let (w, bias) = q.query(&query);
        let approx: f32 = w.iter().zip(&c).map(|(a, &b)| a * b as f32).sum::<f32>() + bias;
        let exact: f32 = query.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!((approx - exact).abs() < 0.01, "{approx} vs {exact}");
    }

    #[test]
    fn header_checks_catch_every_field() {
        let d = std::env::temp_dir().join(format!("simcase-compact-hdr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let rows: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let f = CompactFile::build(&d, Precision::I8, 4, &rows).unwrap();
        assert_eq!(f.rows(), 10);
        let path = d.join("vectors.i8");
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good.len(), 128 + 40);
        let mut file = File::open(&path).unwrap();
        assert!(read_header(&mut file, Precision::I8, 4).is_ok());
        assert!(read_header(&mut file, Precision::I8, 5)
            .unwrap_err()
            .contains("dimension"));
        assert!(read_header(&mut file, Precision::F16, 4).is_err());
        for (at, why) in [(0, "magic"), (8, "format"), (40, "checksum")] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let mut file = File::open(&path).unwrap();
            let e = read_header(&mut file, Precision::I8, 4).unwrap_err();
            assert!(e.contains(why), "{at}: {e}");
        }
        std::fs::write(&path, &good[..100]).unwrap();
        let mut file = File::open(&path).unwrap();
        assert!(read_header(&mut file, Precision::I8, 4)
            .unwrap_err()
            .contains("shorter"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
