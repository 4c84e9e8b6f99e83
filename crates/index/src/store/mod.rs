//! An index folder: `vectors.f32` (row-major f32, append-only, memory-mappable) plus
//! `index.sqlite` (metadata, errors, settings).
//!
//! Crash safety comes from ordering: a batch's vectors are appended and fsynced *before* its
//! rows are committed to SQLite, and SQLite's row count is the truth. A kill between the two
//! leaves a tail of uncommitted vectors that the next writer truncates and readers never see.

mod columns;
pub mod durable;
mod errors;
mod reader;
mod settings;
mod writer;

pub use columns::{part_keys, Column, Item, ItemMeta};
pub use errors::{failure_counts, failures, Failure};
pub use reader::{Reader, Rows, Snapshot};
pub use settings::Settings;
pub use writer::Writer;

use anyhow::{Context, Result};
use rusqlite::Connection;
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

fn item_count(conn: &Connection) -> Result<usize> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
    Ok(n as usize)
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
