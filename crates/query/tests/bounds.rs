//! A search's memory is bounded by the index, whatever its parameters: a huge `offset` or `k`
//! (which once sized the ranking heap, and so aborted the server on one request) answers an
//! empty or a bounded page. Measured with a counting allocator over a real index on disk.

use simcase_index::{ItemMeta, Snapshot, Writer};
use simcase_query::{search, Field, Filters, GroupBy, Query, Request, StudyDate};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc`/`realloc` above with layout `l`.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Measurements run one at a time (the counters are global).
static MEASURE: Mutex<()> = Mutex::new(());

/// Rows of the test index, and their dimension.
const ROWS: usize = 3000;
const DIM: usize = 8;

/// An index of `ROWS` rows: CT on even rows, MR on odd; three rows per patient; a study date
/// (in the three stored forms) on every tenth row.
fn index() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("simcase-query-bounds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = Writer::open(&dir, "m", DIM).unwrap();
        let mut x = 17u64;
        let batch: Vec<(ItemMeta, Vec<f32>)> = (0..ROWS)
            .map(|i| {
                let mut v: Vec<f32> = (0..DIM)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                    })
                    .collect();
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                v.iter_mut().for_each(|a| *a /= norm);
                let mut meta = ItemMeta {
                    path: format!("/data/{i}.png"),
                    hash: format!("h{i}"),
                    format: "png".into(),
                    modality: Some(if i % 2 == 0 { "CT" } else { "MR" }.into()),
                    label: Some(format!("L{}", i % 7)),
                    patient_key: Some(format!("p{}", i / 3)),
                    ..Default::default()
                };
                if i % 10 == 0 {
                    let year = 2000 + (i / 10) % 20;
                    let date = match i % 30 {
                        0 => format!("{year}0615"),
                        10 => format!("{year}.06.15"),
                        _ => format!("{year}-06-15"),
                    };
                    meta.extra.insert("study_date".into(), date.into());
                }
                (meta, v)
            })
            .collect();
        w.add(&batch).unwrap();
        drop(w);
        let snap = Snapshot::open(&dir).unwrap();
        assert_eq!(snap.len(), ROWS);
        snap
    })
}

/// `f`'s result and the peak heap it took above what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

fn ct_only() -> Filters {
    let mut f = Filters::default();
    f.add("modality", "CT").unwrap();
    f
}

#[test]
fn offsets_at_or_past_the_candidates_answer_empty_pages_without_allocating() {
    let snap = index();
    let _one = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    let q = Query::item(snap, 0).unwrap();
    // Warm up (the thread pool's first use allocates).
    search(snap, &q, &Request::default()).unwrap();
    for (filters, candidates) in [(Filters::default(), ROWS - 1), (ct_only(), ROWS / 2 - 1)] {
        for group_by in [None, Some(GroupBy::Patient)] {
            for offset in [usize::MAX, 1_000_000_000_000, ROWS, candidates] {
                for k in [1, 20, usize::MAX] {
                    let req = Request {
                        k,
                        offset,
                        filters: filters.clone(),
                        group_by,
                        ..Request::default()
                    };
                    let (res, peak) = peak_of(|| search(snap, &q, &req).unwrap());
                    let what = format!("offset {offset}, k {k}, {group_by:?}, {filters:?}");
                    assert!(res.hits.is_empty(), "{what}: {} hits", res.hits.len());
                    assert_eq!(res.groups.as_ref().map(Vec::len), group_by.map(|_| 0));
                    assert_eq!((res.candidates, res.offset, res.k), (candidates, offset, k));
                    // Nothing was ranked: ranking these rows alone would take ~100 KB.
                    assert!(peak < 4096, "{what}: {peak} bytes allocated");
                }
            }
        }
    }
}

#[test]
fn huge_k_is_bounded_by_the_rows() {
    let snap = index();
    let _one = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    let q = Query::item(snap, 0).unwrap();
    let all = search(
        snap,
        &q,
        &Request {
            k: ROWS,
            ..Request::default()
        },
    )
    .unwrap();
    assert_eq!(all.hits.len(), ROWS - 1);
    // A generous bound, linear in the rows (ranking is ~32 B a row, a page's hit with its
    // metadata a few hundred): what k sized before was 16 B × k.
    let bound = ROWS * 1024;
    for (k, offset) in [
        (usize::MAX, 0),
        (1 << 40, 0),
        (usize::MAX, ROWS - 6),
        (1_000_000_000_000, ROWS - 6),
    ] {
        let req = Request {
            k,
            offset,
            ..Request::default()
        };
        let (res, peak) = peak_of(|| search(snap, &q, &req).unwrap());
        let ids: Vec<u64> = res.hits.iter().map(|h| h.id).collect();
        let want: Vec<u64> = all.hits[offset..].iter().map(|h| h.id).collect();
        assert_eq!(ids, want, "k {k}, offset {offset}");
        assert_eq!(res.hits.first().map(|h| h.rank), Some(offset + 1));
        assert!(peak < bound, "k {k}, offset {offset}: {peak} bytes");
    }
    // Grouped: every patient once, whatever k.
    let req = Request {
        k: usize::MAX,
        group_by: Some(GroupBy::Patient),
        ..Request::default()
    };
    let (res, peak) = peak_of(|| search(snap, &q, &req).unwrap());
    assert_eq!(res.groups.unwrap().len(), ROWS / 3);
    assert!(peak < bound, "grouped: {peak} bytes");
}

#[test]
fn filters_and_offsets_page_through_exactly_the_filtered_items() {
    let _one = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    let snap = index();
    let q = Query::item(snap, 1).unwrap();
    let ct = ct_only();
    let req = |k, offset, group_by| Request {
        k,
        offset,
        filters: ct.clone(),
        group_by,
        ..Request::default()
    };
    let all = search(snap, &q, &req(ROWS, 0, None)).unwrap();
    assert_eq!(all.candidates, ROWS / 2);
    assert_eq!(all.hits.len(), ROWS / 2);
    assert!(all.hits.iter().all(|h| h.modality.as_deref() == Some("CT")));
    // The last page holds what is left; the page after it is empty.
    let last = search(snap, &q, &req(10, ROWS / 2 - 3, None)).unwrap();
    let ranks: Vec<usize> = last.hits.iter().map(|h| h.rank).collect();
    assert_eq!(ranks, vec![ROWS / 2 - 2, ROWS / 2 - 1, ROWS / 2]);
    let ids: Vec<u64> = last.hits.iter().map(|h| h.id).collect();
    let tail: Vec<u64> = all.hits[ROWS / 2 - 3..].iter().map(|h| h.id).collect();
    assert_eq!(ids, tail);
    for offset in [ROWS / 2, ROWS / 2 + 1, ROWS, 1_000_000_000_000, usize::MAX] {
        let r = req(10, offset, None);
        let (r, peak) = peak_of(|| search(snap, &q, &r).unwrap());
        assert!(r.hits.is_empty(), "offset {offset}");
        assert_eq!(r.candidates, ROWS / 2);
        assert!(peak < 4096, "offset {offset}: {peak} bytes allocated");
    }
    // Grouped by patient: CT rows of 1000 patients (rows 3p..3p+2), so 1000 groups.
    let groups = search(snap, &q, &req(usize::MAX, 0, Some(GroupBy::Patient))).unwrap();
    let n = groups.groups.as_ref().unwrap().len();
    assert_eq!(n, ROWS / 3);
    let last = search(snap, &q, &req(5, n - 2, Some(GroupBy::Patient))).unwrap();
    assert_eq!(last.groups.as_ref().unwrap().len(), 2);
    assert_eq!(last.hits[0].rank, n - 1);
    // Past the groups but not the candidates, finding that out takes a (bounded) ranking; at
    // or past the candidates, nothing is ranked.
    for (offset, limit) in [(n, ROWS * 1024), (ROWS / 2, 4096), (usize::MAX, 4096)] {
        let r = req(5, offset, Some(GroupBy::Patient));
        let (r, peak) = peak_of(|| search(snap, &q, &r).unwrap());
        assert_eq!(r.groups.map(|g| g.len()), Some(0), "offset {offset}");
        assert!(
            peak < limit,
            "grouped, offset {offset}: {peak} bytes allocated"
        );
    }
}

#[test]
fn study_dates_filter_in_every_stored_form() {
    let _one = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    let snap = index();
    let q = Query::item(snap, 0).unwrap();
    let mut f = Filters::default();
    f.add("date_from", "2005-06-15").unwrap();
    f.add("date_to", "20060615").unwrap();
    let r = search(
        snap,
        &q,
        &Request {
            k: ROWS,
            filters: f,
            ..Request::default()
        },
    )
    .unwrap();
    // Rows i ≡ 0 (mod 10) with year 2000 + (i/10) % 20 in 2005..=2006: i/10 ≡ 5, 6 (mod 20).
    let mut want: Vec<u64> = (0..ROWS as u64)
        .filter(|i| i % 10 == 0 && [5, 6].contains(&(i / 10 % 20)) && *i != 0)
        .collect();
    let mut got: Vec<u64> = r.hits.iter().map(|h| h.id).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(r.candidates, want.len());
    // All three stored forms are among them (YYYYMMDD, YYYY.MM.DD, YYYY-MM-DD).
    let forms: std::collections::BTreeSet<u64> = got.iter().map(|i| i % 30).collect();
    assert_eq!(forms.into_iter().collect::<Vec<_>>(), vec![0, 10, 20]);
    assert_eq!(
        StudyDate::parse("20050615"),
        StudyDate::parse_stored("2005.06.15")
    );
    // A field filter and an unknown field.
    assert!("modality".parse::<Field>().is_ok());
    assert!(Filters::default().add("nosuch", "x").is_err());
}

#[test]
fn a_missing_item_is_not_found() {
    let _one = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    let snap = index();
    for id in [ROWS as u64, u64::MAX] {
        match Query::item(snap, id) {
            Err(simcase_query::QueryError::NotFound { id: got, items }) => {
                assert_eq!((got, items), (id, ROWS))
            }
            Err(e) => panic!("{id}: {e}"),
            Ok(_) => panic!("{id}: found"),
        }
    }
}
