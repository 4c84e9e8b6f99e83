//! The arithmetic the encoders' linear layers run in: f32 (the reference), or bf16 weights and
//! activations summed in f32 (`--precision bf16`, AVX512_BF16). Chosen once per process,
//! before a model is loaded, by [`set_precision`]; each linear layer packs its weights for it
//! at its first use. Layer norm, softmax, GELU, attention and the convolutions stay f32.

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
}

impl Precision {
    /// Every precision, f32 first.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// Its name on the command line and in an index's settings.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
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
            .ok_or_else(|| format!("unknown precision {s:?}: f32 or bf16"))
    }
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
        p => (p, None),
    };
    CHOSEN.store(got as u8, Ordering::Relaxed);
    (got, notice)
}

/// The precision models loaded now run in (see [`set_precision`]).
pub fn precision() -> Precision {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Precision::Bf16,
        _ => Precision::F32,
    }
}
