//! `columns.cache`: a snapshot's coded metadata ([`Table`]) persisted, so that opening an
//! index of millions of rows maps one file instead of reading every row from SQLite (about
//! 5 µs a row: 45 s at 10M). Like every derived file of the folder it is a cache of SQLite:
//! checked on open and rebuilt with one warning when it does not fit.
//!
//! Layout (little-endian, every array 8-byte aligned, so that the codes, dictionaries and
//! pixel keys are used straight from the memory map, without a copy or an allocation per
//! row or per value):
//! - header, 64 bytes: magic, format version, layout version (a checksum of what a table
//!   codes: [`CODED`] and the `extra` bounds), rows covered `0..n`, the metadata generation
//!   they were read at, the body's length and CRC32, the index's identity (derived from its
//!   random salt: a cache copied from another index is not used), and the header's CRC32;
//! - body: the format column, the [`CODED`] columns, the coded `extra` columns (name, codes),
//!   the uncoded and all `extra` keys, and the sorted `(pixel key, row)` pairs (what lets
//!   appended rows find their copies among the cached ones). A column is its code width,
//!   its dictionary (value end offsets, then the values' text) and its codes.
//!
//! Use: a cache of rows `0..n` at the index's current generation is used as it is, and rows
//! `n..` (appended since) are read from SQLite and added in memory. Another generation
//! (labels rewritten), a newer cache than the snapshot, or any failed check: rebuilt from
//! SQLite.
//!
//! Writing: whoever opens a snapshot and finds the cache missing, stale, or behind by many
//! rows writes a fresh one (temp file, fsync, rename, directory fsync), unless the folder is
//! read-only. The file is rewritten whole rather than appended to: appending in place would
//! let a concurrent reader map a file that is changing, and the dictionaries grow in the
//! middle. To avoid rewriting some hundred megabytes on every small commit, it is rewritten
//! only when the uncovered tail reaches [`REWRITE_TAIL_FRACTION`] of the covered rows or
//! [`REWRITE_TAIL_ROWS`] rows: reading such a tail from SQLite costs well under a second.

use super::durable;
use super::table::{CodeVec, Codes, Copies, Pixels, Store, Table, ALWAYS_CODED, CODED};
use super::table::{MAX_EXTRA_COLUMNS, MAX_EXTRA_VALUES};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The cache file's name in the index folder.
pub const FILE: &str = "columns.cache";
const MAGIC: &[u8; 8] = b"SCCOLS\0\x01";
/// Bumped whenever the body's layout changes.
const FORMAT: u32 = 1;
const HEADER: usize = 64;

/// Rewrite when the rows past the cache are at least this fraction of the rows it covers…
pub const REWRITE_TAIL_FRACTION: usize = 8; // 1/8
/// …or at least this many.
pub const REWRITE_TAIL_ROWS: usize = 65_536;

/// Whether a cache covering `cached` rows should be rewritten for `rows` committed rows.
pub(super) fn worth_rewriting(cached: Option<usize>, rows: usize) -> bool {
    match cached {
        None => rows > 0,
        Some(n) => {
            let tail = rows.saturating_sub(n);
            tail > 0 && (tail * REWRITE_TAIL_FRACTION >= n || tail >= REWRITE_TAIL_ROWS)
        }
    }
}

/// What a table codes, as a number: a cache written under other rules is not used.
fn layout() -> u32 {
    let mut h = crc32fast::Hasher::new();
    for c in CODED {
        h.update(c.name().as_bytes());
        h.update(b"\0");
    }
    for k in ALWAYS_CODED {
        h.update(k.as_bytes());
        h.update(b"\0");
    }
    h.update(&(MAX_EXTRA_COLUMNS as u64).to_le_bytes());
    h.update(&(MAX_EXTRA_VALUES as u64).to_le_bytes());
    h.finalize()
}

