//! Output buffers built in parallel. At batch 1 a layer's output (up to 257 × 1536 floats for
//! DINOv2-S) was zeroed or pre-filled by the calling thread alone while the other cores waited:
//! about 5% of dinov2-s's time on 2 cores. Here each core first-touches and fills its own
//! chunks, and nothing is zeroed only to be overwritten.

use crate::error::KernelError;
use crate::gemm::MatMut;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per task: 16K floats (64 KiB), large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// `rows × row` floats, row `r` taken from `make(r)` (zeros past its end, extra items
/// ignored), in chunks of whole rows of at least [`CHUNK`] floats where the rows allow it, on
/// as many threads as rayon's pool has (one, in a batch's single-thread lanes).
pub(crate) fn par_rows<I: Iterator<Item = f32>>(
    rows: usize,
    row: usize,
    make: impl Fn(usize) -> I + Sync,
) -> Vec<f32> {
    let rows_per = CHUNK.div_ceil(row.max(1));
    let len = rows
        .checked_mul(row)
        .expect("par_rows: rows × row overflows usize");
    // `fill_rows` writes every element of its chunk (`build`'s contract).
    build(len, rows_per * row.max(1), |start, c| {
        fill_rows(start / row.max(1), c, row, &make)
    })
}

/// [`par_rows`] in bands of `band_rows` rows (the last may be shorter), one task each on
/// rayon's pool, and `finish(first_row, band)` run on each band as soon as it is filled, while
/// it is in cache. The first error stops the work and is returned.
pub fn par_bands<I: Iterator<Item = f32>, E: Send>(
    rows: usize,
    row: usize,
    band_rows: usize,
    make: impl Fn(usize) -> I + Sync,
    finish: impl Fn(usize, &mut [f32]) -> Result<(), E> + Sync,
) -> Result<Vec<f32>, E> {
    let len = rows
        .checked_mul(row)
        .expect("par_bands: rows × row overflows usize");
    let band_rows = band_rows.max(1);
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(band_rows * row.max(1))
        .enumerate()
        .try_for_each(|(i, c)| {
            fill_rows(i * band_rows, c, row, &make);
            // SAFETY: `fill_rows` wrote every element of the band, and `MaybeUninit<f32>`
            // has the layout of `f32`.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
            finish(i * band_rows, c)
        })?;
    // SAFETY: the bands cover `0..len` of the capacity and `fill_rows` wrote each (on an error
    // `v` is dropped with length 0).
    unsafe { v.set_len(len) };
    Ok(v)
}

/// `rows × row` floats in bands of `band_rows` rows (through [`build`], so in parallel when
/// large enough), each band written by `write(first_row, band)` straight into the new buffer:
/// for a producer that sets every element anyway, the fill of [`par_bands`] (zeros, 2% of a
/// `litemedsam` image in the depthwise convolutions, Zen 3) is saved.
///
/// # Safety
/// `write` must initialise every element of every band it is given.
pub(crate) unsafe fn par_bands_uninit(
    rows: usize,
    row: usize,
    band_rows: usize,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let len = rows
        .checked_mul(row)
        .expect("par_bands_uninit: rows × row overflows usize");
    let row = row.max(1);
    // `write` initialises every element of its band (this function's contract), which is
    // `build`'s.
    build(len, band_rows.max(1) * row, |start, c| {
        write(start / row, c)
    })
}

/// [`par_bands_uninit`] for a `write` that can fail: a band whose `write` fails is zeroed, the
/// other bands are still made, and the first error is returned instead of the buffer.
///
/// # Safety
/// `write` must initialise every element of every band it returns `Ok` for.
pub(crate) unsafe fn try_par_bands_uninit<E: Send>(
    rows: usize,
    row: usize,
    band_rows: usize,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) -> Result<(), E> + Sync,
) -> Result<Vec<f32>, E> {
    let failed = std::sync::Mutex::new(None);
    // SAFETY: each band is initialised: by `write` when it returns `Ok` (this function's
    // contract), with zeros when it fails.
    let out = unsafe {
        par_bands_uninit(rows, row, band_rows, |first, band| {
            if let Err(e) = write(first, band) {
                band.fill(MaybeUninit::new(0.0));
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        })
    };
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A new `rows × cols` row-major buffer, written by `product` through a view of it that starts
/// uninitialised ([`MatMut::uninit_row_major`]); returned once `product` returns `Ok`.
///
/// # Safety
/// `product` must read no element of the view before writing it, and, when it returns `Ok`,
/// have written all of them.
pub(crate) unsafe fn try_new_matrix(
    rows: usize,
    cols: usize,
    product: impl FnOnce(MatMut<'_>) -> Result<(), KernelError>,
) -> Result<Vec<f32>, KernelError> {
    let len = rows
        .checked_mul(cols)
        .expect("try_new_matrix: rows × cols overflows usize");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: `product` reads nothing before writing it (this function's contract).
    let view =
        unsafe { MatMut::uninit_row_major(&mut out.spare_capacity_mut()[..len], rows, cols) }?;
    product(view)?;
    // SAFETY: `product` returned `Ok`, so it wrote every element of the view, which covers
    // `0..len` (this function's contract).
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Write every element of `chunk`, whole rows of `row` floats from row `first` on: row `r`
/// from `make(r)`, zeros past its end, extra items ignored.
fn fill_rows<I: Iterator<Item = f32>>(
    first: usize,
    chunk: &mut [MaybeUninit<f32>],
    row: usize,
    make: &impl Fn(usize) -> I,
) {
    for (j, out) in chunk.chunks_mut(row.max(1)).enumerate() {
        // What was written is counted, not taken from the iterator's own length, so that
        // every element is initialised whatever the iterator reports.
        let written = out
            .iter_mut()
            .zip(make(first + j))
            .map(|(o, x)| {
                o.write(x);
            })
            .count();
        out[written..].fill(MaybeUninit::new(0.0));
    }
}

/// `len` floats made chunk by chunk of `chunk`, `init(first_index, chunk)` writing every
/// element of its chunk (the callers above do: a full fill, each row's items then zeros, or
/// the contract of [`par_bands_uninit`]).
fn build(
    len: usize,
    chunk: usize,
    init: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    let mut v: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    if len < 2 * CHUNK || rayon::current_num_threads() < 2 {
        spare
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| init(i * chunk, c));
    } else {
        spare
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| init(i * chunk, c));
    }
    // SAFETY: the chunks cover `0..len` of the capacity, and `init` wrote every element of
    // each (the contract of this private function, kept by its callers).
    unsafe { v.set_len(len) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row holds its own values, zero-padded where its iterator is short, serial or
    /// parallel, for sizes below, at and far above the parallel threshold.
    #[test]
    fn rows_are_filled_in_order_on_any_pool() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (rows, row) in [(0, 7), (3, 5), (257, 384), (1000, 1536), (40_000, 1)] {
                let v = pool.install(|| {
                    par_rows(rows, row, |r| {
                        // Row r: r + 0, r + 1, … for the first half of the row, then nothing.
                        (0..row.div_ceil(2)).map(move |i| (r + i) as f32)
                    })
                });
                assert_eq!(v.len(), rows * row);
                for (r, got) in v.chunks(row).enumerate() {
                    for (i, &g) in got.iter().enumerate() {
                        let want = if i < row.div_ceil(2) {
                            (r + i) as f32
                        } else {
                            0.0
                        };
                        assert_eq!(g, want, "{threads} threads, row {r} of {rows}×{row}");
                    }
                }
            }
        }
    }
}
