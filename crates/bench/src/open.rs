//! `simcase bench open --rows N`: what opening an index of millions of rows costs in time and
//! resident memory: the first open (no metadata cache: every row read from SQLite, then
//! `columns.cache` written), the next one (from the cache), and one after rows were appended
//! (the cache plus the new rows: a server's snapshot swap during ingest); and what the
//! metadata side of a search (filters, grouping, a page's items, `/api/stats`' counts) costs
//! at that size. The index is synthetic and realistic in its
//! metadata (a few dozen labels, patients with studies and series, UIDs, paths, study dates,
//! two manifest columns); its 384-d vectors file is sparse (`set_len`), since only metadata is
//! measured, and vector search is timed elsewhere (`bench search`, `bench scale`).
//!
//! The rows are written by one bulk SQLite transaction here, not by `Writer::add`, which also
//! writes and fsyncs the vectors (15 GB at 10M × 384) and commits per batch; the schema and
//! settings are the real writer's (it creates the index first), and the rows are the ones it
//! would write (same columns, `extra` as JSON).

use anyhow::{ensure, Context, Result};
use simcase_index::{Column, Snapshot, Writer};
use simcase_query::{Field, Filters, GroupBy};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Rows of the synthetic index.
    pub rows: usize,
    /// Vector dimension (the vectors file is sparse).
    pub dim: usize,
    /// Where the index is kept (made when missing or of another size).
    pub dir: PathBuf,
    /// Seed of the generator.
    pub seed: u64,
}

