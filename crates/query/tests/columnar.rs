//! The snapshot's coded metadata decides filters and groups exactly as the items themselves
//! do: on a seeded index of a few thousand rows, every filter (columns, format, `meta.COLUMN`
//! coded or read from SQLite, date ranges, combinations, any letter case) keeps the same rows
//! as `Filters::keeps` over `Reader::items()`, every group key equals `GroupBy::key`, and a
//! search's candidates, hits and groups agree with that straightforward evaluation.

use simcase_index::{ItemMeta, Reader, Snapshot, Writer, MAX_EXTRA_COLUMNS};
use simcase_query::{Field, Filters, GroupBy, Query, Request, StudyDate};
use std::collections::HashSet;
use std::path::PathBuf;

const ROWS: usize = 3000;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn index() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simcase-columnar-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut w = Writer::open(&dir, "m", 4).unwrap();
    let mut rng = Rng(0x5eed);
    let pick = |rng: &mut Rng, v: &[&str]| -> Option<String> {
        let i = rng.below(v.len() + 1);
        v.get(i).map(|s| s.to_string())
    };
    let mut batch = Vec::new();
    for i in 0..ROWS {
        let mut m = ItemMeta {
            path: format!("/a/{i}.dcm"),
            hash: format!("h{i}"),
            format: ["dicom", "png", "PNG"][rng.below(3)].into(),
            modality: pick(&mut rng, &["CT", "ct", "MR", "US"]),
            anatomy: pick(&mut rng, &["chest", "brain"]),
            label: pick(
                &mut rng,
                &["CT/chest/normal", "MR/brain/glioma", "US/breast/benign"],
            ),
            split: pick(&mut rng, &["train", "test"]),
            source: pick(&mut rng, &["a", "b"]),
            body_part: pick(&mut rng, &["CHEST", "Chest"]),
            patient_key: pick(&mut rng, &["p1", "p2", "p3", "p4", "p5"]),
            study_uid: pick(&mut rng, &["1.2.1", "1.2.2", "1.2.3"]),
            series_uid: pick(&mut rng, &["1.2.1.1", "1.2.1.2"]),
            ..Default::default()
        };
        if let Some(v) = pick(&mut rng, &["AP", "pa", "LAT"]) {
            m.extra.insert("view".into(), v.into());
        }
        if rng.below(4) > 0 {
            let dates = [
                "20100105",
                "2011-06-30",
                "2012.02.29",
                " 20130101 ",
                "bad",
                "20141301",
            ];
            m.extra
                .insert("study_date".into(), dates[rng.below(dates.len())].into());
        }
        if rng.below(3) == 0 {
            m.extra
                .insert("volume".into(), format!("vol{}", rng.below(7)).into());
            m.extra.insert("slice".into(), (i as u64).into());
        }
        // A number is no string value: `meta.num=3` never matches.
        m.extra.insert("num".into(), (rng.below(5) as u64).into());
        // More columns than the snapshot codes: the last ones are read from SQLite.
        if i % 5 == 0 {
            for k in 0..MAX_EXTRA_COLUMNS + 4 {
                m.extra
                    .insert(format!("k{k:02}"), format!("v{}", rng.below(3)).into());
            }
        }
        if i % 9 == 0 && i > 0 {
            m.set_pixel_hash(1, 1, &[(i / 18) as f32]);
        }
        let v = [
            rng.below(100) as f32,
            rng.below(100) as f32,
            1.0,
            rng.below(10) as f32,
        ];
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        batch.push((m, v.iter().map(|x| x / n).collect::<Vec<f32>>()));
    }
    w.add(&batch).unwrap();
    dir
}

fn filters(fields: &[(&str, &[&str])], from: Option<&str>, to: Option<&str>) -> Filters {
    let mut f = Filters::default();
    for (name, vals) in fields {
        let field: Field = name.parse().unwrap();
        f.fields
            .insert(field, vals.iter().map(|v| v.to_string()).collect());
    }
    f.date_from = from.map(|d| StudyDate::parse(d).unwrap());
    f.date_to = to.map(|d| StudyDate::parse(d).unwrap());
    f
}

