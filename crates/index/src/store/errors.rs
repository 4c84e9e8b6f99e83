//! The `errors` table: one row per file that could not be indexed (its path, a short `kind`
//! that groups failures by cause, the one-line reason, and when), so that no failure is lost
//! between a run's log and the next run. A file's row goes when it indexes (or is found
//! already indexed) later. Indexes written before `kind` existed gain the column on their next
//! writer open; readers of such indexes see those rows with a kind derived from the reason.

use super::{connect_reader, DB};
use anyhow::{ensure, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::Path;

/// One file that could not be indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The file (absolute where it could be resolved).
    pub path: String,
    /// A short class of the reason, for grouping (`not an image`, `unsupported transfer
    /// syntax 1.2.840.10008.1.2.4.100`, …); never holds a path.
    pub kind: String,
    /// The one-line reason.
    pub reason: String,
    /// When it was recorded (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub at: String,
}

/// Create the table, or add `kind` to one from an older index.
pub(super) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS errors(
            path TEXT PRIMARY KEY, reason TEXT NOT NULL,
            at TEXT NOT NULL DEFAULT (datetime('now')), kind TEXT);",
    )?;
    if !has_kind(conn)? {
        conn.execute_batch("ALTER TABLE errors ADD COLUMN kind TEXT;")?;
    }
    Ok(())
}

fn has_kind(conn: &Connection) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('errors') WHERE name = 'kind'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Remember a failure (replacing an older one for the same path).
pub(super) fn record(conn: &Connection, path: &str, kind: &str, reason: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO errors(path, reason, kind) VALUES (?1, ?2, ?3)
         ON CONFLICT(path) DO UPDATE SET reason = excluded.reason, kind = excluded.kind,
            at = datetime('now')",
        params![path, reason, kind],
    )?;
    Ok(())
}

/// Forget a path's failure (it indexed, or its content is already in the index).
pub(super) fn clear(conn: &Connection, path: &str) -> Result<()> {
    // Looked up first: a re-run meets every known file, and a write commits (fsyncs) even
    // when it deletes nothing.
    let has: Option<i64> = conn
        .query_row("SELECT 1 FROM errors WHERE path = ?1", [path], |r| r.get(0))
        .optional()?;
    if has.is_some() {
        conn.execute("DELETE FROM errors WHERE path = ?1", [path])?;
    }
    Ok(())
}

/// Forget the failures of one kind at `root` and below it (a walk that reads `root` again
/// records again what still fails there).
pub(super) fn clear_under(conn: &Connection, kind: &str, root: &str) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM errors WHERE kind = ?1
            AND (path = ?2 OR substr(path, 1, length(?2) + 1) = ?2 || '/')",
        params![kind, root.trim_end_matches('/')],
    )?)
}

/// A kind for a row stored without one (an index from before `kind`): the reason up to its
/// first `:` (`corrupt png data`, `DICOM`, …), at most 60 characters.
fn kind_from_reason(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    head.chars().take(60).collect()
}

fn open(dir: &Path) -> Result<Connection> {
    ensure!(
        dir.join(DB).is_file(),
        "{} is not a simcase index (no {DB}); build one with `simcase index`",
        dir.display()
    );
    connect_reader(dir)
}

/// Every recorded failure of the index in `dir`, newest first, then by path.
pub fn failures(dir: &Path) -> Result<Vec<Failure>> {
    let conn = open(dir)?;
    let kind = if has_kind(&conn)? { "kind" } else { "NULL" };
    let mut st = conn.prepare(&format!(
        "SELECT path, {kind}, reason, at FROM errors ORDER BY at DESC, path"
    ))?;
    let rows = st
        .query_map([], |r| {
            let reason: String = r.get(2)?;
            Ok(Failure {
                path: r.get(0)?,
                kind: r
                    .get::<_, Option<String>>(1)?
                    .unwrap_or_else(|| kind_from_reason(&reason)),
                reason,
                at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How many files of the index in `dir` failed, by kind (no paths: fit for a public API).
pub fn failure_counts(dir: &Path) -> Result<BTreeMap<String, usize>> {
    let conn = open(dir)?;
    let kind = if has_kind(&conn)? { "kind" } else { "NULL" };
    let mut st = conn.prepare(&format!(
        "SELECT {kind}, reason, COUNT(*) FROM errors GROUP BY {kind}, \
         CASE WHEN {kind} IS NULL THEN reason END"
    ))?;
    let mut out = BTreeMap::new();
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, reason, n) = row?;
        let kind = kind.unwrap_or_else(|| kind_from_reason(&reason));
        *out.entry(kind).or_insert(0) += n as usize;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Writer;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("simcase-errors-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn failures_are_listed_counted_and_cleared() {
        let d = tmpdir("list");
        let w = Writer::open(&d, "m", 1).unwrap();
        w.record_error(
            "/a/x.dcm",
            "unsupported transfer syntax 1.2.3",
            "DICOM: transfer syntax 1.2.3: no decoder for its pixel data",
        )
        .unwrap();
        w.record_error(
            "/a/y.dcm",
            "unsupported transfer syntax 1.2.3",
            "DICOM: transfer syntax 1.2.3: no decoder for its pixel data",
        )
        .unwrap();
        w.record_error("/a/z.txt", "not an image", "unsupported format")
            .unwrap();
        let all = failures(&d).unwrap();
        let paths: Vec<&str> = all.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/a/x.dcm", "/a/y.dcm", "/a/z.txt"]);
        assert_eq!(all[2].kind, "not an image");
        assert_eq!(all[2].reason, "unsupported format");
        let counts = failure_counts(&d).unwrap();
        assert_eq!(counts.get("unsupported transfer syntax 1.2.3"), Some(&2));
        assert_eq!(counts.get("not an image"), Some(&1));
        // A new reason for the same path replaces the old one.
        w.record_error("/a/z.txt", "unreadable file", "cannot read file")
            .unwrap();
        let counts = failure_counts(&d).unwrap();
        assert_eq!(counts.get("not an image"), None);
        assert_eq!(counts.get("unreadable file"), Some(&1));
        w.clear_error("/a/x.dcm").unwrap();
        assert_eq!(failures(&d).unwrap().len(), 2);
        assert!(failures(&tmpdir("none")).is_err(), "not an index");
    }

    #[test]
    fn an_index_from_before_kind_opens_and_gains_the_column() {
        let d = tmpdir("old");
        std::fs::create_dir_all(&d).unwrap();
        {
            // The schema as version 1 wrote it.
            let c = Connection::open(d.join(DB)).unwrap();
            c.execute_batch(
                "CREATE TABLE errors(path TEXT PRIMARY KEY, reason TEXT NOT NULL,
                    at TEXT NOT NULL DEFAULT (datetime('now')));
                 INSERT INTO errors(path, reason) VALUES ('/old/a.png', 'corrupt png data: bad');",
            )
            .unwrap();
        }
        // Read as it is: the kind comes from the reason.
        let old = failures(&d).unwrap();
        assert_eq!(old[0].kind, "corrupt png data");
        assert_eq!(
            failure_counts(&d).unwrap().get("corrupt png data"),
            Some(&1)
        );
        // A writer migrates it, keeping the row.
        let w = Writer::open(&d, "m", 1).unwrap();
        w.record_error("/old/b.png", "corrupt png", "corrupt png data: short")
            .unwrap();
        let all = failures(&d).unwrap();
        assert_eq!(all.len(), 2);
        let a = all.iter().find(|f| f.path == "/old/a.png").unwrap();
        assert_eq!(a.kind, "corrupt png data");
        assert_eq!(a.reason, "corrupt png data: bad");
    }
}
