//! `simcase bench open --rows N`: what opening an index of millions of rows costs in time and
//! resident memory, and what the metadata side of a search (filters, grouping, a page's items,
//! `/api/stats`' counts) costs at that size. The index is synthetic and realistic in its
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
    let mut conn = rusqlite::Connection::open(o.dir.join(simcase_index::store::DB))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
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
        for row in 0..o.rows {
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
            let extra = serde_json::json!({
                "pixel_hash": format!("{:032x}", (pixel as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                "study_date": format!("{year:04}{month:02}{day:02}"),
                "view": view,
                "site": format!("site-{}", patient % 12),
            });
            v.push(Text(extra.to_string()));
            ins.execute(rusqlite::params_from_iter(v))?;
        }
    }
    tx.commit()?;
    // As a long-lived index is: its rows in the database file, not in the write-ahead log.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(o.dir.join(simcase_index::store::VECTORS))?;
    f.set_len((o.rows * o.dim * 4) as u64)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Measured figures, in seconds and bytes.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Rows.
    pub rows: usize,
    /// Seconds to write the synthetic index (0 when it was there).
    pub generate_s: f64,
    /// `Snapshot::open`.
    pub open_s: f64,
    /// Resident memory added by the open (VmRSS after − before).
    pub rss_added: u64,
    /// Peak resident memory of the process during the open (VmHWM).
    pub hwm: u64,
    /// The snapshot's own count of its in-memory metadata.
    pub heap: u64,
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
        rep.generate_s = generate(o)?;
    }
    crate::rss::reset_peak(None);
    let before = rss().0;
    let t = Instant::now();
    let snap = Snapshot::open(&o.dir)?;
    rep.open_s = t.elapsed().as_secs_f64();
    let (now, hwm) = rss();
    rep.rss_added = now.saturating_sub(before);
    rep.hwm = hwm;
    rep.heap = snap.heap_bytes() as u64;
    ensure!(snap.len() == o.rows, "{} rows, not {}", snap.len(), o.rows);
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

    let before = rss().0;
    let t = Instant::now();
    let w = Writer::open(&o.dir, "bench-synthetic", o.dim)?;
    let h = w.hashes()?;
    rep.hashes_s = t.elapsed().as_secs_f64();
    rep.hashes_rss = rss().0.saturating_sub(before);
    ensure!(h.len() == o.rows, "{} hashes for {} rows", h.len(), o.rows);
    Ok(rep)
}

/// The report as a table.
pub fn print(r: &Report) {
    let mib = |b: u64| crate::rss::mib(b);
    println!("rows                       {}", r.rows);
    if r.generate_s > 0.0 {
        println!("generate (bulk SQLite)     {:.1} s", r.generate_s);
    }
    println!("Snapshot::open             {:.2} s", r.open_s);
    println!(
        "  RSS added / peak         {:.0} MiB / {:.0} MiB",
        mib(r.rss_added),
        mib(r.hwm)
    );
    println!("  metadata heap            {:.0} MiB", mib(r.heap));
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
