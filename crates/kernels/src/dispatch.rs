//! The one runtime dispatch: which instruction set the kernels run on. Each instruction set
//! has a table of row kernels ([`Kernels`]); the CPU is probed once, `SIMCASE_KERNELS` may
//! force a path, and every caller goes through the chosen table. A table for an instruction
//! set the CPU lacks is never handed out, which is what makes calling through it safe.

use crate::activation::Act;
use crate::depthwise::DwGeometry;
use std::fmt;
use std::io::Write;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// The environment variable that forces a kernel path: `auto` (the default), `avx512`,
/// `avx2` or `portable`. A path the CPU lacks gives a one-line notice on stderr and the best
/// path the CPU has below it; an unknown value gives a notice and `auto`.
pub const ENV: &str = "SIMCASE_KERNELS";

/// An instruction set with its own kernel table, from the least to the most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, whatever the target's baseline vectorises it to (SSE2 on x86-64).
    Portable,
    /// AVX2 with FMA (x86-64-v3).
    Avx2,
    /// AVX-512 Foundation (with AVX2 and FMA, which every AVX-512 CPU has).
    Avx512,
}

impl Isa {
    /// Every path, portable first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name `SIMCASE_KERNELS` takes for this path.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a `SIMCASE_KERNELS` value (case-insensitive); `None` for `auto` or unknown.
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The CPU features this path's code is compiled for.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Isa::Portable => &[],
            Isa::Avx2 => &["avx2", "fma", "f16c"],
            Isa::Avx512 => &["avx512f", "avx2", "fma", "f16c"],
        }
    }

    /// The first feature of [`Isa::features`] this CPU lacks, or `None` if it can run the path.
    pub fn missing_feature(self) -> Option<&'static str> {
        self.features().iter().copied().find(|f| !cpu_has(f))
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        self.missing_feature().is_none()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "avx2" => std::is_x86_feature_detected!("avx2"),
        "fma" => std::is_x86_feature_detected!("fma"),
        "f16c" => std::is_x86_feature_detected!("f16c"),
        "avx512f" => std::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
        "avx512bf16" => std::is_x86_feature_detected!("avx512bf16"),
        "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

/// Whether this CPU has every one of `features` (names as `#[target_feature]` spells them).
pub(crate) fn cpu_has_all(features: &[&str]) -> bool {
    features.iter().all(|f| cpu_has(f))
}

/// The rule of the packed-weight layers ([`crate::bf16`], [`crate::int8`]), whose fast path
/// needs AVX-512 `features` beyond the table's: `Some(true)` (fast) when the selected kernels
/// are AVX-512 and the CPU has them; `Some(false)` (the portable twin) when
/// `SIMCASE_KERNELS=portable` forces it; `None` otherwise (the caller stays at f32).
pub(crate) fn packed_path(features: &[&str]) -> Option<bool> {
    match selection().isa {
        Isa::Avx512 if cpu_has_all(features) => Some(true),
        Isa::Portable => Some(false),
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has(_feature: &str) -> bool {
    false
}

/// The path chosen for this process, and the notice explaining a choice other than the one
/// asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The path every kernel runs on.
    pub isa: Isa,
    /// Set when `SIMCASE_KERNELS` asked for something else (a path the CPU lacks, or an
    /// unknown value); printed once on stderr.
    pub notice: Option<String>,
}

/// Chooses a path for a `SIMCASE_KERNELS` value, given what the CPU lacks for each path
/// (`missing(isa)` is the first missing feature). Separate from the probe so that the policy
/// can be tested for CPUs other than this one.
pub fn choose(request: Option<&str>, missing: impl Fn(Isa) -> Option<&'static str>) -> Selection {
    let best_up_to = |top: Isa| {
        Isa::ALL
            .into_iter()
            .rev()
            .filter(|&i| i <= top)
            .find(|&i| missing(i).is_none())
            .unwrap_or(Isa::Portable)
    };
    let request = request.map(str::trim).filter(|r| !r.is_empty());
    match request {
        None => Selection {
            isa: best_up_to(Isa::Avx512),
            notice: None,
        },
        Some(r) if r.eq_ignore_ascii_case("auto") => Selection {
            isa: best_up_to(Isa::Avx512),
            notice: None,
        },
        Some(r) => match Isa::parse(r) {
            Some(isa) => match missing(isa) {
                None => Selection { isa, notice: None },
                Some(feature) => {
                    let got = best_up_to(isa);
                    Selection {
                        isa: got,
                        notice: Some(format!(
                            "{ENV}={r} asks for the {isa} kernels, but this CPU lacks {feature}; using {got}"
                        )),
                    }
                }
            },
            None => {
                let got = best_up_to(Isa::Avx512);
                Selection {
                    isa: got,
                    notice: Some(format!(
                        "{ENV}={r} is not one of auto, avx512, avx2, portable; using {got} (auto)"
                    )),
                }
            }
        },
    }
}

/// The path this process runs on: probed and read from `SIMCASE_KERNELS` once; a notice, if
/// any, is printed on stderr the first time.
pub fn selection() -> &'static Selection {
    static SELECTION: OnceLock<Selection> = OnceLock::new();
    SELECTION.get_or_init(|| {
        let request = std::env::var(ENV).ok();
        let s = choose(request.as_deref(), Isa::missing_feature);
        if let Some(n) = &s.notice {
            // Written straight to the stream so that test harnesses do not swallow it.
            let _ = writeln!(std::io::stderr(), "simcase-kernels: {n}");
        }
        s
    })
}