/// Why the cache was not used.
#[derive(Debug)]
pub(super) enum Miss {
    /// No cache file.
    Absent,
    /// A valid cache of more rows than the snapshot (written by a newer one): not used, and
    /// not overwritten.
    Newer(usize),
    /// Anything else (another generation, corrupt, truncated, other layout), as a reason.
    Bad(String),
}

/// An index's identity for its cache: a keyed hash of a constant with the index's salt.
pub(super) fn identity(settings: &super::Settings) -> u64 {
    u64::from_str_radix(&settings.patient_key("\0columns.cache"), 16).unwrap_or(0)
}

/// The cache of `dir`, if it is valid for the index `id` ([`identity`]) at generation
/// `generation` and covers at most `rows` rows.
pub(super) fn load(dir: &Path, id: u64, generation: u64, rows: usize) -> Result<Table, Miss> {
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
        Err(e) => return Err(Miss::Bad(format!("cannot open it ({e})"))),
    };
    if cfg!(target_endian = "big") {
        return Err(Miss::Bad(
            "written little-endian, this machine is not".into(),
        ));
    }
    let len = file
        .metadata()
        .map_err(|e| Miss::Bad(format!("cannot stat it ({e})")))?
        .len() as usize;
    if len < HEADER {
        return Err(Miss::Bad(format!("truncated ({len} bytes, no header)")));
    }
    // SAFETY: the file is never written in place: writers make a new file and rename it over
    // this one, which leaves the mapped inode unchanged.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| Miss::Bad(format!("cannot map it ({e})")))?;
    let map = Arc::new(map);
    let h = &map[..HEADER];
    let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or_default());
    let half = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or_default());
    if &h[..8] != MAGIC {
        return Err(Miss::Bad("not a simcase metadata cache (bad magic)".into()));
    }
    if half(60) != crc32fast::hash(&h[..60]) {
        return Err(Miss::Bad("header checksum mismatch".into()));
    }
    if half(8) != FORMAT {
        return Err(Miss::Bad(format!(
            "format version {} (this build reads {FORMAT})",
            half(8)
        )));
    }
    if half(12) != layout() {
        return Err(Miss::Bad("written for other coded columns".into()));
    }
    if word(44) != id {
        return Err(Miss::Bad("written for another index".into()));
    }
    let (n, gen, body) = (word(16) as usize, word(24), word(32) as usize);
    if gen != generation {
        return Err(Miss::Bad(format!(
            "metadata generation {gen}, the index is at {generation} (labels were updated)"
        )));
    }
    if HEADER.checked_add(body) != Some(len) {
        return Err(Miss::Bad(format!(
            "{len} bytes where the header says {}",
            HEADER.saturating_add(body)
        )));
    }
    if n > rows {
        return Err(Miss::Newer(n));
    }
    if crc32fast::hash(&map[HEADER..]) != half(40) {
        return Err(Miss::Bad("checksum mismatch (corrupt)".into()));
    }
    let mut c = Cursor {
        map: &map,
        at: HEADER,
    };
    read_body(&mut c, n).map_err(Miss::Bad)
}

/// Reads the body from the map, checking every length against what is left.
struct Cursor<'a> {
    map: &'a Arc<memmap2::Mmap>,
    at: usize,
}

