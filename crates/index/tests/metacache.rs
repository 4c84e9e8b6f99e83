//! The persisted metadata cache (`columns.cache`) changes nothing a snapshot answers: on a
//! seeded index, every row's column, format and `extra` values and copy groups are the same
//! when the snapshot was built from SQLite, taken from the cache, or taken from the cache and
//! extended with rows appended since; a corrupted, truncated or foreign cache file is
//! rebuilt; a label update (metadata generation) invalidates it; a read-only folder opens
//! without writing one. Which path an open took is read from `Snapshot::metadata_open`.

use simcase_index::store::{MetadataOpen, METADATA_CACHE};
use simcase_index::{Column, ItemMeta, LabelUpdate, Reader, Snapshot, Writer, MAX_EXTRA_COLUMNS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simcase-metacache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Rows `from..to`: labels from small vocabularies, patients and UIDs with many values, some
/// `extra` columns (more than are coded), pixel copies of earlier rows (also across the
/// appended boundary), and `tag` values that only appended rows have.
fn rows(from: usize, to: usize, tag: &str) -> Vec<(ItemMeta, Vec<f32>)> {
    let mut rng = Rng(0x5eed + from as u64);
    let pick = |rng: &mut Rng, v: &[&str]| -> Option<String> {
        v.get(rng.below(v.len() + 1)).map(|s| s.to_string())
    };
    (from..to)
        .map(|i| {
            let mut m = ItemMeta {
                path: format!("/a/{i}.dcm"),
                hash: format!("h{i}"),
                format: ["dicom", "png"][rng.below(2)].into(),
                modality: pick(&mut rng, &["CT", "MR", "US"]),
                label: pick(&mut rng, &["CT/chest/normal", "MR/brain/glioma"]),
                split: pick(&mut rng, &["train", "test"]),
                patient_key: Some(format!("p{}", i / 7)),
                study_uid: Some(format!("1.2.{}", i / 3)),
                series_uid: pick(&mut rng, &["1.2.1.1", "1.2.1.2"]),
                ..Default::default()
            };
            m.extra.insert(
                "study_date".into(),
                format!("2010{:02}{:02}", 1 + i % 12, 1 + i % 28).into(),
            );
            if let Some(v) = pick(&mut rng, &["AP", "PA", "LAT"]) {
                m.extra.insert("view".into(), v.into());
            }
            // A new dictionary value per appended row: past 255 values the codes widen.
            let sites = if tag.is_empty() { 200 } else { 400 };
            m.extra
                .insert("site".into(), format!("{tag}{}", i % sites).into());
            if i % 5 == 0 {
                for k in 0..MAX_EXTRA_COLUMNS + 2 {
                    m.extra
                        .insert(format!("k{k:02}"), format!("v{}", rng.below(3)).into());
                }
            }
            if !tag.is_empty() && i % 3 == 0 {
                m.extra.insert(format!("new_{tag}"), "x".into());
            }
            if i % 4 == 0 {
                m.set_pixel_hash(1, 1, &[(i % 97) as f32]);
            }
            (m, vec![1.0, (i % 10) as f32])
        })
        .collect()
}

/// Everything a snapshot answers about its rows' metadata, row by row.
#[derive(Debug, PartialEq)]
struct Answers {
    columns: BTreeMap<&'static str, Vec<Option<String>>>,
    dictionary_sizes: BTreeMap<String, usize>,
    extra: BTreeMap<String, Vec<Option<String>>>,
    copies: Vec<Vec<u64>>,
    extra_keys: Vec<String>,
}

fn answers(s: &Snapshot) -> Answers {
    let n = s.len() as u64;
    let all = |c: &simcase_index::Codes| (0..n).map(|r| c.get(r).map(String::from)).collect();
    let mut columns = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for c in Column::ALL {
        if let Some(codes) = s.column(c) {
            columns.insert(c.name(), all(codes));
            sizes.insert(c.name().to_string(), codes.codes());
        }
    }
    columns.insert("format", all(s.formats()));
    let mut extra = BTreeMap::new();
    for k in s.extra_keys() {
        let c = s.extra(k).unwrap();
        sizes.insert(format!("extra.{k}"), c.codes());
        extra.insert(k.clone(), all(&c));
    }
    Answers {
        columns,
        dictionary_sizes: sizes,
        extra,
        copies: (0..n).map(|r| s.copies_of(r).to_vec()).collect(),
        extra_keys: s.extra_keys().iter().cloned().collect(),
    }
}

/// The same answers straight from the items (no coding at all), for the values.
fn item_values(dir: &Path) -> BTreeMap<&'static str, Vec<Option<String>>> {
    let items = Reader::open(dir).unwrap().items().unwrap();
    let mut out = BTreeMap::new();
    for c in [Column::Modality, Column::PatientKey, Column::StudyUid] {
        out.insert(
            c.name(),
            items
                .iter()
                .map(|i| c.get(&i.meta).map(String::from))
                .collect(),
        );
    }
    out
}

