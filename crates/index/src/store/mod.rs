//! An index folder: `vectors.f32` (row-major f32, append-only, memory-mappable) plus
//! `index.sqlite` (metadata, errors, settings).
//!
//! Crash safety comes from ordering: a batch's vectors are appended and fsynced *before* its
//! rows are committed to SQLite, and SQLite's row count is the truth. A kill between the two
//! leaves a tail of uncommitted vectors that the next writer truncates and readers never see.
//!
//! Labels can change after a row is committed (re-running a manifest), so a [`Version`] is
//! the row count *and* a metadata generation, bumped in the same transaction as each update:
//! what a server compares to decide that its snapshot is stale.

pub mod ann;
mod cache;
mod columns;
pub mod durable;
mod errors;
pub mod merge;
mod reader;
mod settings;
mod table;
mod writer;

pub use ann::AnnSettings;
pub use cache::FILE as METADATA_CACHE;
pub use columns::{part_keys, Column, Disagreement, Item, ItemMeta};
pub use errors::{failure_counts, failures, Failure};
pub use reader::{MetadataOpen, Reader, Rows, Snapshot};
pub use settings::{Settings, SALT_ENV};
pub use table::{Codes, MAX_EXTRA_COLUMNS, MAX_EXTRA_VALUES};
pub use writer::{LabelOutcome, LabelUpdate, Writer};

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

/// The vectors file of an index folder.
pub const VECTORS: &str = "vectors.f32";
/// The SQLite database of an index folder.
pub const DB: &str = "index.sqlite";

fn connect(dir: &Path) -> Result<Connection> {
    let conn = Connection::open(dir.join(DB))
        .with_context(|| format!("opening {}", dir.join(DB).display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A reader's connection: [`connect`]'s, which shares the writer's write-ahead log (readers
/// write its index, `-shm`, too), or, in a folder this process cannot write (its
/// permissions, a read-only mount, an archived copy), a read-only one. Read-only, the
/// database is read over the log when one is there or a writer holds the folder's lock (its
/// owner may be indexing it), and as immutable otherwise (SQLite cannot read a WAL database
/// read-only without its `-shm` file). A writer that starts while such a reader is open can
/// change pages under it: a one-shot read does not notice, a long-lived one (`serve`) should
/// run where it can write, or on a copy.
fn connect_reader(dir: &Path) -> Result<Connection> {
    match connect(dir) {
        Err(e) if cannot_write(&e) => open_read_only(dir).with_context(|| {
            format!(
                "{}: the folder cannot be written ({e:#}), and opening it read-only failed",
                dir.display()
            )
        }),
        other => other,
    }
}

/// Whether `e` is SQLite refusing to write or create a file.
fn cannot_write(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, ReadOnly};
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if matches!(f.code, ReadOnly | CannotOpen)
        )
    })
}

/// `dir`'s database, read-only (see [`connect_reader`]).
fn open_read_only(dir: &Path) -> Result<Connection> {
    use rusqlite::OpenFlags;
    let db = dir.join(DB);
    let log = dir.join(format!("{DB}-wal"));
    let writing = std::fs::File::open(dir.join(writer::LOCK))
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
    let over_log = writing || log.exists() || dir.join(format!("{DB}-shm")).exists();
    // A URI's path escapes what would end it or start an escape; an absolute path gets an
    // empty authority (`file:///…`), so that one starting `//` is not read as a host.
    let mut uri = String::from(if db.is_absolute() { "file://" } else { "file:" });
    for c in db.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str(if over_log { "?mode=ro" } else { "?immutable=1" });
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // Opening is lazy: read once, so that a log that cannot be read fails here.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .with_context(|| {
        if over_log {
            format!("{}: reading it over its write-ahead log", db.display())
        } else {
            format!("reading {}", db.display())
        }
    })?;
    Ok(conn)
}

