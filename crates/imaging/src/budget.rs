//! A global decode byte budget: a counting semaphore over estimated bytes, so that peak memory
//! while decoding is bounded whatever the concurrency (server uploads and thumbnails, ingest's
//! decode threads).
//!
//! # Memory model
//!
//! Every decode that carries a budget ([`crate::DecodeOptions::budget`]) first estimates its
//! peak bytes from the header (PNG IHDR / JPEG SOF dimensions, DICOM rows × columns × frames ×
//! samples × bits after the data set is parsed, volume dimensions, a gzip wrapper's stated size)
//! and takes that many bytes from the budget before any pixel buffer exists; the bytes go back
//! when the caller's work on the decoded images is done ([`crate::decode_items_with`], RAII
//! [`Permit`]). Waiting is first come, first served (a large decode is not starved by small
//! ones) and ends at the budget's deadline with [`crate::DecodeError::Busy`]; a decode whose
//! estimate exceeds the whole budget fails at once with [`crate::DecodeError::OverBudget`].
//!
//! What the estimate counts (`w × h` pixels, `s` samples per pixel, `b` bytes per sample):
//! - PNG / JPEG whose longest side is at most [`crate::REDUCE_ABOVE`] (2048): the decoder's
//!   buffer, its converted copy, the `f32` samples and the three `f32` output planes,
//!   `w·h·(2·s·b + 4·s + 12)` bytes: 18 a pixel for 8-bit grey, at most 44 (16-bit RGBA),
//!   so at most 185 MB.
//! - Larger PNG (non-interlaced) and baseline JPEG never exist at full resolution: PNG rows
//!   are read one at a time and box-averaged by an integer factor, libjpeg-turbo's DCT scaling
//!   decodes JPEG at 1/2, 1/4 or 1/8, so the estimate is the reduced image's (longest side
//!   ≤ 2048) plus a few source rows: 65 MB for an 8000×8000 grey PNG, 84 MB for a 7000×7000
//!   JPEG. Interlaced PNGs and JPEGs that libjpeg-turbo cannot scale (lossless, CMYK) are
//!   decoded, and counted, at full size. A progressive JPEG also keeps every DCT coefficient
//!   until its last scan (`w·h·2` bytes a component, counted for 3), whatever its decoded
//!   size, and one of more than 1000 scans is refused before decoding.
//! - DICOM: the parsed object (as big as the file), the decoded pixel data of every frame
//!   (`rows·cols·frames·s·b`, twice for codecs that re-store frames natively) and per selected
//!   frame its `f32` planes and intermediates (`rows·cols·(12 + 8·s)`); a deflated object's
//!   data set twice as it inflates, block by block (the copy checked, and dicom-rs's own).
//! - NIfTI / NRRD: the `f32` volume (4 bytes a voxel), and every selected slice as `f32` RGB
//!   (12 bytes a pixel, twice for slices stretched to square pixels); a gzip wrapper adds
//!   its inflated size.
//!
//! Bounds, for budget `B`:
//! - per request (server): the upload itself (≤ `--max-upload-mb`, 32 MB) plus at most `B`
//!   decoding, plus the model's input (224² × 3 × 4 = 0.6 MB); a thumbnail reads its stored
//!   file inside the decode ([`crate::Input::File`]), so the file's bytes count in `B`;
//! - per decode thread (ingest): the file's bytes (a file larger than `B` is not held: it is
//!   hashed a block at a time and not decoded, see [`crate::read_file`]) plus at most `B`,
//!   plus the preprocessed items waiting for a batch;
//! - in total: `B` + the fixed overheads (model weights and activations, the index mapping, the
//!   files read but not yet decoded: one per decode thread or request in flight), whatever the
//!   number of requests or decode threads. The tests (`crates/cli/tests/bombs.rs`, `serve.rs`)
//!   measure it with 8000×8000 bomb images.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A pool of decode bytes shared by every decode that carries it (see the module docs).
pub struct DecodeBudget {
    total: u64,
    wait: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    in_use: u64,
    peak: u64,
    next_ticket: u64,
    /// Tickets of the acquirers still waiting, oldest first: only the oldest may take bytes.
    waiting: BTreeSet<u64>,
}