/// The kernel table of the selected path (see [`selection`]).
#[inline]
pub fn kernels() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let isa = selection().isa;
        // `choose` only picks paths whose features were found, so this is Some; portable is
        // the safe answer should that ever not hold.
        Kernels::for_isa(isa).unwrap_or(&crate::portable::TABLE)
    })
}

/// `layer_norm_rows(out, x, weight, bias, eps)`: writes every element of `out` (whole rows,
/// as long as `x`), which may start uninitialised.
type LayerNormRows = fn(&mut [MaybeUninit<f32>], &[f32], &[f32], &[f32], f32);
/// `depthwise_row(geometry, x, kernel, bias, row, out_row)`: writes the first `wo·c` elements
/// of `out_row` (callers pass exactly that many), which may start uninitialised.
type DepthwiseRow = fn(&DwGeometry, &[f32], &[f32], &[f32], usize, &mut [MaybeUninit<f32>]);

/// Row kernels compiled for one instruction set. Obtained from [`kernels`] (the selected
/// path) or [`Kernels::for_isa`] (a given path, for tests and benchmarks); either checks the
/// CPU first, so every method is safe to call.
pub struct Kernels {
    pub(crate) isa: Isa,
    pub(crate) dot: fn(&[f32], &[f32]) -> f32,
    pub(crate) dot_f16: fn(&[f32], &[u16]) -> f32,
    pub(crate) dot_i8: fn(&[f32], &[i8]) -> f32,
    pub(crate) layer_norm_rows: LayerNormRows,
    pub(crate) gelu_rows: fn(&mut [f32], Option<&[f32]>),
    pub(crate) act_rows: fn(&mut [f32], Act),
    pub(crate) softmax_rows: fn(&mut [f32], usize, Option<&[f32]>),
    pub(crate) quantise_row: fn(&[f32], &mut [u8]) -> (f32, i32),
    pub(crate) depthwise_row: DepthwiseRow,
}

impl Kernels {
    /// The table for `isa`, or `None` when this CPU lacks one of its features.
    pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
        if !isa.is_available() {
            return None;
        }
        Some(match isa {
            Isa::Portable => &crate::portable::TABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &crate::avx2::TABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &crate::avx512::TABLE,
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// The instruction set of this table.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Inner product over the first `min(a.len(), b.len())` elements.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.dot)(a, b)
    }

    /// Inner product of f32 `q` with `x`, IEEE half-precision bits, over the common length.
    #[inline]
    pub fn dot_f16(&self, q: &[f32], x: &[u16]) -> f32 {
        (self.dot_f16)(q, x)
    }

    /// Inner product of f32 `q` with the 8-bit integers `x`, over the common length.
    #[inline]
    pub fn dot_i8(&self, q: &[f32], x: &[i8]) -> f32 {
        (self.dot_i8)(q, x)
    }

    /// Two-pass layer norm of each row of `x` (rows of `w.len()`) into `out`. `w` and `b`
    /// must have the same length, and `x` and `out` whole rows of it (else nothing is written).
    pub fn layer_norm_rows(&self, out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let n = w.len();
        if n == 0 || b.len() != n || x.len() != out.len() || !x.len().is_multiple_of(n) {
            return;
        }
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the kernel writes only
        // initialised values through it.
        let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
        (self.layer_norm_rows)(out, x, w, b, eps)
    }

    /// Exact (erf) GELU in place, after adding `bias` to each row of `bias.len()` (a trailing
    /// part row gets no GELU; callers pass whole rows).
    pub fn gelu_rows(&self, x: &mut [f32], bias: Option<&[f32]>) {
        if x.is_empty() || bias.is_some_and(|b| b.is_empty()) {
            return;
        }
        (self.gelu_rows)(x, bias)
    }

    /// An activation in place.
    pub fn act_rows(&self, x: &mut [f32], act: Act) {
        (self.act_rows)(x, act)
    }

    /// Softmax of each row of `n` in place, after adding the matching rows of `bias` (which
    /// must then be as long as `s`, else nothing is done).
    pub fn softmax_rows(&self, s: &mut [f32], n: usize, bias: Option<&[f32]>) {
        if n == 0 || bias.is_some_and(|b| b.len() < s.len() - s.len() % n) {
            return;
        }
        (self.softmax_rows)(s, n, bias)
    }

    /// `x` as u8 codes in `out` with its scale and zero point (see [`crate::int8`]); `out`
    /// must be as long as `x`, else nothing is written and the scale is 1, the zero point 0.
    pub fn quantise_row(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        if x.len() != out.len() {
            return (1.0, 0);
        }
        (self.quantise_row)(x, out)
    }

    /// Output row `row` (over all images stacked) of a depthwise convolution; see
    /// [`crate::depthwise`]. Sizes are checked by [`DwGeometry::check`]; a call that fails it
    /// writes nothing.
    pub fn depthwise_row(
        &self,
        g: &DwGeometry,
        x: &[f32],
        k: &[f32],
        bias: &[f32],
        row: usize,
        out_row: &mut [f32],
    ) {
        if g.check_row(x, k, bias, row, out_row).is_err() {
            return;
        }
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the kernel writes only
        // initialised values through it.
        let out = unsafe { &mut *(out_row as *mut [f32] as *mut [MaybeUninit<f32>]) };
        (self.depthwise_row)(g, x, k, bias, row, out)
    }
}

/// Inner product on the selected path.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    kernels().dot(a, b)
}