fn open(dir: &Path) -> (Snapshot, MetadataOpen) {
    let s = Snapshot::open(dir).unwrap();
    let o = s.metadata_open();
    (s, o)
}

/// A snapshot built from SQLite alone (the cache moved away for the open, then put back).
fn from_sqlite(dir: &Path) -> Answers {
    let cache = dir.join(METADATA_CACHE);
    let aside = dir.join("cache.aside");
    let had = cache.exists();
    if had {
        std::fs::rename(&cache, &aside).unwrap();
    }
    let (s, o) = open(dir);
    assert_eq!(o.cached_rows, 0);
    let a = answers(&s);
    if had {
        std::fs::rename(&aside, &cache).unwrap();
    }
    a
}

#[test]
fn cache_is_reused_extended_rebuilt_and_invalidated_with_the_same_answers() {
    const N: usize = 3000;
    let dir = tmpdir("main");
    let mut w = Writer::open(&dir, "m", 2).unwrap();
    w.add(&rows(0, N, "")).unwrap();

    // First open: no cache, every row from SQLite, a cache written.
    let (s, o) = open(&dir);
    assert_eq!((o.cached_rows, o.read_rows), (0, N));
    assert!(o.wrote_cache > 0, "{o:?}");
    let len = std::fs::metadata(dir.join(METADATA_CACHE)).unwrap().len();
    assert_eq!(o.wrote_cache, len);
    let built = answers(&s);
    drop(s);
    for (k, v) in item_values(&dir) {
        assert_eq!(built.columns[k], v, "{k}");
    }
    assert!(built.copies.iter().any(|c| c.len() > 2), "copies exist");
    assert!(
        built.extra_keys.len() > MAX_EXTRA_COLUMNS,
        "some extra keys uncoded"
    );

    // Second open: everything from the cache, nothing read, nothing written.
    let (s, o) = open(&dir);
    assert_eq!((o.cached_rows, o.read_rows, o.wrote_cache), (N, 0, 0));
    assert_eq!(answers(&s), built);
    drop(s);

    // A byte flipped in the body, then the file cut short, then a foreign file: each is
    // rebuilt from SQLite (with a warning) and rewritten, with the same answers.
    let path = dir.join(METADATA_CACHE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (s, o) = open(&dir);
    assert_eq!((o.cached_rows, o.read_rows), (0, N), "corrupt: rebuilt");
    assert!(o.wrote_cache > 0);
    assert_eq!(answers(&s), built);
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let (s, o) = open(&dir);
    assert_eq!((o.cached_rows, o.read_rows), (0, N), "truncated: rebuilt");
    assert_eq!(answers(&s), built);
    drop(s);
    std::fs::write(&path, b"not a cache").unwrap();
    let (s, o) = open(&dir);
    assert_eq!(
        (o.cached_rows, o.wrote_cache),
        (0, len),
        "foreign file: rebuilt"
    );
    assert_eq!(answers(&s), built);
    drop(s);
    assert_eq!(open(&dir).1.cached_rows, N, "the rewritten cache is used");

    // Appended rows (new dictionary values past 255, a new extra key, copies of cached
    // rows' pixels): the cache's rows plus the tail read from SQLite, not rewritten for a
    // small tail; the same answers as a snapshot built from SQLite alone.
    w.add(&rows(N, N + 300, "t")).unwrap();
    let (s, o) = open(&dir);
    assert_eq!((o.cached_rows, o.read_rows, o.wrote_cache), (N, 300, 0));
    let extended = answers(&s);
    drop(s);
    let rebuilt = from_sqlite(&dir);
    assert_eq!(extended, rebuilt);
    assert!(
        extended.copies[N..]
            .iter()
            .any(|c| c.first() < Some(&(N as u64))),
        "an appended row is a copy of a cached one"
    );
    assert_eq!(extended.dictionary_sizes["extra.site"], 1 + 200 + 300);
    // A larger tail (≥ 1/8 of the cached rows) rewrites the cache, which then covers it all.
    w.add(&rows(N + 300, N + 700, "u")).unwrap();
    let (s, o) = open(&dir);
    assert_eq!((o.cached_rows, o.read_rows), (N, 700));
    assert!(o.wrote_cache > 0);
    let bigger = answers(&s);
    drop(s);
    assert_eq!(bigger, from_sqlite(&dir));
    assert_eq!(open(&dir).1.cached_rows, N + 700);

    // A label update bumps the generation: the cache is rebuilt, with the new labels.
    let out = w
        .update_labels(
            &[LabelUpdate {
                hash: "h7".into(),
                labels: ItemMeta {
                    modality: Some("XR".into()),
                    ..Default::default()
                },
            }],
            true,
        )
        .unwrap();
    assert_eq!(out[0].changed, 1);
    let (s, o) = open(&dir);
    assert_eq!(
        (o.cached_rows, o.read_rows),
        (0, N + 700),
        "generation changed"
    );
    assert!(o.wrote_cache > 0);
    assert_eq!(s.column(Column::Modality).unwrap().get(7), Some("XR"));
    drop(s);
    let (s, o) = open(&dir);
    assert_eq!(o.cached_rows, N + 700);
    assert_eq!(s.column(Column::Modality).unwrap().get(7), Some("XR"));
    drop(s);
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_read_only_folder_opens_without_writing_a_cache() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir("ro");
    let mut w = Writer::open(&dir, "m", 2).unwrap();
    w.add(&rows(0, 500, "")).unwrap();
    drop(w);
    let want = answers(&Snapshot::open(&dir).unwrap());
    std::fs::remove_file(dir.join(METADATA_CACHE)).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let got = Snapshot::open(&dir).map(|s| (s.metadata_open(), answers(&s)));
    let exists = dir.join(METADATA_CACHE).exists();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    let (o, a) = got.unwrap();
    assert_eq!((o.cached_rows, o.read_rows, o.wrote_cache), (0, 500, 0));
    assert!(!exists, "nothing written in a read-only folder");
    assert_eq!(a, want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_index_writes_no_cache() {
    let dir = tmpdir("empty");
    drop(Writer::open(&dir, "m", 2).unwrap());
    let (s, o) = open(&dir);
    assert_eq!(s.len(), 0);
    assert_eq!((o.cached_rows, o.read_rows, o.wrote_cache), (0, 0, 0));
    assert!(!dir.join(METADATA_CACHE).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cache_copied_from_another_index_is_not_used() {
    let (a, b) = (tmpdir("idA"), tmpdir("idB"));
    for d in [&a, &b] {
        let mut w = Writer::open(d, "m", 2).unwrap();
        w.add(&rows(0, 400, "")).unwrap();
    }
    let want = answers(&Snapshot::open(&a).unwrap());
    assert!(Snapshot::open(&b).unwrap().metadata_open().wrote_cache > 0);
    // Same rows, same generation, same size: only the index's identity tells them apart.
    std::fs::copy(b.join(METADATA_CACHE), a.join(METADATA_CACHE)).unwrap();
    let (s, o) = open(&a);
    assert_eq!((o.cached_rows, o.read_rows), (0, 400), "rebuilt");
    assert!(o.wrote_cache > 0);
    assert_eq!(answers(&s), want);
    assert_eq!(open(&a).1.cached_rows, 400);
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