impl Cursor<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.map.get(self.at..self.at + 8).ok_or("truncated body")?;
        self.at += 8;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "bad word")?))
    }

    fn count(&mut self, what: &str, most: usize) -> Result<usize, String> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= most)
            .ok_or_else(|| format!("{what}: {n} entries, more than possible"))
    }

    /// `n` values of `T` (a plain integer type) at the cursor, mapped; then 8-aligned.
    fn array<T: Copy + 'static>(&mut self, n: usize) -> Result<Store<T>, String> {
        let size = std::mem::size_of::<T>();
        let bytes = n.checked_mul(size).ok_or("array too long")?;
        let end = self.at.checked_add(bytes).ok_or("array too long")?;
        let b = self.map.get(self.at..end).ok_or("truncated body")?;
        if b.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
            return Err("misaligned array".into());
        }
        // SAFETY: `b` is `n * size_of::<T>()` bytes of the map, aligned for `T` (checked),
        // and T is a plain integer type (any bit pattern valid). The map lives in an `Arc`
        // stored next to the slice in the `Store`, so the memory outlives every borrow of
        // it, and the file is never changed in place (see `load`).
        let s: &'static [T] = unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<T>(), n) };
        self.at = end.next_multiple_of(8);
        Ok(Store::Mapped(self.map.clone(), s))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.count("string", self.map.len())?;
        let b = self.array::<u8>(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "a key is not UTF-8".to_string())
    }

    fn strings(&mut self) -> Result<BTreeSet<String>, String> {
        let n = self.count("keys", self.map.len())?;
        (0..n).map(|_| self.string()).collect()
    }

    fn codes(&mut self, rows: usize) -> Result<Codes, String> {
        let width = self.u64()?;
        let values = self.count("dictionary", self.map.len())?;
        let ends = self.array::<u64>(values)?;
        let text_len = self.count("dictionary text", self.map.len())?;
        let text = self.array::<u8>(text_len)?;
        if ends.windows(2).any(|w| w[0] > w[1])
            || ends.last().is_some_and(|&e| e as usize > text_len)
        {
            return Err("dictionary offsets out of order".into());
        }
        let n = self.count("codes", rows)?;
        let codes = match width {
            0 => CodeVec::None,
            1 => CodeVec::U8(self.array(n)?),
            2 => CodeVec::U16(self.array(n)?),
            4 => CodeVec::U32(self.array(n)?),
            w => return Err(format!("code width {w}")),
        };
        if codes.max() as usize > values {
            return Err("a code past its dictionary".into());
        }
        Ok(Codes { text, ends, codes })
    }
}

fn read_body(c: &mut Cursor, rows: usize) -> Result<Table, String> {
    let format = c.codes(rows)?;
    let n = c.count("columns", CODED.len())?;
    if n != CODED.len() {
        return Err(format!("{n} columns, not {}", CODED.len()));
    }
    let mut columns = BTreeMap::new();
    for col in CODED {
        columns.insert(col, c.codes(rows)?);
    }
    let n = c.count("extra columns", c.map.len())?;
    let mut extra = BTreeMap::new();
    for _ in 0..n {
        let k = c.string()?;
        extra.insert(k, c.codes(rows)?);
    }
    let uncoded = c.strings()?;
    let extra_keys = c.strings()?;
    let n = c.count("pixel keys", rows)?;
    let keys = c.array::<u64>(2 * n)?;
    let prow = c.array::<u32>(n)?;
    if prow.iter().any(|&r| r as usize >= rows) {
        return Err("a pixel key of a row past the cache".into());
    }
    let pixels = Pixels::Mapped { keys, rows: prow };
    // Sorted (key, row) is what finding copies (and extending) relies on.
    let mut last = None;
    for p in pixels.iter() {
        if last.is_some_and(|l| l >= p) {
            return Err("pixel keys out of order".into());
        }
        last = Some(p);
    }
    if c.at != c.map.len() {
        return Err("bytes after the body".into());
    }
    Ok(Table {
        rows,
        columns,
        format,
        extra,
        uncoded,
        extra_keys,
        copies: Copies::from_sorted(pixels.iter()),
        pixels,
    })
}