/// Inner product of f32 `q` with half-precision bits `x`, on the selected path.
#[inline]
pub fn dot_f16(q: &[f32], x: &[u16]) -> f32 {
    kernels().dot_f16(q, x)
}

/// Inner product of f32 `q` with 8-bit integers `x`, on the selected path.
#[inline]
pub fn dot_i8(q: &[f32], x: &[i8]) -> f32 {
    kernels().dot_i8(q, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(top: Isa) -> impl Fn(Isa) -> Option<&'static str> {
        move |i: Isa| {
            if i <= top {
                None
            } else if i == Isa::Avx512 {
                Some("avx512f")
            } else {
                Some("avx2")
            }
        }
    }

    #[test]
    fn auto_takes_the_best_path_the_cpu_has() {
        for top in Isa::ALL {
            for req in [None, Some(""), Some("auto"), Some(" AUTO ")] {
                assert_eq!(
                    choose(req, cpu(top)),
                    Selection {
                        isa: top,
                        notice: None
                    }
                );
            }
        }
    }

    #[test]
    fn a_forced_path_the_cpu_has_is_taken_silently() {
        let s = choose(Some("portable"), cpu(Isa::Avx512));
        assert_eq!((s.isa, s.notice), (Isa::Portable, None));
        let s = choose(Some("AVX2"), cpu(Isa::Avx512));
        assert_eq!((s.isa, s.notice), (Isa::Avx2, None));
        let s = choose(Some("avx512"), cpu(Isa::Avx512));
        assert_eq!((s.isa, s.notice), (Isa::Avx512, None));
    }

    #[test]
    fn a_forced_path_the_cpu_lacks_falls_back_with_a_notice() {
        let s = choose(Some("avx512"), cpu(Isa::Avx2));
        assert_eq!(s.isa, Isa::Avx2);
        assert_eq!(
            s.notice.as_deref(),
            Some("SIMCASE_KERNELS=avx512 asks for the avx512 kernels, but this CPU lacks avx512f; using avx2")
        );
        let s = choose(Some("avx512"), cpu(Isa::Portable));
        assert_eq!(s.isa, Isa::Portable);
        assert!(s.notice.unwrap().ends_with("lacks avx512f; using portable"));
        let s = choose(Some("avx2"), cpu(Isa::Portable));
        assert_eq!(s.isa, Isa::Portable);
        assert!(s.notice.unwrap().contains("lacks avx2"));
    }

    #[test]
    fn an_unknown_value_is_named_and_auto_is_used() {
        let s = choose(Some("sse9"), cpu(Isa::Avx2));
        assert_eq!(s.isa, Isa::Avx2);
        assert_eq!(
            s.notice.as_deref(),
            Some("SIMCASE_KERNELS=sse9 is not one of auto, avx512, avx2, portable; using avx2 (auto)")
        );
    }

    #[test]
    fn tables_are_handed_out_exactly_for_the_paths_the_cpu_has() {
        for isa in Isa::ALL {
            match Kernels::for_isa(isa) {
                Some(k) => {
                    assert!(isa.is_available());
                    assert_eq!(k.isa(), isa);
                }
                None => assert!(isa.missing_feature().is_some(), "{isa}"),
            }
        }
        assert!(Kernels::for_isa(Isa::Portable).is_some());
        assert!(selection().isa.is_available());
        assert_eq!(kernels().isa(), selection().isa);
    }
}
