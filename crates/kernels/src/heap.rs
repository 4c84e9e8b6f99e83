//! Keeping freed memory for the next forward pass. A model frees and asks again for the same
//! few block sizes at every layer and every image. glibc's malloc serves a block above its
//! mmap threshold (at most 32 MiB) with a fresh mapping, and one above 64 MiB from any
//! thread's own arena the same way; each such block is unmapped when freed, and every page of
//! the next one is faulted in and zeroed by the kernel. `litemedsam`'s first stage holds 64
//! channels at 256 × 256 (16 MiB a tensor, 64 MiB inside its MBConv blocks): about 200,000
//! page faults and a sixth of the CPU time per image went to that.
//!
//! [`keep_freed_memory`] tells malloc to serve every thread from its main heap, never with a
//! mapping of its own, and to give the heap's free top back to the system only past 1 GiB. A
//! freed block is then reused as it is. Raising the mmap threshold instead does not do it:
//! glibc refuses any value past 32 MiB (the setting this replaced asked for 1 GiB, was
//! refused, and did not check), and a thread's arena maps a block over 64 MiB whatever the
//! threshold. Measured on `litemedsam` at batch 1 (AMD EPYC Zen 4, 2 threads): page faults
//! 3.6M → 0.16M over the same run, CPU time −15%, peak resident memory about the same (663
//! against 655 MB). An operator's own `GLIBC_TUNABLES` malloc settings are left as they are.

/// Free memory at the heap's top past which malloc gives it back to the system.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// The same policy as `GLIBC_TUNABLES` sets it for another process (`simcase bench` gives it
/// to its Python peers, so that both sides run under one malloc policy).
pub fn glibc_tunables() -> String {
    format!(
        "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
    )
}

/// Whether `GLIBC_TUNABLES` in this process's environment already sets malloc's parameters.
pub fn operator_tuned() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
}

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapPolicy {
    /// malloc now keeps freed memory (glibc only).
    Keeping,
    /// `GLIBC_TUNABLES` already sets malloc's parameters: the operator's choice stands.
    OperatorTuned,
    /// Not glibc, or glibc refused a setting: malloc runs on its defaults (a refused setting
    /// leaves its parameter as it was).
    Unsupported,
}

/// Sets malloc's policy for this process (see the module's text). Call it first in `main`,
/// before any thread starts: a thread that has already allocated keeps its own arena.
pub fn keep_freed_memory() -> HeapPolicy {
    if operator_tuned() {
        return HeapPolicy::OperatorTuned;
    }
    set_policy()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_policy() -> HeapPolicy {
    // SAFETY: `mallopt` only sets malloc's parameters; each call is checked below, and a
    // parameter it refuses leaves malloc as it was.
    let ok = unsafe {
        // (`glibc_tunables` states the same three settings for another process.)
        // One arena: every thread's large blocks come from the main heap, whose free blocks
        // any thread can reuse (a thread arena serves a block over 64 MiB with a mapping).
        libc::mallopt(libc::M_ARENA_MAX, 1) == 1
            // No per-block mappings: a freed block stays in the heap.
            && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    };
    if ok {
        HeapPolicy::Keeping
    } else {
        HeapPolicy::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_policy() -> HeapPolicy {
    HeapPolicy::Unsupported
}
