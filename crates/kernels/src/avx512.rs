//! The AVX-512 path: the row kernels compiled with AVX-512F enabled (16-lane vectors for the
//! element-wise loops; no contraction into FMA, so the bits equal the portable path's), and a
//! hand-written dot products with four 16-lane FMA accumulators and a masked or copied tail:
//! f32·f32, f32·f16 (`vcvtph2ps`) and f32·i8 (`vpmovsxbd`, then conversion).

use std::arch::x86_64::*;

crate::isa_table!(
    crate::dispatch::Isa::Avx512,
    "avx512f,avx2,fma",
    dot,
    dot_f16,
    dot_i8
);

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

/// f32 `q` · half-precision `x` over the common length: 64 per step in four accumulators,
/// then 16, then the last 1–15 (the halves copied into a zeroed block, the floats by a masked
/// load), so that nothing outside the slices is touched.
///
/// # Safety
/// The CPU must have AVX-512F and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dot_f16(q: &[f32], x: &[u16]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·(j+1) <= n: 16 floats and 16 halves (32 bytes) inside both.
            let (a, b) = unsafe {
                (
                    _mm512_loadu_ps(pq.add(i + 16 * j)),
                    _mm512_cvtph_ps(_mm256_loadu_si256(px.add(i + 16 * j) as *const __m256i)),
                )
            };
            *acc = _mm512_fmadd_ps(a, b, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(pq.add(i)),
                _mm512_cvtph_ps(_mm256_loadu_si256(px.add(i) as *const __m256i)),
            )
        };
        acc[0] = _mm512_fmadd_ps(a, b, acc[0]);
        i += 16;
    }
    let rest = n - i;
    if rest > 0 {
        let mut block = [0u16; 16];
        block[..rest].copy_from_slice(&x[i..n]);
        let mask: __mmask16 = (1u16 << rest) - 1;
        // SAFETY: `block` holds 16 halves; lanes i..i+rest of `q` are inside it and the
        // masked-off lanes are neither read nor fault (they read as zero).
        let (a, b) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, pq.add(i)),
                _mm512_cvtph_ps(_mm256_loadu_si256(block.as_ptr() as *const __m256i)),
            )
        };
        acc[1] = _mm512_fmadd_ps(a, b, acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// f32 `q` · integer `x` over the common length: 16 codes are sign-extended to i32, converted
/// to f32 and fused into one of four accumulators; 64 per step, then 16, then the last 1–15
/// (codes copied into a zeroed block, floats by a masked load).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_i8(q: &[f32], x: &[i8]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·(j+1) <= n: 16 floats and 16 codes inside both slices.
            let (a, c) = unsafe {
                (
                    _mm512_loadu_ps(pq.add(i + 16 * j)),
                    _mm_loadu_si128(px.add(i + 16 * j) as *const __m128i),
                )
            };
            *acc = _mm512_fmadd_ps(a, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (a, c) = unsafe {
            (
                _mm512_loadu_ps(pq.add(i)),
                _mm_loadu_si128(px.add(i) as *const __m128i),
            )
        };
        acc[0] = _mm512_fmadd_ps(a, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), acc[0]);
        i += 16;
    }
    let rest = n - i;
    if rest > 0 {
        let mut block = [0i8; 16];
        block[..rest].copy_from_slice(&x[i..n]);
        let mask: __mmask16 = (1u16 << rest) - 1;
        // SAFETY: `block` holds 16 codes; lanes i..i+rest of `q` are inside it and the
        // masked-off lanes are neither read nor fault.
        let (a, c) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, pq.add(i)),
                _mm_loadu_si128(block.as_ptr() as *const __m128i),
            )
        };
        acc[1] = _mm512_fmadd_ps(a, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}