const MODALITIES: [&str; 5] = ["CT", "MR", "US", "XR", "CR"];
const ANATOMY: [&str; 8] = [
    "chest", "brain", "abdomen", "breast", "knee", "spine", "pelvis", "hand",
];
const PATHOLOGY: [&str; 6] = [
    "normal",
    "benign",
    "malignant",
    "fracture",
    "nodule",
    "other",
];
const SOURCES: [&str; 4] = ["archive-a", "archive-b", "busi", "chexpert"];

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Write the synthetic index of `o.rows` rows into `o.dir` (replacing what is there).
pub fn generate(o: &Opts) -> Result<f64> {
    let t = Instant::now();
    if o.dir.exists() {
        std::fs::remove_dir_all(&o.dir).with_context(|| format!("removing {}", o.dir.display()))?;
    }
    drop(Writer::open(&o.dir, "bench-synthetic", o.dim)?);
    append(o, 0, o.rows)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Rows `from..to` of the synthetic index (the generator is seeded per row, so that rows
/// appended later continue the same archive).
fn append(o: &Opts, from: usize, to: usize) -> Result<()> {
    let mut conn = rusqlite::Connection::open(o.dir.join(simcase_index::store::DB))?;
    // A bulk load: no journal (a write-ahead log would hold a copy of the whole database
    // until the checkpoint: twice the disk at 10M rows), no syncs, and a page cache large
    // enough for the random inserts into the unique `hash` index. A run killed here leaves a
    // database of the wrong size or unreadable, which the next run replaces.
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -(1i64 << 20))?;
    let cols: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    let n = 5 + cols.len();
    let params: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO items(row, path, hash, format, {}, extra) VALUES ({})",
        cols.join(", "),
        params.join(", ")
    );
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare(&sql)?;
        let mut rng = Rng(o.seed);
        // Patients hold ~40 images: 2 studies of 2–3 series each.
        let (mut patient, mut study, mut series, mut left) = (0usize, 0usize, 0usize, 0usize);
        let mut class = (0, 0, 0);
        if from > 0 {
            // Appended rows: patients of their own, numbered past the first rows'.
            rng = Rng(o.seed ^ from as u64);
            (patient, study, series) = (from, from, from);
        }
        for row in from..to {
            if left == 0 {
                patient += 1;
                left = 20 + rng.below(40);
                class = (rng.below(5), rng.below(8), rng.below(6));
            }
            if left % 20 == 0 || row == 0 {
                study += 1;
            }
            if left % 7 == 0 || row == 0 {
                series += 1;
            }
            left -= 1;
            let (m, a, p) = class;
            let mut v: Vec<rusqlite::types::Value> = Vec::with_capacity(n);
            use rusqlite::types::Value::{Integer, Text};
            v.push(Integer(row as i64));
            v.push(Text(format!(
                "/archive/{}/{:08}/{:06}/{:08}.dcm",
                SOURCES[patient % 4],
                patient,
                study,
                row
            )));
            v.push(Text(format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rng.next(),
                rng.next(),
                rng.next(),
                row
            )));
            v.push(Text(if m == 2 { "png" } else { "dicom" }.into()));
            for c in Column::ALL {
                v.push(match c {
                    Column::Modality => Text(MODALITIES[m].into()),
                    Column::Anatomy => Text(ANATOMY[a].into()),
                    Column::Pathology => Text(PATHOLOGY[p].into()),
                    Column::Label => {
                        Text(format!("{}/{}/{}", MODALITIES[m], ANATOMY[a], PATHOLOGY[p]))
                    }
                    Column::Split => Text(["train", "val", "test"][patient % 10 / 4].into()),
                    Column::Source => Text(SOURCES[patient % 4].into()),
                    Column::PatientKey => Text(format!(
                        "{:016x}",
                        (patient as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    )),
                    Column::StudyUid => Text(format!("1.2.840.113619.2.55.3.{study}")),
                    Column::SeriesUid => Text(format!("1.2.840.113619.2.55.3.{study}.{series}")),
                    Column::SopUid => Text(format!("1.2.840.113619.2.55.3.{study}.{series}.{row}")),
                    Column::BodyPart => Text(ANATOMY[a].to_uppercase()),
                });
            }
            // A copy of the previous image now and then (its pixel hash repeats).
            let pixel = if row % 50 == 1 { row - 1 } else { row };
            let day = 1 + (study * 7) % 28;
            let month = 1 + (study / 4) % 12;
            let year = 2005 + (study % 20);
            let view = ["AP", "PA", "LAT", "OBL"][row % 4];
            // What serde_json writes for these keys (sorted) and plain values.
            let extra = format!(
                r#"{{"pixel_hash":"{:032x}","site":"site-{}","study_date":"{year:04}{month:02}{day:02}","view":"{view}"}}"#,
                (pixel as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                patient % 12,
            );
            v.push(Text(extra));
            ins.execute(rusqlite::params_from_iter(v))?;
        }
    }
    tx.commit()?;
    // Back to the journal mode the index is opened in.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(o.dir.join(simcase_index::store::VECTORS))?;
    f.set_len((to * o.dim * 4) as u64)?;
    Ok(())
}

/// One `Snapshot::open`, in seconds and bytes.
#[derive(Debug, Default, serde::Serialize)]
pub struct OpenFigures {
    /// Wall time.
    pub s: f64,
    /// CPU time of the process (user + system), which a loaded machine does not inflate.
    pub cpu_s: f64,
    /// Resident memory added by the open and kept (VmRSS after − before; pages of the
    /// mapped cache file that were touched included).
    pub rss_added: u64,
    /// Peak resident memory of the process during the open (VmHWM).
    pub hwm: u64,
    /// The snapshot's own count of its in-memory metadata (not what is mapped).
    pub heap: u64,
    /// Rows from the cache file / read from SQLite.
    pub cached_rows: usize,
    /// Rows read from SQLite.
    pub read_rows: usize,
}

/// CPU seconds (user + system) of this process so far, from `/proc/self/stat` (0 where
/// there is none); ticks of 10 ms.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn timed_open(dir: &Path) -> Result<(Snapshot, OpenFigures)> {
    crate::rss::reset_peak(None);
    let before = rss().0;
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let snap = Snapshot::open(dir)?;
    let s = t.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu;
    let (now, hwm) = rss();
    let m = snap.metadata_open();
    let f = OpenFigures {
        s,
        cpu_s,
        rss_added: now.saturating_sub(before),
        hwm,
        heap: snap.heap_bytes() as u64,
        cached_rows: m.cached_rows,
        read_rows: m.read_rows,
    };
    Ok((snap, f))
}

