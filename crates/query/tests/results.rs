//! What a search says about its hits, on a small index written here: where in its file each
//! hit is (slice, frame, volume), copies of one image (the same pixel hash) collapsed into the
//! best-ranked one with `k` counting distinct images, the query's own copies left out, and
//! why a filtered search is empty.

use simcase_index::{ItemMeta, Snapshot, Writer};
use simcase_query::{search, Duplicates, Filters, GroupBy, Query, Request};
use std::path::PathBuf;
use std::sync::OnceLock;

const DIM: usize = 4;

/// A unit vector at `angle` radians in the first plane, a little of `z` in the third axis.
fn at(angle: f32, z: f32) -> Vec<f32> {
    let v = [angle.cos(), angle.sin(), z, 0.0];
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter().map(|a| a / n).collect()
}

/// Items, nearest to row 0 first:
/// 0: the query, a PNG whose pixels (hash A) are also stored as row 5;
/// 1..=3: one image (hash B) in three files, 1 the nearest of them;
/// 4: a single image without a pixel hash (an older index), same vector as 6;
/// 5: a copy of the query (hash A), far from it in score (another model run, say);
/// 6: no pixel hash either: never collapsed with 4;
/// 7..=9: slices 0..3 of one volume, frame-less; 10: frame 2 of 5 of a DICOM object.
fn index() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("simcase-query-results-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = Writer::open(&dir, "m", DIM).unwrap();
        let item = |i: usize, modality: &str, pixels: Option<&str>| {
            let mut m = ItemMeta {
                path: format!("/data/{i}.dcm"),
                hash: format!("h{i}"),
                format: "dicom".into(),
                modality: Some(modality.into()),
                patient_key: Some(format!("p{}", i % 3)),
                ..Default::default()
            };
            if let Some(p) = pixels {
                m.extra.insert(ItemMeta::PIXEL_HASH.into(), p.into());
            }
            m
        };
        let mut rows = vec![
            (item(0, "MR", Some("A")), at(0.0, 0.0)),
            (item(1, "MR", Some("B")), at(0.1, 0.0)),
            (item(2, "MR", Some("B")), at(0.11, 0.0)),
            (item(3, "CT", Some("B")), at(0.12, 0.0)),
            (item(4, "MR", None), at(0.2, 0.0)),
            (item(5, "MR", Some("A")), at(1.5, 0.0)),
            (item(6, "MR", None), at(0.2, 0.0)),
        ];
        for s in 0..3u32 {
            let mut m = item(7 + s as usize, "CT", Some(&format!("S{s}")));
            m.format = "nifti".into();
            for (k, v) in [
                ("volume", "0123456789abcdef".into()),
                ("axis", "axial".into()),
            ] {
                m.extra.insert(k.into(), v);
            }
            m.extra.insert("slice".into(), (s * 10).into());
            m.extra.insert("slices".into(), 30.into());
            rows.push((m, at(0.3 + 0.01 * s as f32, 0.0)));
        }
        let mut f = item(10, "XA", Some("F"));
        f.extra.insert("frame".into(), 2.into());
        f.extra.insert("frames".into(), 5.into());
        rows.push((f, at(0.4, 0.0)));
        w.add(&rows).unwrap();
        drop(w);
        Snapshot::open(&dir).unwrap()
    })
}

fn req(k: usize) -> Request {
    Request {
        k,
        ..Request::default()
    }
}

fn ids(r: &simcase_query::Response) -> Vec<u64> {
    r.hits.iter().map(|h| h.id).collect()
}