/// Why bytes could not be taken from a [`DecodeBudget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// More bytes than the whole budget: this decode can never run under it.
    TooLarge {
        /// Bytes asked for.
        needed: u64,
        /// The budget's total.
        budget: u64,
    },
    /// The bytes did not come free before the deadline.
    Timeout {
        /// Bytes asked for.
        needed: u64,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl std::fmt::Debug for DecodeBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeBudget")
            .field("total", &self.total)
            .field("wait", &self.wait)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl DecodeBudget {
    /// A budget of `total` bytes whose acquirers wait at most `wait` for bytes to come free.
    pub fn new(total: u64, wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            total,
            wait,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    /// A budget of `mb` MiB (the `--decode-budget-mb` flags), waiting at most `wait`.
    pub fn from_mb(mb: u64, wait: Duration) -> Arc<Self> {
        Self::new(mb.saturating_mul(1 << 20), wait)
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How long an acquirer waits before giving up.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Bytes held by permits now.
    pub fn in_use(&self) -> u64 {
        self.lock().in_use
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> u64 {
        self.lock().peak
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts half-updated (every update
        // is one statement), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take `bytes`, waiting (first come, first served) at most the budget's deadline.
    pub fn acquire(self: &Arc<Self>, bytes: u64) -> Result<Permit, BudgetError> {
        self.acquire_within(bytes, self.wait)
    }

    /// Take `bytes` now or not at all (never waits, never jumps the queue).
    pub fn try_acquire(self: &Arc<Self>, bytes: u64) -> Result<Permit, BudgetError> {
        self.acquire_within(bytes, Duration::ZERO)
    }

    /// Take `bytes`, waiting at most `wait`.
    pub fn acquire_within(
        self: &Arc<Self>,
        bytes: u64,
        wait: Duration,
    ) -> Result<Permit, BudgetError> {
        if bytes > self.total {
            return Err(BudgetError::TooLarge {
                needed: bytes,
                budget: self.total,
            });
        }
        let start = Instant::now();
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.insert(ticket);
        loop {
            let first = st.waiting.first() == Some(&ticket);
            if first && st.in_use + bytes <= self.total {
                st.waiting.remove(&ticket);
                st.in_use += bytes;
                st.peak = st.peak.max(st.in_use);
                drop(st);
                // The next in line may fit in what is left.
                self.freed.notify_all();
                return Ok(Permit {
                    budget: self.clone(),
                    bytes,
                });
            }
            let waited = start.elapsed();
            if waited >= wait {
                st.waiting.remove(&ticket);
                drop(st);
                // Whoever queued behind this ticket may be first now.
                self.freed.notify_all();
                return Err(BudgetError::Timeout {
                    needed: bytes,
                    waited,
                });
            }
            st = self
                .freed
                .wait_timeout(st, wait - waited)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Bytes held from a [`DecodeBudget`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<DecodeBudget>,
    bytes: u64,
}

impl Permit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Add `other`'s bytes to this permit (both from the same budget).
    pub(crate) fn merge(&mut self, mut other: Permit) {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget));
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut st = self.budget.lock();
        st.in_use -= self.bytes;
        drop(st);
        self.budget.freed.notify_all();
    }
}

/// The budget of the decode running on this thread, and what it holds: installed by
/// [`crate::decode_items_with`] so that the format readers can reserve their estimate where
/// they learn it (after the header, before the pixels) without threading it through every
/// signature.
pub(crate) struct Gate {
    budget: Arc<DecodeBudget>,
    permit: Option<Permit>,
    /// Bytes reserved so far by this decode.
    need: u64,
    /// Set when the decode already held bytes and needed more than were free: holding some
    /// while waiting for more could deadlock, so it gives everything back, waits for the whole
    /// amount at once, and decodes again.
    retry: Option<u64>,
}

thread_local! {
    static GATE: std::cell::RefCell<Option<Gate>> = const { std::cell::RefCell::new(None) };
}

/// Reserve `bytes` more for the decode running on this thread; a no-op without a budget.
pub(crate) fn reserve(bytes: u64) -> Result<(), crate::DecodeError> {
    GATE.with(|g| {
        let mut g = g.borrow_mut();
        let Some(gate) = g.as_mut() else {
            return Ok(());
        };
        let need = gate.need.saturating_add(bytes);
        gate.need = need;
        let held = gate.permit.as_ref().map_or(0, Permit::bytes);
        if need <= held {
            return Ok(());
        }
        let more = need - held;
        let got = if gate.permit.is_none() {
            gate.budget.acquire(more)
        } else {
            gate.budget.try_acquire(more)
        };
        match got {
            Ok(p) => {
                match gate.permit.as_mut() {
                    Some(held) => held.merge(p),
                    None => gate.permit = Some(p),
                }
                Ok(())
            }
            Err(BudgetError::Timeout { needed, .. }) if gate.permit.is_some() => {
                gate.retry = Some(need);
                Err(crate::DecodeError::Busy {
                    needed,
                    waited_ms: 0,
                })
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// What a gated run leaves: the permit (to drop once the caller is done with the pixels),
/// and the bytes to hold from the start of another try, if this one must be repeated.
pub(crate) struct Held {
    /// The bytes held.
    pub permit: Option<Permit>,
    /// See [`Gate::retry`].
    pub retry: Option<u64>,
}

/// Run `f` with `budget` installed as this thread's gate, holding `pre` from the start.
pub(crate) fn gated<T>(
    budget: &Arc<DecodeBudget>,
    pre: Option<Permit>,
    f: impl FnOnce() -> T,
) -> (T, Held) {
    struct Reset(Option<Gate>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            GATE.with(|g| *g.borrow_mut() = prev);
        }
    }
    let gate = Gate {
        budget: budget.clone(),
        permit: pre,
        need: 0,
        retry: None,
    };
    let prev = GATE.with(|g| g.borrow_mut().replace(gate));
    let reset = Reset(prev);
    let out = f();
    let mine = GATE.with(|g| g.borrow_mut().take());
    drop(reset);
    let held = match mine {
        Some(g) => Held {
            permit: g.permit,
            retry: g.retry,
        },
        None => Held {
            permit: None,
            retry: None,
        },
    };
    (out, held)
}

impl From<BudgetError> for crate::DecodeError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::TooLarge { needed, budget } => {
                crate::DecodeError::OverBudget { needed, budget }
            }
            BudgetError::Timeout { needed, waited } => crate::DecodeError::Busy {
                needed,
                waited_ms: waited.as_millis() as u64,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn permits_count_bytes_and_release_on_drop() {
        let b = DecodeBudget::new(100, 10 * MS);
        let p = b.acquire(60).unwrap();
        assert_eq!((b.in_use(), p.bytes()), (60, 60));
        let q = b.acquire(40).unwrap();
        assert_eq!(b.in_use(), 100);
        // Full: a third times out after about the deadline, holding nothing.
        let t = Instant::now();
        let e = b.acquire(1).unwrap_err();
        assert!(matches!(e, BudgetError::Timeout { needed: 1, .. }), "{e:?}");
        assert!(t.elapsed() >= 10 * MS);
        assert_eq!(b.in_use(), 100);
        drop(p);
        assert_eq!(b.in_use(), 40);
        drop(q);
        assert_eq!((b.in_use(), b.peak()), (0, 100));
        assert!(b.try_acquire(100).is_ok());
    }

    #[test]
    fn more_than_the_whole_budget_is_refused_at_once() {
        let b = DecodeBudget::new(100, Duration::from_secs(60));
        let t = Instant::now();
        let e = b.acquire(101).unwrap_err();
        assert_eq!(
            e,
            BudgetError::TooLarge {
                needed: 101,
                budget: 100
            }
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        let msg = crate::DecodeError::from(e).to_string();
        assert!(msg.contains("101") && msg.contains("100"), "{msg}");
    }

    #[test]
    fn a_waiter_gets_its_bytes_when_a_holder_drops() {
        let b = DecodeBudget::new(100, Duration::from_secs(20));
        let p = b.acquire(80).unwrap();
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let q = b2.acquire(50).unwrap();
            (start.elapsed(), q.bytes())
        });
        std::thread::sleep(50 * MS);
        assert_eq!(b.in_use(), 80, "the waiter must not have taken bytes yet");
        drop(p);
        let (waited, got) = t.join().unwrap();
        assert_eq!(got, 50);
        assert!(waited >= 40 * MS, "{waited:?}");
        assert_eq!((b.in_use(), b.peak()), (0, 80));
    }

    #[test]
    fn first_come_first_served_a_big_waiter_is_not_overtaken() {
        let b = DecodeBudget::new(100, Duration::from_secs(20));
        let small = b.acquire(30).unwrap();
        let b2 = b.clone();
        // Waits for 90: only 70 are free.
        let big = std::thread::spawn(move || b2.acquire(90).map(|p| p.bytes()));
        std::thread::sleep(50 * MS);
        // 10 would fit in what is free, but the big acquirer is ahead in the queue.
        assert!(b.try_acquire(10).is_err());
        drop(small);
        assert_eq!(big.join().unwrap(), Ok(90));
        assert_eq!(b.peak(), 90);
    }

    #[test]
    fn concurrent_holders_never_exceed_the_budget() {
        let b = DecodeBudget::new(1000, Duration::from_secs(30));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for k in 0..50 {
                        let p = b.acquire(100 + ((i * 37 + k * 11) % 400)).unwrap();
                        assert!(b.in_use() <= 1000);
                        std::thread::yield_now();
                        drop(p);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.in_use(), 0);
        assert!(b.peak() <= 1000 && b.peak() >= 100);
    }

    #[test]
    fn reserve_outside_a_gate_is_free_and_inside_it_holds_until_the_permit_drops() {
        let b = DecodeBudget::new(100, 10 * MS);
        assert!(reserve(1 << 40).is_ok(), "no gate: no budget");
        let (r, held) = gated(&b, None, || {
            reserve(30)?;
            reserve(20)?;
            assert_eq!(b.in_use(), 50);
            Ok::<_, crate::DecodeError>(())
        });
        assert!(r.is_ok() && held.retry.is_none());
        assert_eq!(held.permit.as_ref().map(Permit::bytes), Some(50));
        assert_eq!(b.in_use(), 50);
        drop(held);
        assert_eq!(b.in_use(), 0);
        // Growing past what is free while holding asks to start again with the total.
        let other = b.acquire(60).unwrap();
        let (r, held) = gated(&b, None, || {
            reserve(30)?;
            reserve(20)
        });
        assert!(matches!(r, Err(crate::DecodeError::Busy { .. })), "{r:?}");
        assert_eq!(held.retry, Some(50));
        drop(held);
        drop(other);
        assert_eq!(b.in_use(), 0);
    }
}