/// Committed rows: rows are `0..n` (the writer appends at the count, and a snapshot checks
/// it), so the last row id says it through the primary key, where `COUNT(*)` would scan.
fn item_count(conn: &Connection) -> Result<usize> {
    let n: i64 = conn.query_row("SELECT COALESCE(MAX(row) + 1, 0) FROM items", [], |r| {
        r.get(0)
    })?;
    Ok(n as usize)
}

/// What an index holds at one moment, as far as a reader's cache is concerned: committed rows,
/// and how many times stored metadata has been rewritten since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Version {
    /// Committed rows.
    pub rows: usize,
    /// Metadata generation: bumped by every commit that rewrites stored labels.
    pub generation: u64,
}

/// The `meta` key of the metadata generation (absent until the first label update).
const GENERATION: &str = "generation";

fn generation(conn: &Connection) -> Result<u64> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [GENERATION], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Bump the generation inside the caller's transaction.
fn bump_generation(conn: &Connection) -> Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [GENERATION],
    )?;
    Ok(())
}

/// The version of the index in `conn`, read in one transaction so that rows and generation
/// belong to the same moment.
fn version(conn: &mut Connection) -> Result<Version> {
    let tx = conn.transaction()?;
    let v = Version {
        generation: generation(&tx)?,
        rows: item_count(&tx)?,
    };
    tx.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::PathBuf;

    fn meta(path: &str, hash: &str) -> ItemMeta {
        ItemMeta {
            path: path.into(),
            hash: hash.into(),
            format: "png".into(),
            label: Some("CT/chest/normal".into()),
            ..Default::default()
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("simcase-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A full disk names the file it could not write (`/dev/full` stands in for it: every
    /// write fails with ENOSPC), and nothing is committed.
    #[test]
    fn a_full_disk_names_the_file() {
        let d = tmpdir("full");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink("/dev/full", d.join(VECTORS)).unwrap();
        let mut w = Writer::open(&d, "m", 2).unwrap();
        let e = w.add(&[(meta("a.png", "h1"), vec![1.0, 0.0])]).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "{}: appending to it: No space left on device (os error 28)",
                d.join(VECTORS).display()
            )
        );
        assert_eq!(w.len(), 0);
        drop(w);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn add_then_read_back_and_reopen() {
        let d = tmpdir("roundtrip");
        {
            let mut w = Writer::open(&d, "m", 2).unwrap();
            w.add(&[
                (meta("a.png", "h1"), vec![1.0, 0.0]),
                (meta("b.png", "h2"), vec![0.0, 1.0]),
            ])
            .unwrap();
            assert!(w.contains_hash("h1").unwrap());
            w.record_error("bad.png", "corrupt png", "corrupt png data")
                .unwrap();
        }
        let r = Reader::open(&d).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.vector(1).unwrap(), &[0.0, 1.0]);
        assert_eq!(r.item(0).unwrap().unwrap().meta.path, "a.png");
        assert_eq!(
            r.errors().unwrap(),
            vec![("bad.png".into(), "corrupt png data".into())]
        );
        assert_eq!(r.id_by_hash("h2").unwrap(), Some(1));
        let mut w = Writer::open(&d, "m", 2).unwrap();
        assert_eq!(w.len(), 2);
        w.add(&[(meta("c.png", "h3"), vec![0.6, 0.8])]).unwrap();
        drop(w);
        assert_eq!(Reader::open(&d).unwrap().vector(2).unwrap(), &[0.6, 0.8]);
        assert!(
            Writer::open(&d, "other", 2).is_err(),
            "model mismatch must be refused"
        );
    }

    #[test]
    fn uncommitted_vector_tail_is_truncated_on_open() {
        let d = tmpdir("tail");
        {
            let mut w = Writer::open(&d, "m", 2).unwrap();
            w.add(&[(meta("a.png", "h1"), vec![1.0, 0.0])]).unwrap();
        }
        // Simulate a kill after the vectors were written but before the SQLite commit.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join(VECTORS))
            .unwrap();
        f.write_all(&[0u8; 12]).unwrap();
        drop(f);
        let r = Reader::open(&d).unwrap();
        assert_eq!(r.len(), 1, "readers ignore the tail");
        let mut w = Writer::open(&d, "m", 2).unwrap();
        assert_eq!(std::fs::metadata(d.join(VECTORS)).unwrap().len(), 8);
        w.add(&[(meta("b.png", "h2"), vec![0.0, 1.0])]).unwrap();
        assert_eq!(Reader::open(&d).unwrap().vector(1).unwrap(), &[0.0, 1.0]);
    }

    #[test]
    fn duplicate_hash_rolls_back_the_whole_batch() {
        let d = tmpdir("dup");
        let mut w = Writer::open(&d, "m", 1).unwrap();
        w.add(&[(meta("a.png", "h1"), vec![1.0])]).unwrap();
        assert!(w
            .add(&[
                (meta("b.png", "h2"), vec![1.0]),
                (meta("c.png", "h1"), vec![1.0])
            ])
            .is_err());
        drop(w);
        let w = Writer::open(&d, "m", 1).unwrap();
        assert_eq!(w.len(), 1);
        assert!(!w.contains_hash("h2").unwrap());
    }

    fn labels(modality: &str, label: &str) -> ItemMeta {
        ItemMeta {
            modality: Some(modality.into()),
            label: Some(label.into()),
            split: Some("train".into()),
            ..Default::default()
        }
    }

    #[test]
    fn label_updates_reach_every_part_of_a_file_and_bump_the_version() {
        let d = tmpdir("relabel");
        let mut w = Writer::open(&d, "m", 1).unwrap();
        let bare = |path: &str, hash: &str| ItemMeta {
            path: path.into(),
            hash: hash.into(),
            format: "dicom".into(),
            ..Default::default()
        };
        w.add(&[
            (bare("/v.nii", "aa@axial#0"), vec![1.0]),
            (bare("/v.nii", "aa@axial#1"), vec![1.0]),
            (bare("/f.dcm", "ab#0"), vec![1.0]),
            (bare("/f.dcm", "ab#1"), vec![1.0]),
            (meta("/x.png", "a"), vec![1.0]),
            (bare("/y.png", "aab"), vec![1.0]),
        ])
        .unwrap();
        let snap = Snapshot::open(&d).unwrap();
        let v0 = snap.version();
        assert_eq!(
            v0,
            Version {
                rows: 6,
                generation: 0
            }
        );
        assert_eq!(Snapshot::committed_version(&d).unwrap(), v0);
        let out = w
            .update_labels(
                &[
                    LabelUpdate {
                        hash: "aa".into(),
                        labels: labels("CT", "CT/chest/normal"),
                    },
                    LabelUpdate {
                        hash: "ab".into(),
                        labels: labels("US", "US/breast/benign"),
                    },
                    LabelUpdate {
                        hash: "a".into(),
                        labels: labels("MR", "MR/brain/glioma"),
                    },
                    LabelUpdate {
                        hash: "zz".into(),
                        labels: labels("MR", "MR/brain/glioma"),
                    },
                ],
                false,
            )
            .unwrap();
        // Both slices of `aa`, both frames of `ab`, and neither `aab` nor `a`'s other
        // prefixes: only the file's own items.
        assert_eq!((out[0].items, out[0].changed), (2, 2), "{out:?}");
        assert_eq!((out[1].items, out[1].changed), (2, 2), "{out:?}");
        assert_eq!(out[1].path, "/f.dcm");
        assert!(out[0].disagreements.is_empty());
        // `a` was stored with CT/chest/normal: modality is filled, the label disagrees.
        assert_eq!((out[2].items, out[2].changed), (1, 1), "{out:?}");
        assert_eq!(
            out[2].disagreements,
            vec![Disagreement {
                field: "label".into(),
                stored: "CT/chest/normal".into(),
                manifest: "MR/brain/glioma".into()
            }]
        );
        assert_eq!(out[3], LabelOutcome::default(), "unknown content: nothing");
        let v1 = Snapshot::committed_version(&d).unwrap();
        assert_eq!(
            v1,
            Version {
                rows: 6,
                generation: 1
            }
        );
        assert_ne!(v1, v0, "a snapshot must see that labels changed");
        let snap = Snapshot::open(&d).unwrap();
        assert_eq!(snap.version(), v1);
        let m = |id: u64| snap.item(id).unwrap().unwrap().meta;
        for id in [0, 1] {
            assert_eq!(m(id).modality.as_deref(), Some("CT"));
            assert_eq!(m(id).split.as_deref(), Some("train"));
        }
        for id in [2, 3] {
            assert_eq!(m(id).label.as_deref(), Some("US/breast/benign"));
        }
        assert_eq!(m(4).label.as_deref(), Some("CT/chest/normal"), "kept");
        assert_eq!(m(4).modality.as_deref(), Some("MR"), "filled");
        assert_eq!(m(5).label, None);
        assert_eq!(snap.vector(3).unwrap(), &[1.0]);
        // Nothing new: no generation bump. Relabel: the manifest wins.
        let same = [LabelUpdate {
            hash: "aa".into(),
            labels: labels("CT", "CT/chest/normal"),
        }];
        assert_eq!(w.update_labels(&same, false).unwrap()[0].changed, 0);
        assert_eq!(Snapshot::committed_version(&d).unwrap(), v1);
        let again = [LabelUpdate {
            hash: "a".into(),
            labels: labels("MR", "MR/brain/glioma"),
        }];
        let out = w.update_labels(&again, true).unwrap();
        assert_eq!((out[0].changed, out[0].disagreements.len()), (1, 1));
        let r = Reader::open(&d).unwrap();
        assert_eq!(
            r.item(4).unwrap().unwrap().meta.label.as_deref(),
            Some("MR/brain/glioma")
        );
        assert_eq!(r.version().generation, 2);
    }

    /// Every statement the store issues with a `WHERE` on `items` (or `errors`, `meta`): its
    /// plan, as SQLite reports it for an index the writer made.
    #[test]
    fn every_lookup_uses_an_index_not_a_table_scan() {
        let d = tmpdir("plans");
        let mut w = Writer::open(&d, "m", 1).unwrap();
        w.add(&[(meta("a.png", "h1"), vec![1.0])]).unwrap();
        drop(w);
        let conn = connect(&d).unwrap();
        let statements: Vec<String> = vec![
            "SELECT COALESCE(MAX(row) + 1, 0) FROM items".into(),
            "SELECT value FROM meta WHERE key = ?1".into(),
            reader::item_sql(),
            reader::items_sql(),
            reader::ID_BY_HASH_SQL.into(),
            reader::table_sql(),
            reader::EXTRA_SQL.into(),
            writer::CONTAINS_HASH_SQL.into(),
            writer::file_items_sql(),
            writer::DELETE_ERROR_SQL.into(),
            columns::update_sql(),
            "SELECT 1 FROM errors WHERE path = ?1".into(),
        ];
        for sql in &statements {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Value::Null, st.parameter_count());
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(!plan.is_empty(), "{sql}: no plan");
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN"),
                    "{sql}: full scan in its plan {plan:?}"
                );
            }
            assert!(
                plan.iter().any(|p| p.starts_with("SEARCH")),
                "{sql}: no index search in {plan:?}"
            );
        }
        // Row counts go through the primary key too: no COUNT(*) over the table.
        assert_eq!(item_count(&conn).unwrap(), 1);
    }

    #[test]
    fn second_writer_is_refused_and_patient_keys_are_salted() {
        let d = tmpdir("lock");
        let w = Writer::open(&d, "m", 1).unwrap();
        assert!(Writer::open(&d, "m", 1).is_err());
        let k = w.settings().patient_key("PAT-001");
        assert_eq!(k.len(), 16);
        assert!(!k.contains("PAT"));
        assert_eq!(k, w.settings().patient_key("PAT-001"));
        let other = Writer::open(&tmpdir("lock2"), "m", 1).unwrap();
        assert_ne!(
            k,
            other.settings().patient_key("PAT-001"),
            "salt differs per index"
        );
    }
}
