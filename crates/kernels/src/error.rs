//! The one error the kernels return: a shape that does not fit, described in a line.

use std::fmt;

/// A kernel refused its arguments (lengths, strides or dimensions that do not fit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// `Err` with the message from `why` unless `ok`.
pub(crate) fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), KernelError> {
    if ok {
        Ok(())
    } else {
        Err(KernelError(why()))
    }
}
