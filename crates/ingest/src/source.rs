//! What ingest reads: [`Source`]s, from a walk of files and folders or from a manifest CSV
//! (paths relative to the CSV, plus labels, split and patient id), and which of them one job
//! of a sharded ingest takes ([`Shard`]).

use anyhow::{Context, Result};
use simcase_index::{Column, ItemMeta};
use std::path::{Path, PathBuf};

/// One file to index, with whatever labels its manifest row gives.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// The file, or for a fetched source the address stored as its path (a DICOMweb URL).
    pub path: PathBuf,
    /// Labels and columns from the manifest row (empty for walked files).
    pub meta: ItemMeta,
    /// Raw patient id from the manifest; hashed before storage.
    pub patient_id: Option<String>,
    /// Where the bytes come from when `path` is not a local file (a PACS, over DICOMweb):
    /// called on a decode thread, so fetches run as decodes do, several at once.
    pub fetch: Option<Fetch>,
    /// Why a walk could not read this entry (a folder it may not list, a link to nothing, a
    /// loop of links), with its kind: it fails with that reason, as a file that does not
    /// decode does, and the run goes on.
    pub unreadable: Option<(&'static str, String)>,
}

/// A source's bytes from elsewhere than a file (see [`Source::fetch`]).
#[derive(Clone)]
pub struct Fetch(pub std::sync::Arc<dyn Fn() -> Result<Vec<u8>> + Send + Sync>);

impl std::fmt::Debug for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetch")
    }
}

/// Files that are never images; skipped quietly when walking folders.
const NOT_IMAGES: &[&str] = &[
    "csv", "md", "txt", "json", "py", "pyc", "html", "yml", "yaml", "toml",
];

/// What [`walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The files to index, in order.
    pub sources: Vec<Source>,
    /// One line per folder given that held no image file, e.g. `FOLDER: no image files
    /// found (skipped 3 non-image files: csv, txt)`.
    pub empty: Vec<String>,
}

/// Whether `dir` holds a simcase index (its `index.sqlite` beside its `vectors.f32`).
fn is_index_dir(dir: &Path) -> bool {
    dir.join(simcase_index::store::DB).is_file()
        && dir.join(simcase_index::store::VECTORS).is_file()
}