#[test]
fn coded_filters_groups_and_searches_equal_the_items() {
    let dir = index();
    let items = Reader::open(&dir).unwrap().items().unwrap();
    let snap = Snapshot::open(&dir).unwrap();
    assert_eq!(snap.len(), ROWS);
    let last = format!("meta.k{:02}", MAX_EXTRA_COLUMNS + 3);
    let cases = vec![
        filters(&[("modality", &["ct"])], None, None),
        filters(
            &[("modality", &["MR", "us"]), ("split", &["TRAIN"])],
            None,
            None,
        ),
        filters(&[("body_part", &["chest"])], None, None),
        filters(&[("format", &["png"])], None, None),
        filters(&[("meta.view", &["ap", "PA"])], None, None),
        filters(&[("meta.num", &["3"])], None, None),
        filters(&[("meta.nothing", &["x"])], None, None),
        filters(&[("meta.k00", &["v1"])], None, None),
        filters(&[(last.as_str(), &["V2"])], None, None),
        filters(&[], Some("2011-01-01"), None),
        filters(&[], None, Some("20120229")),
        filters(&[], Some("2010-01-05"), Some("2013-01-01")),
        filters(&[("label", &["ct/chest/normal"])], Some("2012-01-01"), None),
        filters(&[("modality", &["XR"])], None, None),
        filters(&[], Some("2020-01-01"), None),
    ];
    for f in &cases {
        let want: Vec<u64> = items
            .iter()
            .filter(|it| f.keeps(it))
            .map(|it| it.id)
            .collect();
        let c = f.compile(&snap).unwrap();
        let got: Vec<u64> = (0..ROWS as u64).filter(|&r| c.keeps(r)).collect();
        assert_eq!(got, want, "{f:?}");
    }
    // The seeded data exercises both outcomes.
    assert!(cases
        .iter()
        .any(|f| items.iter().filter(|it| f.keeps(it)).count() > 100));
    assert!(cases.iter().any(|f| !items.iter().any(|it| f.keeps(it))));

    for g in [
        GroupBy::Patient,
        GroupBy::Study,
        GroupBy::Series,
        GroupBy::Volume,
    ] {
        let codes = g.key_codes(&snap).unwrap();
        for it in &items {
            let key = codes
                .get(it.id)
                .map_or_else(|| format!("item:{}", it.id), str::to_string);
            assert_eq!(key, g.key(it), "{g:?} of item {}", it.id);
        }
    }

    // Whole searches: candidates, hits and groups as the items say.
    let q = Query::item(&snap, 7).unwrap();
    for f in &cases {
        for group_by in [None, Some(GroupBy::Patient), Some(GroupBy::Volume)] {
            let req = Request {
                k: 25,
                filters: f.clone(),
                group_by,
                ..Request::default()
            };
            let res = simcase_query::search(&snap, &q, &req).unwrap();
            let twins: HashSet<u64> = snap.copies_of(7).iter().copied().collect();
            let want = items
                .iter()
                .filter(|it| f.keeps(it) && it.id != 7 && !twins.contains(&it.id))
                .count();
            assert_eq!(res.candidates, want, "{f:?} {group_by:?}");
            assert_eq!(res.empty_reason.is_some(), want == 0, "{f:?}");
            for h in &res.hits {
                let it = &items[h.id as usize];
                assert!(f.keeps(it), "hit {} fails {f:?}", h.id);
                assert_eq!(h.label, it.meta.label);
                assert_eq!(h.patient_key, it.meta.patient_key);
                if let Some(g) = group_by {
                    assert_eq!(h.group.as_deref(), Some(g.key(it).as_str()));
                }
            }
            if let Some(groups) = &res.groups {
                let keys: HashSet<&str> = groups.iter().map(|g| g.key.as_str()).collect();
                assert_eq!(keys.len(), groups.len(), "groups are distinct");
            }
        }
    }
    let empty = simcase_query::search(
        &snap,
        &q,
        &Request {
            filters: filters(&[("modality", &["XR"])], None, None),
            ..Request::default()
        },
    )
    .unwrap();
    let why = empty.empty_reason.unwrap();
    let ct = items
        .iter()
        .filter(|it| it.meta.modality.as_deref() == Some("CT"))
        .count();
    assert!(why.starts_with("no item has modality=XR"), "{why}");
    assert!(why.contains(&format!("CT ({ct})")), "{why}");
    let dates = simcase_query::search(
        &snap,
        &q,
        &Request {
            filters: filters(&[], Some("2020-01-01"), None),
            ..Request::default()
        },
    )
    .unwrap();
    assert_eq!(
        dates.empty_reason.as_deref(),
        Some("no item's study date is in 2020-01-01..; study dates in this index: 2010-01-05..2013-01-01")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
