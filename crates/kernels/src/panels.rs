//! What the packed-weight layers ([`crate::bf16`], [`crate::int8`]) share: the destination
//! that tasks write by disjoint column ranges ([`Out`]), the split of output panels across
//! threads ([`for_panel_ranges`]), and the walk of one panel range in register tiles of up to
//! [`MR`] rows × two panels, rows in blocks of [`ROW_BLOCK`] ([`register_tiles!`]).

/// Output channels per panel: one 512-bit vector of f32 or i32 sums.
pub(crate) const PANEL: usize = 16;
/// Rows of one register tile.
pub(crate) const MR: usize = 8;
/// Rows per pass over a task's panels: a block's activations (at most 2 bytes an input, so
/// 192 KiB at k = 1536) stay in L2 while every panel reads them, instead of the whole input
/// streaming from L3 once per panel pair at large batches. At batch 1 (257 rows) that is 5
/// blocks; the panels' weights are then read from L2 once a block. On Zen 4 (1 thread,
/// in-process A/B against no blocking): batch 16 bf16 qkv 79.5 → 84.3 and fc2 85.7 → 96.2
/// GMAC/s, int8 qkv 101 → 105; batch 1 within ±3%. 32 and 128 measured the same as 64.
pub(crate) const ROW_BLOCK: usize = 64;

/// The `m × n` row-major destination, shared by tasks that write disjoint columns.
pub(crate) struct Out {
    pub(crate) ptr: *mut f32,
    pub(crate) m: usize,
    pub(crate) n: usize,
}

// SAFETY: tasks write disjoint column ranges of one exclusively borrowed slice (see
// `for_panel_ranges`), so no element is written by two threads, nor read by another.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    /// Element `(i, j)`.
    #[inline(always)]
    pub(crate) fn at(&mut self, i: usize, j: usize) -> &mut f32 {
        assert!(i < self.m && j < self.n);
        // SAFETY: in bounds (asserted); this task is the only writer of column j.
        unsafe { &mut *self.ptr.add(i * self.n + j) }
    }
}

/// Runs `run(first, last, out)` over ranges of the `panels` output panels of `dst` (`m × n`
/// row-major), one rayon task per range, about `threads` ranges of an even number of panels
/// (the tiles take two at once). Each task writes only its own panels' columns.
pub(crate) fn for_panel_ranges(
    dst: &mut [f32],
    (m, n): (usize, usize),
    panels: usize,
    threads: usize,
    run: impl Fn(usize, usize, &mut Out) + Sync,
) {
    assert_eq!(dst.len(), m * n);
    assert!(panels * PANEL >= n);
    let per = panels.div_ceil(threads.max(1)).next_multiple_of(2).max(2);
    let base = Out {
        ptr: dst.as_mut_ptr(),
        m,
        n,
    };
    // Captured whole (a closure would capture the raw pointer field alone, which is not Sync).
    let base = &base;
    let task = |first: usize| {
        let mut out = Out { ..*base };
        run(first, (first + per).min(panels), &mut out)
    };
    if panels <= per {
        task(0);
        return;
    }
    use rayon::prelude::*;
    (0..panels).into_par_iter().step_by(per).for_each(task);
}

/// The AVX-512 walk of panels `first..last` for every row in register tiles: defines, with
/// `$features` enabled, `panels(ctx, m, first, last, out)` and its tail `small`, calling the
/// module's `tile::<R, P>(ctx, panel, i, out)` for tiles of `R ≤ MR` rows × `P ∈ {1, 2}`
/// panels.
macro_rules! register_tiles {
    ($features:literal, $ctx:ty) => {
        /// Panels `first..last` for rows `0..m`, in register tiles.
        ///
        /// # Safety
        /// The CPU must have this module's features; `tile`'s bounds must hold for rows
        /// below `m` and panels below `last`.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn panels(
            ctx: $ctx,
            m: usize,
            first: usize,
            last: usize,
            out: &mut crate::panels::Out,
        ) {
            for i0 in (0..m).step_by(crate::panels::ROW_BLOCK) {
                let end = (i0 + crate::panels::ROW_BLOCK).min(m);
                let mut panel = first;
                while panel < last {
                    let two = last - panel >= 2;
                    let mut i = i0;
                    while i < end {
                        let rows = (end - i).min(crate::panels::MR);
                        // SAFETY: rows i..i+rows < m and panels below `last`: the caller's
                        // contract; the features are this function's own.
                        unsafe {
                            match (rows, two) {
                                (8, true) => tile::<8, 2>(ctx, panel, i, out),
                                (8, false) => tile::<8, 1>(ctx, panel, i, out),
                                (r, true) => small::<2>(r, ctx, panel, i, out),
                                (r, false) => small::<1>(r, ctx, panel, i, out),
                            }
                        }
                        i += rows;
                    }
                    panel += if two { 2 } else { 1 };
                }
            }
        }

        /// A tail of fewer than 8 rows.
        #[target_feature(enable = $features)]
        unsafe fn small<const P: usize>(
            rows: usize,
            ctx: $ctx,
            panel: usize,
            i: usize,
            out: &mut crate::panels::Out,
        ) {
            // SAFETY: forwarded from `panels`.
            unsafe {
                match rows {
                    1 => tile::<1, P>(ctx, panel, i, out),
                    2 => tile::<2, P>(ctx, panel, i, out),
                    3 => tile::<3, P>(ctx, panel, i, out),
                    4 => tile::<4, P>(ctx, panel, i, out),
                    5 => tile::<5, P>(ctx, panel, i, out),
                    6 => tile::<6, P>(ctx, panel, i, out),
                    _ => tile::<7, P>(ctx, panel, i, out),
                }
            }
        }
    };
}
pub(crate) use register_tiles;

/// Pseudo-random values in [-1, 1) (an LCG), for the kernels' tests.
#[cfg(test)]
pub(crate) fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `a` (`rows × cols` row-major) transposed: a PyTorch `(out, in)` weight as the `(in, out)`
/// layout [`crate::linear`] and [`crate::sgemm`] take, for the kernels' tests.
#[cfg(test)]
pub(crate) fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|i| a[(i % rows) * cols + i / rows])
        .collect()
}

/// Checks that a fast path equals the portable one on every shape class of the tiles (row
/// tails, one or two panels, a part panel, `k` not a multiple of the packing), on 1 and 3
/// threads: `pack(w, n, k)` packs a weight, `run(fast, dst, x, m, packed, threads)` runs a
/// product on the fast path or the portable one.
#[cfg(test)]
pub(crate) fn fast_equals_portable<P>(
    pack: impl Fn(&[f32], usize, usize) -> P,
    run: impl Fn(bool, &mut [f32], &[f32], usize, &P, usize),
) {
    for &(m, n, k) in &[
        (1, 16, 4),
        (7, 17, 9),
        (8, 32, 64),
        (19, 50, 33),
        (257, 96, 384),
    ] {
        let x = lcg(m * k, m as u64);
        let packed = pack(&lcg(n * k, n as u64), n, k);
        let init = lcg(m * n, k as u64);
        let (mut a, mut b) = (init.clone(), init);
        for threads in [1, 3] {
            run(false, &mut a, &x, m, &packed, threads);
            run(true, &mut b, &x, m, &packed, threads);
            assert_eq!(a, b, "{m}×{n}×{k}, {threads} threads");
        }
    }
}