/// Every regular, non-hidden file under `paths` (links followed), sorted, except files that are never images
/// (by extension) and the folders of indexes: any folder holding an index, and `skip` (the
/// index being written), so that an index kept inside the image folder is not read as
/// images. A file named directly is always taken, except a CSV: that is a manifest, and
/// the error says to use `--manifest`. A folder given that is an index (or `skip`) is an
/// error.
pub fn walk(paths: &[PathBuf], skip: &[PathBuf]) -> Result<Walk> {
    let skip: Vec<PathBuf> = skip
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let mut out = Walk::default();
    for p in paths {
        anyhow::ensure!(p.exists(), "{}: no such file or folder", p.display());
        if p.is_file() {
            let ext = p
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase());
            anyhow::ensure!(
                ext.as_deref() != Some("csv"),
                "{0} is a CSV file: to index a manifest use --manifest {0}",
                p.display()
            );
            out.sources.push(Source {
                path: p.clone(),
                ..Default::default()
            });
            continue;
        }
        let canonical = std::fs::canonicalize(p).ok();
        anyhow::ensure!(
            !canonical.as_ref().is_some_and(|c| skip.contains(c)),
            "{} is also the --index folder: give the index a folder of its own",
            p.display()
        );
        anyhow::ensure!(
            !is_index_dir(p),
            "{} holds a simcase index ({}, {}), not images",
            p.display(),
            simcase_index::store::DB,
            simcase_index::store::VECTORS
        );
        let before = out.sources.len();
        // Extensions of the files skipped as never images, with their counts.
        let mut skipped: std::collections::BTreeMap<String, usize> = Default::default();
        let mut indexes = 0;
        let walker = walkdir::WalkDir::new(p)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let is_index = e.file_type().is_dir()
                    && (is_index_dir(e.path())
                        || (!skip.is_empty()
                            && std::fs::canonicalize(e.path()).is_ok_and(|c| skip.contains(&c))));
                if is_index {
                    tracing::info!("{}: an index folder; not walked", e.path().display());
                    indexes += 1;
                }
                !is_index
            });
        for e in walker {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    // One entry the walk cannot read fails alone; the rest are indexed.
                    let path = e.path().unwrap_or(p).to_path_buf();
                    use crate::failure::{BROKEN_LINK, UNREADABLE, UNREADABLE_FOLDER};
                    let (kind, reason) = match (e.loop_ancestor(), e.io_error()) {
                        (Some(a), _) => (
                            BROKEN_LINK,
                            format!("a link back to {}: not followed", a.display()),
                        ),
                        (None, Some(io)) if path.is_dir() => {
                            (UNREADABLE_FOLDER, format!("cannot read folder: {io}"))
                        }
                        (None, Some(io)) if path.is_symlink() => {
                            (BROKEN_LINK, format!("a link to nothing: {io}"))
                        }
                        (None, Some(io)) => (UNREADABLE, format!("cannot read file: {io}")),
                        (None, None) => (UNREADABLE, format!("cannot read: {e}")),
                    };
                    out.sources.push(Source {
                        path,
                        unreadable: Some((kind, reason)),
                        ..Default::default()
                    });
                    continue;
                }
            };
            let name = e.file_name().to_string_lossy();
            if !e.file_type().is_file() || name.starts_with('.') {
                continue;
            }
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase());
            if let Some(x) = ext.filter(|x| NOT_IMAGES.contains(&x.as_str())) {
                *skipped.entry(x).or_insert(0) += 1;
                continue;
            }
            out.sources.push(Source {
                path: e.path().to_path_buf(),
                ..Default::default()
            });
        }
        if out.sources.len() == before {
            out.empty.push(no_images(p, &skipped, indexes));
        }
    }
    Ok(out)
}

/// `FOLDER: no image files found (skipped 3 non-image files: csv, txt; 1 index folder)`.
fn no_images(
    dir: &Path,
    skipped: &std::collections::BTreeMap<String, usize>,
    indexes: usize,
) -> String {
    let mut why = Vec::new();
    let n: usize = skipped.values().sum();
    if n > 0 {
        let mut exts: Vec<(&String, &usize)> = skipped.iter().collect();
        exts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut names: Vec<&str> = exts.iter().take(4).map(|(x, _)| x.as_str()).collect();
        if exts.len() > 4 {
            names.push("…");
        }
        let s = if n == 1 { "" } else { "s" };
        why.push(format!(
            "skipped {n} non-image file{s}: {}",
            names.join(", ")
        ));
    }
    if indexes > 0 {
        let s = if indexes == 1 { "" } else { "s" };
        why.push(format!("skipped {indexes} index folder{s}"));
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({})", why.join("; "))
    };
    format!("{}: no image files found{why}", dir.display())
}

/// A manifest as read: its rows, and what the header looked like (for messages that say why
/// a manifest cannot serve some purpose).
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    /// One source per row, in file order.
    pub rows: Vec<Source>,
    /// The header's column names, trimmed and lower-cased, in file order.
    pub columns: Vec<String>,
    /// The delimiter sniffed from the header line.
    pub delimiter: u8,
}

impl Manifest {
    /// Whether the header has this (lower-case) column.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c == name)
    }

    /// `columns found: a, b, c; delimiter ';'`, for error messages.
    pub fn describe_header(&self) -> String {
        describe_header(&self.columns, self.delimiter)
    }
}

fn describe_header(columns: &[String], delimiter: u8) -> String {
    let cols = if columns.iter().all(|c| c.is_empty()) {
        "(none)".to_string()
    } else {
        columns.join(", ")
    };
    let d = match delimiter {
        b'\t' => "tab".to_string(),
        d => format!("'{}'", d as char),
    };
    format!("columns found: {cols}; delimiter {d}")
}