/// Measured figures, in seconds and bytes.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Rows.
    pub rows: usize,
    /// Seconds to write the synthetic index (0 when it was there).
    pub generate_s: f64,
    /// CPU seconds of that.
    pub generate_cpu_s: f64,
    /// The first open: no metadata cache, every row read from SQLite, the cache written.
    pub cold: OpenFigures,
    /// Of which writing the cache.
    pub cache_write_s: f64,
    /// Bytes of the cache file.
    pub cache_bytes: u64,
    /// The next open, from the cache.
    pub warm: OpenFigures,
    /// Rows appended (to the index and behind the cache) before the last open.
    pub appended: usize,
    /// An open after those rows were appended: the cache plus the new rows from SQLite, as a
    /// server's snapshot swap during ingest.
    pub extended: OpenFigures,
    /// `Snapshot::committed_version` (what a server polls).
    pub version_s: f64,
    /// A filter (`modality=CT`, `meta.view=AP`, a date range): compile + count of candidates.
    pub filter_s: f64,
    /// Candidates of that filter.
    pub filter_candidates: usize,
    /// Group keys of a `--group-by patient` pool (the 300 best of the filtered rows) and the
    /// page's 10 items read from SQLite.
    pub group_page_s: f64,
    /// `/api/stats`' counts of every filter column.
    pub stats_s: f64,
    /// The writer's `hashes()` (every content hash, for skipping known files): time.
    pub hashes_s: f64,
    /// Resident memory it added.
    pub hashes_rss: u64,
}

fn rss() -> (u64, u64) {
    crate::rss::of(None).unwrap_or_default()
}

fn index_rows(dir: &Path) -> Option<usize> {
    Some(Snapshot::committed_version(dir).ok()?.rows)
}

/// Make the index when needed, then measure.
pub fn run(o: &Opts) -> Result<Report> {
    let mut rep = Report {
        rows: o.rows,
        ..Default::default()
    };
    if index_rows(&o.dir) != Some(o.rows) {
        let cpu = cpu_seconds();
        rep.generate_s = generate(o)?;
        rep.generate_cpu_s = cpu_seconds() - cpu;
    }
    // The first open finds no cache (one left by an earlier run is removed).
    let cache = o.dir.join(simcase_index::store::METADATA_CACHE);
    if cache.exists() {
        std::fs::remove_file(&cache).with_context(|| format!("removing {}", cache.display()))?;
    }
    let (snap, cold) = timed_open(&o.dir)?;
    let m = snap.metadata_open();
    (rep.cache_write_s, rep.cache_bytes) = (m.write_time.as_secs_f64(), m.wrote_cache);
    rep.cold = cold;
    drop(snap);
    let (snap, warm) = timed_open(&o.dir)?;
    rep.warm = warm;
    ensure!(snap.len() == o.rows, "{} rows, not {}", snap.len(), o.rows);
    ensure!(
        rep.warm.cached_rows == o.rows,
        "the second open did not use the cache ({:?})",
        snap.metadata_open()
    );
    let t = Instant::now();
    Snapshot::committed_version(&o.dir)?;
    rep.version_s = t.elapsed().as_secs_f64();

    let mut f = Filters::default();
    f.fields
        .insert(Field::Column(Column::Modality), vec!["ct".into()]);
    f.fields
        .insert(Field::Extra("view".into()), vec!["AP".into()]);
    f.date_from = simcase_query::StudyDate::parse("2010-01-01");
    f.date_to = simcase_query::StudyDate::parse("2014-12-31");
    let t = Instant::now();
    let c = f.compile(&snap)?;
    let kept: Vec<u64> = (0..o.rows as u64).filter(|&r| c.keeps(r)).collect();
    rep.filter_s = t.elapsed().as_secs_f64();
    rep.filter_candidates = kept.len();

    let t = Instant::now();
    let codes = GroupBy::Patient.key_codes(&snap)?;
    let mut groups: Vec<&str> = Vec::new();
    let step = (kept.len() / 300).max(1);
    for &r in kept.iter().step_by(step).take(300) {
        let k = codes.get(r).unwrap_or_default();
        if !groups.contains(&k) {
            groups.push(k);
        }
    }
    for &r in kept.iter().step_by(step).take(10) {
        ensure!(snap.item(r)?.is_some(), "item {r} missing");
    }
    rep.group_page_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut distinct = 0;
    for col in Column::FILTERS {
        if let Some(codes) = snap.column(col) {
            distinct += codes.counts(snap.len()).iter().filter(|&&n| n > 0).count();
        }
    }
    std::hint::black_box(distinct);
    rep.stats_s = t.elapsed().as_secs_f64();
    drop(snap);

    // Rows appended behind the cache (fewer than would make an open rewrite it).
    rep.appended = (o.rows / 10).clamp(1, 20_000);
    append(o, o.rows, o.rows + rep.appended)?;
    let (snap, extended) = timed_open(&o.dir)?;
    rep.extended = extended;
    ensure!(
        snap.len() == o.rows + rep.appended,
        "{} rows after appending",
        snap.len()
    );
    drop(snap);
    // Back to the size the index is kept at (and the cache that fits it).
    remove_appended(o)?;

    let before = rss().0;
    let t = Instant::now();
    let w = Writer::open(&o.dir, "bench-synthetic", o.dim)?;
    let h = w.hashes()?;
    rep.hashes_s = t.elapsed().as_secs_f64();
    rep.hashes_rss = rss().0.saturating_sub(before);
    ensure!(h.len() == o.rows, "{} hashes for {} rows", h.len(), o.rows);
    Ok(rep)
}

