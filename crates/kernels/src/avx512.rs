//! The AVX-512 path: the row kernels compiled with AVX-512F enabled (16-lane vectors for the
//! element-wise loops; no contraction into FMA, so the bits equal the portable path's), and a
//! hand-written dot product with four 16-lane FMA accumulators and a masked tail.

use std::arch::x86_64::*;

crate::isa_table!(crate::dispatch::Isa::Avx512, "avx512f,avx2,fma", dot);

/// Inner product over the common length: 64 floats per step in four accumulators, then 16,
/// then one masked load of the last 1–15 (a masked-off lane is neither read nor faults).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·(j+1) <= n: the 16-float unaligned loads are inside both slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * j)),
                    _mm512_loadu_ps(pb.add(i + 16 * j)),
                )
            };
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (x, y) = unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
        acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
        i += 16;
    }
    let rest = n - i;
    if rest > 0 {
        // rest is 1..=15: the low `rest` lanes.
        let mask: __mmask16 = (1u16 << rest) - 1;
        // SAFETY: lanes i..i+rest are inside both slices; masked-off lanes are not accessed
        // (AVX-512 masked loads suppress faults on them), and they read as zero.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
            )
        };
        acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}