/// Delimiters a manifest may use, the first winning ties.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// The delimiter of a CSV whose header line is `line`: the candidate found most often outside
/// quotes (`,` when none is).
fn sniff_delimiter(line: &[u8]) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = DELIMITERS.iter().position(|&d| d == b) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let best = (0..DELIMITERS.len())
        .rev()
        .max_by_key(|&i| counts[i])
        .unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        DELIMITERS[best]
    }
}

/// The manifest's columns: matched case-insensitively, surrounding spaces ignored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Col {
    Path,
    /// The raw patient id, stored only as the salted key.
    PatientId,
    /// A stored column a manifest sets ([`Column::MANIFEST`], by its name), but the patient
    /// key, which comes from `patient_id`.
    Meta(Column),
    Extra,
}

impl Col {
    fn of(name: &str) -> Self {
        match name {
            "path" => Self::Path,
            "patient_id" => Self::PatientId,
            _ => match Column::from_name(name) {
                Some(c) if c != Column::PatientKey && Column::MANIFEST.contains(&c) => {
                    Self::Meta(c)
                }
                _ => Self::Extra,
            },
        }
    }
}

/// `modality/anatomy/pathology` when `label` has exactly that shape: three non-empty parts.
pub fn split_label(label: &str) -> Option<[&str; 3]> {
    let parts: Vec<&str> = label.split('/').map(str::trim).collect();
    match parts[..] {
        [m, a, p] if !m.is_empty() && !a.is_empty() && !p.is_empty() => Some([m, a, p]),
        _ => None,
    }
}

/// Rows of a manifest in the format of shared/data/dev.csv; `path` is relative to the CSV.
pub fn read_manifest(csv_path: &Path) -> Result<Vec<Source>> {
    Ok(read_manifest_full(csv_path)?.rows)
}

/// [`read_manifest`], keeping what the header looked like. Column names are matched
/// case-insensitively and trimmed; the delimiter (`,` `;` tab `|`) is sniffed from the header
/// line; values are trimmed. A `label` of the shape `modality/anatomy/pathology` fills those
/// three when their columns are absent or empty, and the three make the label when it is.
pub fn read_manifest_full(csv_path: &Path) -> Result<Manifest> {
    let shown = csv_path.display();
    let mut head = Vec::new();
    {
        use std::io::{BufRead, Read};
        let f = std::fs::File::open(csv_path)
            .with_context(|| format!("{shown}: cannot read manifest"))?;
        std::io::BufReader::new(f)
            .take(1 << 20)
            .read_until(b'\n', &mut head)
            .with_context(|| format!("{shown}: cannot read manifest"))?;
    }
    let delimiter = sniff_delimiter(&head);
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .with_context(|| format!("{shown}: cannot read manifest"))?;
    let headers: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{shown}: cannot read the manifest's header"))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    let columns: Vec<String> = headers.iter().map(|h| h.to_lowercase()).collect();
    let cols: Vec<Col> = columns.iter().map(|c| Col::of(c)).collect();
    anyhow::ensure!(
        cols.contains(&Col::Path),
        "{shown}: manifest has no `path` column ({})",
        describe_header(&columns, delimiter)
    );
    for (i, c) in columns.iter().enumerate() {
        anyhow::ensure!(
            !columns[..i].contains(c),
            "{shown}: manifest has the column `{c}` twice ({})",
            describe_header(&columns, delimiter)
        );
    }
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    let path_col = cols.iter().position(|c| *c == Col::Path).unwrap_or(0);
    for (i, rec) in rdr.records().enumerate() {
        // A bad row is skipped with one line naming it, and the rest is read: its values
        // would land in the wrong columns, or it names no file.
        let row = i + 2;
        let rec = match rec {
            Ok(r) if r.len() != headers.len() => {
                tracing::warn!(
                    "{shown}: row {row} has {} fields, the header {}; skipped",
                    r.len(),
                    headers.len()
                );
                continue;
            }
            Ok(r) if r.get(path_col).is_none_or(str::is_empty) => {
                tracing::warn!("{shown}: row {row} has no path; skipped");
                continue;
            }
            Ok(r) => r,
            // The file could not be read on: the rest would be lost unsaid.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Err(e).with_context(|| format!("{shown}: reading row {row}"));
            }
            Err(e) => {
                tracing::warn!("{shown}: row {row}: {e}; skipped");
                continue;
            }
        };
        let mut s = Source::default();
        for ((col, name), v) in cols.iter().zip(&headers).zip(rec.iter()) {
            let val = (!v.is_empty()).then(|| v.to_string());
            match col {
                Col::Path => s.path = base.join(v),
                Col::Meta(c) => *c.slot(&mut s.meta) = val,
                Col::PatientId => s.patient_id = val,
                Col::Extra => {
                    if let Some(v) = val {
                        s.meta.extra.insert(name.clone(), v.into());
                    }
                }
            }
        }
        let levels = [Column::Modality, Column::Anatomy, Column::Pathology];
        if let Some(label) = s.meta.label.clone() {
            if let Some(parts) = split_label(&label) {
                for (c, v) in levels.into_iter().zip(parts) {
                    c.slot(&mut s.meta).get_or_insert_with(|| v.to_string());
                }
            }
        }
        let m = &s.meta;
        if let (None, Some(x), Some(a), Some(p)) = (&m.label, &m.modality, &m.anatomy, &m.pathology)
        {
            s.meta.label = Some(format!("{x}/{a}/{p}"));
        }
        rows.push(s);
    }
    Ok(Manifest {
        rows,
        columns,
        delimiter,
    })
}

