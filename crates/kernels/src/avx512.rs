//! The AVX-512 path: the row kernels compiled with AVX-512F enabled (16-lane vectors for the
//! element-wise loops; nothing contracted into FMA, so the bits equal the portable path's,
//! except the fused multiply-adds the source asks for in `erf` and `exp`, as on the AVX2
//! path), and
//! hand-written dot products, f32·f32, f32·f16 (`vcvtph2ps`) and f32·i8 (`vpmovsxbd`, then
//! conversion), which share one frame: four 16-lane FMA accumulators and a masked tail, generic
//! over how 16 row elements are loaded as f32 lanes.

use std::arch::x86_64::*;

crate::isa_table!(
    crate::dispatch::Isa::Avx512,
    "avx512f,avx2,fma",
    dot,
    dot_f16,
    dot_i8
);

/// A row element the shared frame ([`dot_frame`]) reads 16 at a time, widened to 16 f32
/// lanes: f32 as is, f16 bits by `vcvtph2ps`, i8 codes by `vpmovsxbd` and conversion.
trait Row: Copy + Default {
    /// The 16 elements at `p` as f32 lanes.
    ///
    /// # Safety
    /// 16 elements from `p` must be readable and the CPU must have this file's features. It
    /// is called only from [`dot_frame`] (compiled with them) and inlined there, so the
    /// intrinsics compile to single instructions.
    unsafe fn load16(p: *const Self) -> __m512;
}

impl Row for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: the caller's contract: 16 floats readable from `p`, AVX-512F present.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Row for u16 {
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> __m512 {
        // SAFETY: the caller's contract: 16 halves (32 bytes) readable from `p`, AVX-512F
        // present.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

impl Row for i8 {
    #[inline(always)]
    unsafe fn load16(p: *const i8) -> __m512 {
        // SAFETY: the caller's contract: 16 codes (16 bytes) readable from `p`, AVX-512F
        // present.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))) }
    }
}

/// f32 `q` · `x` over the common length, for every row type (compiled, like the three kernels
/// that call it, with the features `Isa::Avx512` checks on the CPU before this table is handed
/// out): 64 per step in four 16-lane FMA
/// accumulators, then 16, then the last 1–15 (the row elements copied into a zeroed block,
/// the floats by a masked load), so that nothing outside the slices is touched.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
fn dot_frame<T: Row>(q: &[f32], x: &[T]) -> f32 {
    let n = q.len().min(x.len());
    let (pq, px) = (q.as_ptr(), x.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·(j+1) <= n: 16 floats and 16 row elements inside both slices;
            // this function runs only with its features (its callers' contract).
            let (a, b) = unsafe {
                (
                    _mm512_loadu_ps(pq.add(i + 16 * j)),
                    T::load16(px.add(i + 16 * j)),
                )
            };
            *acc = _mm512_fmadd_ps(a, b, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (a, b) = unsafe { (_mm512_loadu_ps(pq.add(i)), T::load16(px.add(i))) };
        acc[0] = _mm512_fmadd_ps(a, b, acc[0]);
        i += 16;
    }
    let rest = n - i;
    if rest > 0 {
        // rest is 1..=15: the low `rest` lanes.
        let mut block = [T::default(); 16];
        block[..rest].copy_from_slice(&x[i..n]);
        let mask: __mmask16 = (1u16 << rest) - 1;
        // SAFETY: `block` holds 16 elements; lanes i..i+rest of `q` are inside it and the
        // masked-off lanes are neither read nor fault (AVX-512 masked loads suppress faults
        // on them), and they read as zero, as the block's zeroed lanes do.
        let (a, b) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, pq.add(i)),
                T::load16(block.as_ptr()),
            )
        };
        acc[1] = _mm512_fmadd_ps(a, b, acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// Inner product of two f32 slices over the common length ([`dot_frame`]).
///
/// # Safety
/// The CPU must have AVX-512F and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_frame(a, b)
}

/// f32 `q` · half-precision `x` over the common length ([`dot_frame`], `vcvtph2ps`).
///
/// # Safety
/// The CPU must have AVX-512F and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dot_f16(q: &[f32], x: &[u16]) -> f32 {
    dot_frame(q, x)
}

/// f32 `q` · integer codes `x` over the common length ([`dot_frame`], codes sign-extended to
/// i32 and converted to f32).
///
/// # Safety
/// The CPU must have AVX-512F and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dot_i8(q: &[f32], x: &[i8]) -> f32 {
    dot_frame(q, x)
}
