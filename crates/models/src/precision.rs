//! The arithmetic the encoders' linear layers run in: f32 (the reference), bf16 weights and
//! activations summed in f32 (`--embed-precision bf16`, AVX512_BF16), or int8 weights and
//! activations summed in i32 (`int8`: AVX512_VNNI, or AVX2 on any x86-64-v3 CPU). Chosen once
//! per process, before a model is loaded, by [`set_precision`]; each linear layer packs its
//! weights for it at its first use. Layer norm, softmax, GELU, attention and the convolutions stay f32.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// The precision of the linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 weights and activations, f32 sums.
    Bf16,
    /// int8 weights (per output channel) and activations (per row, at each call), i32 sums.
    Int8,
}

impl Precision {
    /// Every precision, f32 first.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// Its name on the command line and in an index's settings.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown precision {s:?}: f32, bf16 or int8"))
    }
}

/// Whether `model`'s embeddings are offered at `p` for indexing and search: f32 always; another
/// precision only where it was measured within its bounds: cosine to f32 on the parity images
/// (≥ 0.999 for bf16, ≥ 0.995 for int8; `tests/precision.rs`) and dev.csv P@1 within 0.005 of
/// f32 at every level, micro and macro (README, "Embedding precision"). `Err` says why not.
/// `eval` and `bench embed` measure any model at any precision.
pub fn offered(model: crate::ModelId, p: Precision) -> Result<(), String> {
    use crate::ModelId::{Dinov2S, EfficientNetLite0, LiteMedSam};
    let why = match (p, model) {
        (Precision::F32, _) | (Precision::Bf16, Dinov2S) => return Ok(()),
        (Precision::Bf16, EfficientNetLite0) => {
            "on dev.csv its full-label P@1 macro moved 0.555 -> 0.563 against f32, more than 0.005"
        }
        (Precision::Int8, Dinov2S) => {
            "on dev.csv its full-label P@1 fell 0.428 -> 0.415 (macro 0.462 -> 0.437) against \
             f32, more than 0.005"
        }
        (Precision::Int8, EfficientNetLite0) => {
            "its cosine to f32 on the parity images is 0.9909, under 0.995"
        }
        (Precision::Bf16, LiteMedSam) => {
            "on dev.csv its full-label P@1 moved 0.445 -> 0.462 (macro 0.464 -> 0.482) against \
             f32, more than 0.005"
        }
        (Precision::Int8, LiteMedSam) => {
            "its cosine to f32 on the parity images is 0.9928, under 0.995"
        }
        _ => "its retrieval at this precision has not been measured against f32 on dev.csv",
    };
    Err(format!(
        "--embed-precision {p} is not offered for {model}: {why} (`simcase eval \
         --embed-precision {p}` measures it)"
    ))
}

static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// Asks for `p` in the linear layers of models loaded from now on, and returns what they will
/// run: `p`, or f32 with a one-line notice when this CPU has no kernel for `p` (bf16 needs
/// AVX512_BF16; `SIMCASE_KERNELS=portable` emulates it, slowly, for tests).
pub fn set_precision(p: Precision) -> (Precision, Option<String>) {
    let (got, notice) = match p {
        Precision::Bf16 if simcase_kernels::bf16_path().is_none() => (
            Precision::F32,
            Some(
                "--embed-precision bf16: this CPU has no AVX512_BF16 (or SIMCASE_KERNELS chose a path \
                 without it); running f32"
                    .to_string(),
            ),
        ),
        Precision::Int8 if simcase_kernels::i8_path().is_none() => (
            Precision::F32,
            Some(
                "--embed-precision int8: this CPU has no AVX2 (or SIMCASE_KERNELS chose a path \
                 without it); running f32"
                    .to_string(),
            ),
        ),
        p => (p, None),
    };
    CHOSEN.store(got as u8, Ordering::Relaxed);
    (got, notice)
}

/// The precision models loaded now run in (see [`set_precision`]).
pub fn precision() -> Precision {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Precision::Bf16,
        2 => Precision::Int8,
        _ => Precision::F32,
    }
}