/// One share of the inputs of a sharded ingest: share `index` of `count` (0-based), so that
/// `count` independent jobs given the same inputs index each of them exactly once.
///
/// Why a hash of the path and not the position in the list, nor the content: a position
/// shifts when a file is added or a walk orders differently, and content would make every
/// job read the whole archive. Each input's share depends on its own key alone: its path
/// relative to the first given folder (or manifest folder) that holds it, so that the same
/// share is picked on every machine whatever the archive's mount point. The key's SHA-256
/// (its first 8 bytes, big-endian, modulo `count`) is stable across platforms, releases
/// and languages (`sha256sum` reproduces it), unlike Rust's randomised `HashMap` hasher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This job's share, `0..count`.
    pub index: u32,
    /// How many shares (jobs) there are.
    pub count: u32,
}

/// The environment variables `--shard auto/N` takes the share from, in order: a Kubernetes
/// Indexed Job's completion index, then a Slurm job array's task id.
pub const SHARD_INDEX_VARS: [&str; 2] = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"];

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `I/N` (0 <= I < N), or `auto/N` with I from the first of [`SHARD_INDEX_VARS`] that
    /// `env` has. Errors are one line naming the value and the reason.
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |why: String| anyhow::anyhow!("--shard {spec}: {why}");
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| bad("expected I/N (share I of N, 0-based) or auto/N".into()))?;
        let count: u32 = n.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            bad(format!(
                "N must be a whole number of shares, at least 1, not `{}`",
                n.trim()
            ))
        })?;
        let i = i.trim();
        let (index, from) = if i == "auto" {
            let (var, v) = SHARD_INDEX_VARS
                .iter()
                .find_map(|var| env(var).map(|v| (*var, v)))
                .ok_or_else(|| {
                    bad(format!(
                        "auto needs {} (Kubernetes Indexed Job) or {} (Slurm job array) set",
                        SHARD_INDEX_VARS[0], SHARD_INDEX_VARS[1]
                    ))
                })?;
            let index = v.trim().parse::<u32>().map_err(|_| {
                bad(format!(
                    "{var}=`{}` is not a share number",
                    shorten(v.trim())
                ))
            })?;
            (index, format!("{var}={index}"))
        } else {
            let index = i.parse::<u32>().map_err(|_| {
                bad(format!(
                    "I must be a whole number or `auto`, not `{}`",
                    shorten(i)
                ))
            })?;
            (index, format!("I={index}"))
        };
        if index >= count {
            return Err(bad(format!(
                "{from} is not below N={count} (shares are 0-based: 0..={})",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// [`Shard::parse`] with the process environment.
    pub fn from_arg(spec: &str) -> Result<Self> {
        Self::parse(spec, |k| std::env::var(k).ok())
    }

    /// The share of `count` that `key` falls in.
    pub fn of_key(key: &str, count: u32) -> u32 {
        let h = simcase_imaging::content_hash(key.as_bytes());
        let top = u64::from_str_radix(&h[..16], 16).unwrap_or(0);
        (top % u64::from(count.max(1))) as u32
    }

    /// Whether the input keyed `key` (see [`shard_key`]) is this job's.
    pub fn holds(&self, key: &str) -> bool {
        Self::of_key(key, self.count) == self.index
    }

    /// The sources of this share, in their order; `roots` are the folders their keys are
    /// relative to (see [`shard_key`]).
    pub fn select(&self, sources: Vec<Source>, roots: &[&Path]) -> Vec<Source> {
        sources
            .into_iter()
            .filter(|s| self.holds(&shard_key(&s.path, roots)))
            .collect()
    }
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(24) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The key an input is sharded by: its path relative to the first of `roots` that holds it
/// (a folder given to the walk, the manifest's folder), else the path as given; `/`-separated,
/// with `.` components dropped, so that `./a/b.png` and `a/b.png` agree.
pub fn shard_key(path: &Path, roots: &[&Path]) -> String {
    use std::path::Component;
    let rel = roots
        .iter()
        .filter_map(|r| path.strip_prefix(r).ok())
        .find(|r| r.components().any(|c| matches!(c, Component::Normal(_))))
        .unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir => Some(String::new()),
            Component::Prefix(p) => Some(p.as_os_str().to_string_lossy().into_owned()),
            Component::CurDir => None,
        })
        .collect();
    parts.join("/")
}

/// The folder a manifest's paths are relative to (the keys of its rows, for [`Shard`]).
pub fn manifest_root(csv_path: &Path) -> &Path {
    csv_path.parent().unwrap_or(Path::new(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk follows links to files and folders; a link to nothing and a loop of links each
    /// become one failing source with its reason, and the walk goes on past them.
    #[test]
    fn links_are_followed_and_what_cannot_be_read_fails_alone() {
        let dir = std::env::temp_dir().join(format!("simcase-walk-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("1.png"), b"x").unwrap();
        std::fs::write(b.join("2.png"), b"x").unwrap();
        std::os::unix::fs::symlink(b.join("2.png"), a.join("2.png")).unwrap();
        std::os::unix::fs::symlink(dir.join("gone.png"), a.join("3.png")).unwrap();
        std::os::unix::fs::symlink(&a, a.join("sub").join("back")).unwrap();
        std::fs::write(a.join("sub").join("4.png"), b"x").unwrap();
        let w = walk(std::slice::from_ref(&a), &[]).unwrap();
        let got: Vec<(String, Option<&str>)> = w
            .sources
            .iter()
            .map(|s| {
                let rel = s.path.strip_prefix(&a).unwrap().display().to_string();
                (rel, s.unreadable.as_ref().map(|(kind, _)| *kind))
            })
            .collect();
        let want = [
            ("1.png", None),
            ("2.png", None),
            ("3.png", Some(crate::failure::BROKEN_LINK)),
            ("sub/4.png", None),
            ("sub/back", Some(crate::failure::BROKEN_LINK)),
        ];
        let want: Vec<(String, Option<&str>)> =
            want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(got, want);
        let reasons: Vec<&str> = w
            .sources
            .iter()
            .filter_map(|s| s.unreadable.as_ref().map(|(_, r)| r.as_str()))
            .collect();
        assert!(reasons[0].starts_with("a link to nothing: "), "{reasons:?}");
        assert_eq!(
            reasons[1],
            format!("a link back to {}: not followed", a.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("simcase-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_delimiter_is_sniffed_from_the_header_line() {
        assert_eq!(sniff_delimiter(b"path,label,split\n"), b',');
        assert_eq!(sniff_delimiter(b"path;label;split\r\na,b;c\n"), b';');
        assert_eq!(sniff_delimiter(b"path\tlabel\n"), b'\t');
        assert_eq!(sniff_delimiter(b"path|label|split"), b'|');
        // Quoted delimiters do not count; a single column is read as CSV.
        assert_eq!(sniff_delimiter(b"\"a,b,c\";path\n"), b';');
        assert_eq!(sniff_delimiter(b"path\n"), b',');
        // A tie goes to the comma.
        assert_eq!(sniff_delimiter(b"a;b,c\n"), b',');
    }

    #[test]
    fn columns_match_whatever_their_case_and_spacing_and_paths_are_relative_to_the_csv() {
        let p = write(
            "semi.csv",
            "\u{feff}Path ; Modality ;ANATOMY; pathology ;Split;Patient_ID; View \n\
             img/a.png; US ;breast;benign;train;P1; CC \n",
        );
        let m = read_manifest_full(&p).unwrap();
        assert_eq!(m.delimiter, b';');
        assert_eq!(
            m.columns,
            [
                "path",
                "modality",
                "anatomy",
                "pathology",
                "split",
                "patient_id",
                "view"
            ]
        );
        let s = &m.rows[0];
        assert_eq!(s.path, p.parent().unwrap().join("img/a.png"));
        assert_eq!(s.meta.modality.as_deref(), Some("US"));
        assert_eq!(s.meta.anatomy.as_deref(), Some("breast"));
        assert_eq!(s.meta.label.as_deref(), Some("US/breast/benign"));
        assert_eq!(s.meta.split.as_deref(), Some("train"));
        assert_eq!(s.patient_id.as_deref(), Some("P1"));
        assert_eq!(s.meta.extra["View"], "CC");
        let t = write("tab.tsv", "PATH\tlabel\nb.png\tCT/chest/normal\n");
        let m = read_manifest_full(&t).unwrap();
        assert_eq!((m.delimiter, m.rows.len()), (b'\t', 1));
        assert_eq!(m.rows[0].meta.modality.as_deref(), Some("CT"));
    }

    #[test]
    fn a_missing_path_column_names_the_file_the_columns_and_the_delimiter() {
        let p = write("nopath.csv", "file;label\na.png;x\n");
        let e = format!("{:#}", read_manifest(&p).unwrap_err());
        assert!(
            e.contains("nopath.csv: manifest has no `path` column"),
            "{e}"
        );
        assert!(
            e.contains("columns found: file, label; delimiter ';'"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let p = write("twice.csv", "path,Label,label\na.png,x,y\n");
        let e = format!("{:#}", read_manifest(&p).unwrap_err());
        assert!(
            e.contains("twice.csv: manifest has the column `label` twice"),
            "{e}"
        );
        let p = write("empty.csv", "");
        let e = format!("{:#}", read_manifest(&p).unwrap_err());
        assert!(
            e.contains("empty.csv: manifest has no `path` column"),
            "{e}"
        );
        assert!(e.contains("columns found: (none)"), "{e}");
        let e = format!(
            "{:#}",
            read_manifest(Path::new("/nonexistent/m.csv")).unwrap_err()
        );
        assert!(
            e.starts_with("/nonexistent/m.csv: cannot read manifest"),
            "{e}"
        );
    }

    /// A row whose fields do not match the header, or that names no file, is skipped (with a
    /// warning naming it) and the rows around it are read: one bad row aborted the manifest.
    #[test]
    fn a_bad_row_is_skipped_and_the_rest_read() {
        let p = write(
            "bad-rows.csv",
            "path,label\na.png,CT/chest/x\nb.png\nc.png,CT/chest/y,extra\n,CT/chest/z\nd.png,MR/brain/w\n",
        );
        let rows = read_manifest(&p).unwrap();
        let got: Vec<(String, Option<String>)> = rows
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, s.meta.label.clone())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a.png".to_string(), Some("CT/chest/x".to_string())),
                ("d.png".to_string(), Some("MR/brain/w".to_string())),
            ]
        );
    }

    #[test]
    fn a_label_of_three_parts_fills_modality_anatomy_and_pathology() {
        let p = write(
            "labels.csv",
            "path,label,modality\n\
             a.png,US/breast/benign,\n\
             b.png,CT/chest/normal,MR\n\
             c.png,US/breast,\n\
             d.png,US//benign,\n\
             e.png,benign,\n",
        );
        let rows = read_manifest(&p).unwrap();
        let mp = |i: usize| {
            let m = &rows[i].meta;
            (
                m.modality.as_deref(),
                m.anatomy.as_deref(),
                m.pathology.as_deref(),
            )
        };
        assert_eq!(mp(0), (Some("US"), Some("breast"), Some("benign")));
        // A given column is kept; only the empty ones are filled.
        assert_eq!(mp(1), (Some("MR"), Some("chest"), Some("normal")));
        // Labels of another shape fill nothing, and stay as they are.
        for i in 2..5 {
            assert_eq!(mp(i), (None, None, None), "row {i}");
        }
        assert_eq!(rows[3].meta.label.as_deref(), Some("US//benign"));
        assert_eq!(split_label("a/b/c"), Some(["a", "b", "c"]));
        assert_eq!(split_label("a/b/c/d"), None);
    }

    /// Synthetic archive paths of the shapes archives have: folders of numbered files.
    fn archive(n: usize) -> Vec<Source> {
        (0..n)
            .map(|i| Source {
                path: PathBuf::from(format!(
                    "/mnt/a/pat{:04}/study{}/IM{:05}.dcm",
                    i / 40,
                    i % 3,
                    i
                )),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn every_input_lands_in_exactly_one_shard_and_shares_are_balanced() {
        // Shares of 8,600 to 60,000: a few % is 4 standard deviations or more.
        let sources = archive(60_000);
        let root = Path::new("/mnt/a");
        for n in [1u32, 2, 3, 7] {
            let mut seen = vec![0u32; sources.len()];
            let mut sizes = Vec::new();
            for i in 0..n {
                let shard = Shard { index: i, count: n };
                let share = shard.select(sources.clone(), &[root]);
                sizes.push(share.len());
                for s in &share {
                    let k: usize = s.path.file_stem().unwrap().to_string_lossy()[2..]
                        .parse()
                        .unwrap();
                    seen[k] += 1;
                }
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "N={n}: some input not in exactly one share"
            );
            assert_eq!(sizes.iter().sum::<usize>(), sources.len());
            let fair = sources.len() as f64 / n as f64;
            for (i, &size) in sizes.iter().enumerate() {
                let off = (size as f64 - fair).abs() / fair;
                assert!(
                    off < 0.04,
                    "N={n}: share {i} has {size} of {fair:.0} ({:.1}% off)",
                    off * 100.0
                );
            }
        }
    }

    #[test]
    fn the_share_depends_on_the_path_below_the_root_not_the_mount_point() {
        let at = |mount: &str| {
            let root = PathBuf::from(mount);
            let s: Vec<Source> = archive(3000)
                .into_iter()
                .map(|s| Source {
                    path: root.join(s.path.strip_prefix("/mnt/a").unwrap()),
                    ..s
                })
                .collect();
            Shard { index: 1, count: 3 }
                .select(s, &[&root])
                .into_iter()
                .map(|s| shard_key(&s.path, &[&root]))
                .collect::<Vec<_>>()
        };
        let here = at("/mnt/a");
        assert!(!here.is_empty());
        assert_eq!(here, at("/scratch/job7/archive"));
        assert_eq!(here, at("relative/./archive"));
        assert_eq!(here[0].matches('/').count(), 2, "{}", here[0]);
        // The first root holding a path wins; a path under none keeps its own form.
        let p = Path::new("/d/x/y/IM1.dcm");
        assert_eq!(
            shard_key(p, &[Path::new("/d/x"), Path::new("/d")]),
            "y/IM1.dcm"
        );
        assert_eq!(shard_key(p, &[Path::new("/e")]), "/d/x/y/IM1.dcm");
        assert_eq!(shard_key(p, &[p]), "/d/x/y/IM1.dcm", "a file given itself");
        assert_eq!(shard_key(Path::new("./a/b.png"), &[]), "a/b.png");
        // Pinned: the SHA-256 of the key, its first 8 bytes big-endian, modulo N (what
        // `printf %s y/IM1.dcm | sha256sum` gives), so that a change of the rule shows.
        let h = simcase_imaging::content_hash(b"y/IM1.dcm");
        let top = u64::from_str_radix(&h[..16], 16).unwrap();
        for n in [2, 3, 10] {
            assert_eq!(Shard::of_key("y/IM1.dcm", n), (top % n as u64) as u32);
        }
        // Manifest rows key relative to the CSV's folder.
        let csv = Path::new("/data/labels.csv");
        assert_eq!(
            shard_key(
                &manifest_root(csv).join("images/a.png"),
                &[manifest_root(csv)]
            ),
            "images/a.png"
        );
        assert_eq!(
            shard_key(
                &manifest_root(Path::new("m.csv")).join("images/a.png"),
                &[manifest_root(Path::new("m.csv"))]
            ),
            "images/a.png"
        );
    }

    #[test]
    fn shard_values_parse_or_say_why_in_one_line() {
        let none = |_: &str| None;
        assert_eq!(
            Shard::parse("0/3", none).unwrap(),
            Shard { index: 0, count: 3 }
        );
        assert_eq!(
            Shard::parse(" 2 / 3 ", none).unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert_eq!(Shard::parse("0/1", none).unwrap().to_string(), "0/1");
        for (spec, want) in [
            (
                "3/3",
                "--shard 3/3: I=3 is not below N=3 (shares are 0-based: 0..=2)",
            ),
            (
                "1/0",
                "--shard 1/0: N must be a whole number of shares, at least 1, not `0`",
            ),
            (
                "-1/3",
                "--shard -1/3: I must be a whole number or `auto`, not `-1`",
            ),
            (
                "x/y",
                "--shard x/y: N must be a whole number of shares, at least 1, not `y`",
            ),
            (
                "2",
                "--shard 2: expected I/N (share I of N, 0-based) or auto/N",
            ),
            (
                "",
                "--shard : expected I/N (share I of N, 0-based) or auto/N",
            ),
            (
                "auto/4",
                "--shard auto/4: auto needs JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or \
                 SLURM_ARRAY_TASK_ID (Slurm job array) set",
            ),
        ] {
            let e = Shard::parse(spec, none).unwrap_err().to_string();
            assert_eq!(e, want);
            assert!(!e.contains('\n'));
        }
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "2".to_string());
        assert_eq!(
            Shard::parse("auto/4", k8s).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let slurm = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "3".to_string());
        assert_eq!(
            Shard::parse("auto/4", slurm).unwrap(),
            Shard { index: 3, count: 4 }
        );
        assert_eq!(
            Shard::parse("auto/3", slurm).unwrap_err().to_string(),
            "--shard auto/3: SLURM_ARRAY_TASK_ID=3 is not below N=3 (shares are 0-based: 0..=2)"
        );
        let both = |k: &str| {
            Some(
                if k == "JOB_COMPLETION_INDEX" {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            )
        };
        assert_eq!(
            Shard::parse("auto/2", both).unwrap().index,
            1,
            "Kubernetes first"
        );
        let junk = |_: &str| Some("abc".to_string());
        assert_eq!(
            Shard::parse("auto/2", junk).unwrap_err().to_string(),
            "--shard auto/2: JOB_COMPLETION_INDEX=`abc` is not a share number"
        );
    }
}