/// Writes the body while hashing and counting it.
struct Out<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Out<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.crc.update(b);
        self.len += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = self.len.next_multiple_of(8) - self.len;
        self.bytes(&[0u8; 8][..n as usize])
    }

    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    /// Integers, little-endian, then padding.
    fn array<T: Copy, const N: usize>(
        &mut self,
        v: impl IntoIterator<Item = T>,
        le: impl Fn(T) -> [u8; N],
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 16);
        for x in v {
            buf.extend_from_slice(&le(x));
            if buf.len() >= (1 << 16) {
                self.bytes(&buf)?;
                buf.clear();
            }
        }
        self.bytes(&buf)?;
        self.pad()
    }

    fn string(&mut self, s: &str) -> std::io::Result<()> {
        self.u64(s.len() as u64)?;
        self.bytes(s.as_bytes())?;
        self.pad()
    }

    fn codes(&mut self, c: &Codes) -> std::io::Result<()> {
        self.u64(c.codes.width() as u64)?;
        self.u64(c.ends.len() as u64)?;
        self.array(c.ends.iter().copied(), u64::to_le_bytes)?;
        self.u64(c.text.len() as u64)?;
        self.bytes(&c.text)?;
        self.pad()?;
        self.u64(c.codes.len() as u64)?;
        match &c.codes {
            CodeVec::None => Ok(()),
            CodeVec::U8(v) => {
                self.bytes(v)?;
                self.pad()
            }
            CodeVec::U16(v) => self.array(v.iter().copied(), u16::to_le_bytes),
            CodeVec::U32(v) => self.array(v.iter().copied(), u32::to_le_bytes),
        }
    }
}

fn write_body<W: Write>(o: &mut Out<W>, t: &Table) -> std::io::Result<()> {
    o.codes(&t.format)?;
    o.u64(CODED.len() as u64)?;
    for c in CODED {
        o.codes(t.columns.get(&c).unwrap_or(&Codes::empty()))?;
    }
    o.u64(t.extra.len() as u64)?;
    for (k, c) in &t.extra {
        o.string(k)?;
        o.codes(c)?;
    }
    for set in [&t.uncoded, &t.extra_keys] {
        o.u64(set.len() as u64)?;
        for k in set {
            o.string(k)?;
        }
    }
    o.u64(t.pixels.len() as u64)?;
    o.array(
        t.pixels
            .iter()
            .flat_map(|(k, _)| [(k >> 64) as u64, k as u64]),
        u64::to_le_bytes,
    )?;
    o.array(t.pixels.iter().map(|(_, r)| r as u32), u32::to_le_bytes)
}

/// A temp file name of this process, unique within it.
fn temp_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{FILE}.tmp.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Remove temp files of processes that no longer run (a writer killed mid-write).
fn remove_dead_temps(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{FILE}.tmp.");
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('.').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Write `t` (rows `0..t.rows` at metadata generation `generation`) as the cache of `dir`,
/// index `id`:
/// atomically, so that a concurrent reader maps the old file or the new one, never half of
/// one. Returns the file's size.
pub(super) fn write(dir: &Path, id: u64, t: &Table, generation: u64) -> std::io::Result<u64> {
    if u32::try_from(t.rows).is_err() {
        return Err(std::io::Error::other(
            "more rows than the cache's u32 row ids",
        ));
    }
    remove_dead_temps(dir);
    let tmp: PathBuf = dir.join(temp_name());
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut o = Out {
            w: BufWriter::with_capacity(1 << 22, f),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        o.w.write_all(&[0u8; HEADER])?;
        write_body(&mut o, t)?;
        let Out { w, crc, len } = o;
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        h[12..16].copy_from_slice(&layout().to_le_bytes());
        h[16..24].copy_from_slice(&(t.rows as u64).to_le_bytes());
        h[24..32].copy_from_slice(&generation.to_le_bytes());
        h[32..40].copy_from_slice(&len.to_le_bytes());
        h[40..44].copy_from_slice(&crc.finalize().to_le_bytes());
        h[44..52].copy_from_slice(&id.to_le_bytes());
        let hc = crc32fast::hash(&h[..60]);
        h[60..64].copy_from_slice(&hc.to_le_bytes());
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&h)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(FILE))?;
        durable::sync_dir(dir).map_err(std::io::Error::other)?;
        Ok(HEADER as u64 + len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