#[test]
fn copies_collapse_into_the_best_ranked_one_and_k_counts_images() {
    let snap = index();
    let q = Query::item(snap, 0).unwrap();
    let r = search(snap, &q, &req(3)).unwrap();
    // 5 is the query's own copy: left out, and named.
    assert_eq!(ids(&r), [1, 4, 6]);
    assert_eq!(r.query_duplicates, 1);
    assert_eq!(r.query_also.iter().map(|a| a.id).collect::<Vec<_>>(), [5]);
    assert_eq!(r.query_also[0].path.as_deref(), Some("/data/5.dcm"));
    let best = &r.hits[0];
    assert_eq!(best.rank, 1);
    assert_eq!(best.duplicates, 2);
    assert_eq!(best.also.iter().map(|a| a.id).collect::<Vec<_>>(), [2, 3]);
    // Items without a pixel hash are never collapsed, even with equal vectors.
    assert!(r.hits[1].also.is_empty() && r.hits[2].also.is_empty());
    assert_eq!(r.hits.iter().map(|h| h.rank).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(r.candidates, 9, "11 items less the query and its copy");

    // Pages count distinct images: the next page starts after them.
    let next = search(
        snap,
        &q,
        &Request {
            offset: 3,
            ..req(3)
        },
    )
    .unwrap();
    assert_eq!(ids(&next), [7, 8, 9]);
    assert_eq!(next.hits[0].rank, 4);

    // A filter keeps only the copies it lets through, in the count and the list.
    let mut mr = Filters::default();
    mr.add("modality", "MR").unwrap();
    let r = search(
        snap,
        &q,
        &Request {
            filters: mr,
            ..req(1)
        },
    )
    .unwrap();
    assert_eq!((ids(&r), r.hits[0].duplicates), (vec![1], 1));

    // Opt-out: every stored item, the query's copy included.
    let all = search(
        snap,
        &q,
        &Request {
            duplicates: Duplicates::All,
            ..req(10)
        },
    )
    .unwrap();
    assert_eq!(ids(&all), [1, 2, 3, 4, 6, 7, 8, 9, 10, 5]);
    assert!(all
        .hits
        .iter()
        .all(|h| h.also.is_empty() && h.duplicates == 0));
    assert_eq!(all.query_duplicates, 0);
}

#[test]
fn grouped_searches_collapse_copies_before_grouping() {
    let snap = index();
    let q = Query::item(snap, 0).unwrap();
    let r = search(
        snap,
        &q,
        &Request {
            group_by: Some(GroupBy::Patient),
            ..req(3)
        },
    )
    .unwrap();
    let groups = r.groups.unwrap();
    // Rows are patients i % 3. Copies 2 (p2) and 3 (p0) of row 1 are dropped before
    // grouping, so p2 is first seen at 8, p0 at 6: p1 (1, 4, 7, 10), p0 (6, 9), p2 (8).
    assert_eq!(ids_of(&groups), [1, 6, 8]);
    assert_eq!(groups[0].best.also.len(), 2);
    assert_eq!(
        groups.iter().map(|g| g.matched).collect::<Vec<_>>(),
        [4, 2, 1]
    );
}

fn ids_of(groups: &[simcase_query::Group]) -> Vec<u64> {
    groups.iter().map(|g| g.best.id).collect()
}

#[test]
fn hits_carry_their_slice_frame_and_volume() {
    let snap = index();
    let q = Query::item(snap, 0).unwrap();
    let r = search(snap, &q, &req(10)).unwrap();
    let hit = |id: u64| r.hits.iter().find(|h| h.id == id).unwrap();
    let s = hit(8);
    assert_eq!((s.slice, s.slices, s.frame), (Some(10), Some(30), None));
    assert_eq!(s.volume.as_deref(), Some("0123456789abcdef"));
    assert_eq!(s.place().as_deref(), Some("slice 10/30 axial"));
    let f = hit(10);
    assert_eq!((f.frame, f.frames, f.slice), (Some(2), Some(5), None));
    assert_eq!(f.place().as_deref(), Some("frame 2/5"));
    assert_eq!(hit(4).place(), None);
    let j = serde_json::to_value(s).unwrap();
    assert_eq!(
        (j["slice"].clone(), j["axis"].clone()),
        (10.into(), "axial".into())
    );
    let j = serde_json::to_value(hit(4)).unwrap();
    for key in ["slice", "frame", "volume", "also", "duplicates"] {
        assert!(j.get(key).is_none(), "{key} in {j}");
    }
}

#[test]
fn an_empty_filtered_search_says_why() {
    let snap = index();
    let q = Query::item(snap, 0).unwrap();
    let why = |pairs: &[(&str, &str)]| {
        let mut f = Filters::default();
        for (k, v) in pairs {
            f.add(k, v).unwrap();
        }
        let r = search(
            snap,
            &q,
            &Request {
                filters: f,
                ..req(5)
            },
        )
        .unwrap();
        assert!(r.hits.is_empty() || r.empty_reason.is_none());
        r.empty_reason
    };
    assert_eq!(
        why(&[("modality", "US")]).as_deref(),
        Some("no item has modality=US; modality values in this index: MR (6), CT (4), XA (1)")
    );
    assert_eq!(
        why(&[("modality", "US"), ("modality", "DX")]).as_deref(),
        Some("no item has modality=US|DX; modality values in this index: MR (6), CT (4), XA (1)")
    );
    assert_eq!(
        why(&[("split", "train")]).as_deref(),
        Some("no item has a split value (filter split=train)")
    );
    assert_eq!(
        why(&[("date_from", "2019-01-01")]).as_deref(),
        Some("no item has a study date (filter 2019-01-01..)")
    );
    assert_eq!(
        why(&[("modality", "XA"), ("format", "nifti")]).as_deref(),
        Some("no item passes all the filters together (each one alone matches some items)")
    );
    // Only the query (row 0, pixels A) and its copy (row 5) are MR with hash A: nothing else.
    assert_eq!(
        why(&[("meta.pixel_hash", "A")]).as_deref(),
        Some("only the query itself (or its copies) passes the filters")
    );
    assert_eq!(why(&[("modality", "xa")]), None);
    assert_eq!(why(&[]), None);
}
