//! Output buffers built in parallel. At batch 1 a layer's output (up to 257 × 1536 floats for
//! DINOv2-S) was zeroed or pre-filled by the calling thread alone while the other cores waited:
//! about 5% of dinov2-s's time on 2 cores. Here each core first-touches and fills its own
//! chunks, and the chunk is still in its cache when the kernel that follows writes it.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per task: 16K floats (64 KiB), large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// `len` floats, made in chunks of whole rows of `row` (at least [`CHUNK`] floats where the
/// rows allow it): each chunk is zeroed, then `fill(first_row, chunk)` writes it, on as many
/// threads as rayon's pool has.
pub fn par_rows(len: usize, row: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let row = row.max(1);
    let rows_per = CHUNK.div_ceil(row).max(1);
    if len < 2 * CHUNK || rayon::current_num_threads() < 2 {
        let mut v = vec![0f32; len];
        v.chunks_mut(rows_per * row)
            .enumerate()
            .for_each(|(i, c)| fill(i * rows_per, c));
        return v;
    }
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(rows_per * row)
        .enumerate()
        .for_each(|(i, c)| {
            c.fill(MaybeUninit::new(0.0));
            // SAFETY: every element of `c` was initialised by the fill above, and
            // `MaybeUninit<f32>` has the layout of `f32`, so the chunk may be viewed as `[f32]`.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
            fill(i * rows_per, c);
        });
    // SAFETY: the chunks cover `0..len` of the capacity, and each was initialised above.
    unsafe { v.set_len(len) };
    v
}

/// `len` zeros, written in parallel (see [`par_rows`]).
pub fn par_zeroed(len: usize) -> Vec<f32> {
    par_rows(len, 1, |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element is written once with its row's value, serial or parallel, whole rows per
    /// chunk, for lengths below, at and far above the parallel threshold.
    #[test]
    fn rows_are_filled_in_order_on_any_pool() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (rows, row) in [(0, 7), (3, 5), (257, 384), (1000, 1536), (40_000, 1)] {
                let v = pool.install(|| {
                    par_rows(rows * row, row, |first, c| {
                        assert_eq!(c.len() % row, 0, "a chunk split a row");
                        for (j, r) in c.chunks_mut(row).enumerate() {
                            assert!(r.iter().all(|&x| x == 0.0));
                            r.fill((first + j) as f32);
                        }
                    })
                });
                assert_eq!(v.len(), rows * row);
                for (i, r) in v.chunks(row).enumerate() {
                    assert!(
                        r.iter().all(|&x| x == i as f32),
                        "{threads} threads, row {i}"
                    );
                }
            }
            assert!(pool
                .install(|| par_zeroed(100_000))
                .iter()
                .all(|&x| x == 0.0));
        }
    }
}