/// Delete rows past `o.rows` (what [`run`] appended), so that the next run finds the index
/// at its size.
fn remove_appended(o: &Opts) -> Result<()> {
    let conn = rusqlite::Connection::open(o.dir.join(simcase_index::store::DB))?;
    conn.execute("DELETE FROM items WHERE row >= ?1", [o.rows as i64])?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(o.dir.join(simcase_index::store::VECTORS))?;
    f.set_len((o.rows * o.dim * 4) as u64)?;
    Ok(())
}

/// The report as a table.
pub fn print(r: &Report) {
    let mib = |b: u64| crate::rss::mib(b);
    println!("rows                       {}", r.rows);
    if r.generate_s > 0.0 {
        println!(
            "generate (bulk SQLite)     {:.1} s ({:.0} rows/s), CPU {:.1} s",
            r.generate_s,
            r.rows as f64 / r.generate_s,
            r.generate_cpu_s
        );
    }
    let open = |name: &str, f: &OpenFigures| {
        println!(
            "{name:<27}{:.2} s, CPU {:.2} s ({} rows cached, {} read from SQLite)",
            f.s, f.cpu_s, f.cached_rows, f.read_rows
        );
        println!(
            "  RSS added / peak         {:.0} MiB / {:.0} MiB; metadata heap {:.0} MiB",
            mib(f.rss_added),
            mib(f.hwm),
            mib(f.heap)
        );
    };
    open("open, no cache (first)", &r.cold);
    println!(
        "  of which cache write     {:.2} s ({:.0} MiB)",
        r.cache_write_s,
        mib(r.cache_bytes)
    );
    open("open, cache (warm)", &r.warm);
    open(&format!("open, cache + {} new", r.appended), &r.extended);
    println!("committed_version          {:.2} ms", r.version_s * 1e3);
    println!(
        "filter pass                {:.1} ms ({} candidates)",
        r.filter_s * 1e3,
        r.filter_candidates
    );
    println!("group-by patient + page    {:.2} ms", r.group_page_s * 1e3);
    println!("stats counts               {:.1} ms", r.stats_s * 1e3);
    println!(
        "writer hashes()            {:.2} s, {:.0} MiB",
        r.hashes_s,
        mib(r.hashes_rss)
    );
}
