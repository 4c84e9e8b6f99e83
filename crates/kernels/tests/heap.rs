//! `keep_freed_memory`: a large block freed and asked for again comes back from the heap, its
//! pages already resident, instead of as a fresh mapping faulted in page by page. Its own test
//! binary, as the policy is for a whole process and must be set before threads allocate.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_freed_large_block_comes_back_without_page_faults() {
    use simcase_kernels::heap::{keep_freed_memory, operator_tuned, HeapPolicy};

    let policy = keep_freed_memory();
    if operator_tuned() {
        assert_eq!(policy, HeapPolicy::OperatorTuned);
        return;
    }
    assert_eq!(policy, HeapPolicy::Keeping);

    /// Minor page faults of the calling thread so far.
    fn faults() -> i64 {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `u` is a valid, writable rusage for getrusage to fill.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: getrusage returned 0, so it filled `u`.
        unsafe { u.assume_init() }.ru_minflt
    }
    /// Page faults taken to allocate 80 MiB (past a thread arena's 64 MiB), write every page
    /// of it and free it.
    fn round() -> i64 {
        const LEN: usize = 80 << 20;
        let before = faults();
        let mut v: Vec<u8> = Vec::with_capacity(LEN);
        v.resize(LEN, 1);
        std::hint::black_box(&mut v);
        drop(v);
        faults() - before
    }
    // A thread started after the policy, as the embedding threads are.
    let (first, second) = std::thread::spawn(|| (round(), round())).join().unwrap();
    assert!(
        first > 0,
        "the first block is fresh memory, so it faults in"
    );
    assert!(
        second * 10 <= first,
        "the second block faulted {second} times against the first's {first}: it was not reused"
    );
}
