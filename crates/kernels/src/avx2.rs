//! The AVX2+FMA path: the row kernels compiled with AVX2 and FMA enabled (the compiler
//! vectorises the lane-written loops and contracts nothing into FMA, so the bits equal the
//! portable path's, except where the source asks for fused multiply-adds: the `erf` and `exp`
//! behind GELU, QuickGELU and softmax, within rounding of it), and hand-written dot products
//! with four FMA accumulators: f32·f32, f32·f16 (F16C conversion) and f32·i8 (sign extension,
//! then conversion).

use std::arch::x86_64::*;

crate::isa_table!(crate::dispatch::Isa::Avx2, "avx2,fma", dot, dot_f16, dot_i8);

/// Inner product over the common length: 32 floats per step in four accumulators, then 8,
/// then a scalar tail.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8·(j+1) <= n: the 8-float unaligned loads are inside both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    let mut total: f32 = lanes.iter().sum();
    while i < n {
        total += a[i] * b[i];
        i += 1;
    }
    total
}

/// Sum of the eight lanes of `s`.
#[target_feature(enable = "avx2,fma")]
fn hsum(s: __m256) -> f32 {
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    lanes.iter().sum()
}

/// f32 `q` · half-precision `x` over the common length: 32 per step in four accumulators,
/// then 8, then a scalar tail.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(q: &[f32], x: &[u16]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8·(j+1) <= n: 8 floats and 8 halves (16 bytes) inside both slices.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_ps(pq.add(i + 8 * j)),
                    _mm256_cvtph_ps(_mm_loadu_si128(px.add(i + 8 * j) as *const __m128i)),
                )
            };
            *acc = _mm256_fmadd_ps(a, b, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (a, b) = unsafe {
            (
                _mm256_loadu_ps(pq.add(i)),
                _mm256_cvtph_ps(_mm_loadu_si128(px.add(i) as *const __m128i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(a, b, acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum(s);
    while i < n {
        total += q[i] * crate::compact::f16_value(x[i]);
        i += 1;
    }
    total
}

/// f32 `q` · integer `x` over the common length: 8 codes are sign-extended to i32, converted
/// to f32 and fused into one of four accumulators; 32 per step, then 8, then a scalar tail.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_i8(q: &[f32], x: &[i8]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n: two 16-byte loads of codes inside `x`.
        let (lo, hi) = unsafe {
            (
                _mm_loadu_si128(px.add(i) as *const __m128i),
                _mm_loadu_si128(px.add(i + 16) as *const __m128i),
            )
        };
        let codes = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        for (j, (acc, c)) in acc.iter_mut().zip(codes).enumerate() {
            let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c));
            // SAFETY: i + 8·(j+1) <= n.
            let a = unsafe { _mm256_loadu_ps(pq.add(i + 8 * j)) };
            *acc = _mm256_fmadd_ps(a, b, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n: 8 floats and an 8-byte load of codes inside both slices.
        let (a, c) = unsafe {
            (
                _mm256_loadu_ps(pq.add(i)),
                _mm_loadl_epi64(px.add(i) as *const __m128i),
            )
        };
        let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c));
        acc[0] = _mm256_fmadd_ps(a, b, acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum(s);
    while i < n {
        total += q[i] * x[i] as f32;
        i += 1;
    }
    total
}
