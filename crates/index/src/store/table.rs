//! The metadata a [`Snapshot`](super::Snapshot) keeps in memory, built for millions of rows:
//! one dictionary-coded column per field that searches filter or group on (the filter
//! columns, the format, patient key, study and series UIDs, and the manifest's string `extra`
//! columns up to a bound, among them `study_date` and `volume`), plus the groups of items that
//! share their pixels. A row's value is a small code into its column's dictionary (one, two or
//! four bytes, whatever the dictionary needs), so a filter is a lookup in a table of allowed
//! codes and a group key is a dictionary entry, borrowed. Paths, UIDs and the rest of an item
//! stay in SQLite and are read by row id only for what a page of results shows.

use super::columns::{Column, ItemMeta};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The columns a snapshot codes: the filter columns and the group keys (not SOP UIDs, which
/// are unique per item and neither filtered nor grouped on).
pub const CODED: [Column; 10] = [
    Column::Modality,
    Column::Anatomy,
    Column::Pathology,
    Column::Label,
    Column::Split,
    Column::Source,
    Column::PatientKey,
    Column::StudyUid,
    Column::SeriesUid,
    Column::BodyPart,
];

/// `extra` keys always coded, whatever their number of values: the study date (date-range
/// filters) and the volume of a slice (`group_by=volume`).
pub const ALWAYS_CODED: [&str; 2] = ["study_date", super::columns::part_keys::VOLUME];

/// Most other `extra` string columns coded; further ones are read from SQLite when a filter
/// names them.
pub const MAX_EXTRA_COLUMNS: usize = 32;

/// Most distinct values of an `extra` column that is coded (beyond: an identifier-like
/// column, read from SQLite when a filter names it).
pub const MAX_EXTRA_VALUES: usize = 1 << 16;

/// An array that is either built in memory or borrowed from the metadata cache file
/// (memory-mapped, see [`super::cache`]): searches read both the same way.
#[derive(Clone)]
pub(super) enum Store<T: 'static> {
    Owned(Vec<T>),
    /// A slice of the map, which the `Arc` keeps alive (the slice never outlives `self`:
    /// it is only handed out through `Deref`, tied to `&self`).
    Mapped(#[allow(dead_code)] Arc<memmap2::Mmap>, &'static [T]),
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self::Owned(Vec::new())
    }
}

impl<T> std::ops::Deref for Store<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(_, s) => s,
        }
    }
}

impl<T> Store<T> {
    fn heap_bytes(&self) -> usize {
        match self {
            Self::Owned(v) => v.capacity() * std::mem::size_of::<T>(),
            Self::Mapped(..) => 0,
        }
    }
}

impl<T> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if matches!(self, Self::Owned(_)) {
            "owned"
        } else {
            "mapped"
        };
        write!(f, "{how}[{}]", self.len())
    }
}

/// One code per row, as narrow as the dictionary allows.
#[derive(Clone, Debug)]
pub(super) enum CodeVec {
    /// No row has a value.
    None,
    U8(Store<u8>),
    U16(Store<u16>),
    U32(Store<u32>),
}

impl CodeVec {
    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Self::None => 0,
            Self::U8(v) => v.get(i).map_or(0, |&c| u32::from(c)),
            Self::U16(v) => v.get(i).map_or(0, |&c| u32::from(c)),
            Self::U32(v) => v.get(i).copied().unwrap_or(0),
        }
    }

    /// Rows with a code (shorter than the row count means: the rest have none).
    pub(super) fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }

    /// The largest code (0 when none).
    pub(super) fn max(&self) -> u32 {
        match self {
            Self::None => 0,
            Self::U8(v) => v.iter().copied().max().map_or(0, u32::from),
            Self::U16(v) => v.iter().copied().max().map_or(0, u32::from),
            Self::U32(v) => v.iter().copied().max().unwrap_or(0),
        }
    }

    /// Bytes per code (0 for none).
    pub(super) fn width(&self) -> usize {
        match self {
            Self::None => 0,
            Self::U8(_) => 1,
            Self::U16(_) => 2,
            Self::U32(_) => 4,
        }
    }
}

/// One field of every row, dictionary-coded: code 0 is "no value", code `c ≥ 1` is the
/// dictionary's value `c - 1`. Values are kept exactly as stored (matching them
/// case-insensitively is the caller's choice, per code). The dictionary is one text with
/// each value's end offset (no allocation per value), so that a cached column is used as
/// mapped.
#[derive(Clone, Debug)]
pub struct Codes {
    pub(super) text: Store<u8>,
    pub(super) ends: Store<u64>,
    pub(super) codes: CodeVec,
}

impl Codes {
    /// A column where no row has a value.
    pub fn empty() -> Self {
        Self {
            text: Store::default(),
            ends: Store::default(),
            codes: CodeVec::None,
        }
    }

    /// Row `row`'s code (0: no value, also for a row past the end).
    #[inline]
    pub fn code(&self, row: u64) -> u32 {
        self.codes.get(row as usize)
    }

    /// The value of `code` (none for code 0).
    pub fn value(&self, code: u32) -> Option<&str> {
        let i = (code as usize).checked_sub(1)?;
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => *self.ends.get(i - 1)? as usize,
        };
        std::str::from_utf8(self.text.get(start..end)?).ok()
    }

    /// Row `row`'s value.
    pub fn get(&self, row: u64) -> Option<&str> {
        self.value(self.code(row))
    }

    /// Codes in use, 0 ("no value") included: the length of [`Codes::counts`] and of a
    /// [`Codes::select`] table.
    pub fn codes(&self) -> usize {
        self.ends.len() + 1
    }

    /// Rows per code among the first `rows` (index 0: rows without a value).
    pub fn counts(&self, rows: usize) -> Vec<usize> {
        let mut n = vec![0usize; self.codes()];
        let mut add = |c: usize| {
            if let Some(x) = n.get_mut(c) {
                *x += 1;
            }
        };
        match &self.codes {
            CodeVec::None => {}
            CodeVec::U8(v) => v.iter().take(rows).for_each(|&c| add(c as usize)),
            CodeVec::U16(v) => v.iter().take(rows).for_each(|&c| add(c as usize)),
            CodeVec::U32(v) => v.iter().take(rows).for_each(|&c| add(c as usize)),
        }
        n[0] += rows.saturating_sub(self.codes.len());
        n
    }

    /// For each code, whether its value passes `pred` (code 0, no value, never does).
    pub fn select(&self, mut pred: impl FnMut(&str) -> bool) -> Vec<bool> {
        std::iter::once(false)
            .chain((1..self.codes() as u32).map(|c| self.value(c).is_some_and(&mut pred)))
            .collect()
    }

    /// Heap bytes held (not what is mapped from the cache file).
    pub fn heap_bytes(&self) -> usize {
        let codes = match &self.codes {
            CodeVec::None => 0,
            CodeVec::U8(v) => v.heap_bytes(),
            CodeVec::U16(v) => v.heap_bytes(),
            CodeVec::U32(v) => v.heap_bytes(),
        };
        codes + self.text.heap_bytes() + self.ends.heap_bytes()
    }
}

/// Interns one column's values while rows stream in, from nothing or on top of a column
/// built before (the cached rows: then only rows past them are set).
#[derive(Default)]
pub(super) struct CodesBuilder {
    /// The column so far, and the rows it covers.
    base: Option<(Codes, usize)>,
    /// Value → code, of the base's values too (made on the first value set).
    at: Option<HashMap<Box<str>, u32>>,
    /// Values added past the base's.
    text: Vec<u8>,
    ends: Vec<u64>,
    /// Codes of rows past the base's.
    codes: Vec<u32>,
}

impl CodesBuilder {
    /// A builder that continues `base`, which covers the first `rows` rows.
    pub(super) fn extend(base: Codes, rows: usize) -> Self {
        Self {
            base: Some((base, rows)),
            ..Default::default()
        }
    }

    fn base_rows(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.1)
    }

    fn base_values(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.0.ends.len())
    }

    /// Set row `row`'s value (rows before it that were never set have none; rows the base
    /// covers are not changed).
    pub(super) fn set(&mut self, row: usize, v: Option<&str>) {
        let Some(row) = row.checked_sub(self.base_rows()) else {
            return;
        };
        let code = match v {
            None => 0,
            Some(v) => {
                let next = (self.distinct() + 1) as u32;
                let base = &self.base;
                let at = self.at.get_or_insert_with(|| {
                    let mut at = HashMap::new();
                    if let Some((b, _)) = base {
                        for c in 1..b.codes() as u32 {
                            if let Some(s) = b.value(c) {
                                at.entry(s.into()).or_insert(c);
                            }
                        }
                    }
                    at
                });
                match at.get(v) {
                    Some(&c) => c,
                    None => {
                        at.insert(v.into(), next);
                        self.text.extend_from_slice(v.as_bytes());
                        self.ends.push(self.text.len() as u64);
                        next
                    }
                }
            }
        };
        if code == 0 && self.codes.len() <= row {
            return; // filled with zeros by whatever comes next
        }
        if self.codes.len() < row {
            self.codes.resize(row, 0);
        }
        if self.codes.len() == row {
            self.codes.push(code);
        } else {
            self.codes[row] = code;
        }
    }

    /// Distinct values so far.
    pub(super) fn distinct(&self) -> usize {
        self.base_values() + self.ends.len()
    }

    /// The column over `rows` rows, narrowed.
    pub(super) fn finish(self, rows: usize) -> Codes {
        let Self {
            base,
            text,
            ends,
            mut codes,
            ..
        } = self;
        let (base, base_rows) = base.unwrap_or((Codes::empty(), 0));
        if ends.is_empty() && codes.iter().all(|&c| c == 0) && base_rows <= rows {
            return base; // nothing new: the base as it is (mapped, when it is)
        }
        let (text, ends): (Store<u8>, Store<u64>) = if ends.is_empty() {
            (base.text.clone(), base.ends.clone())
        } else {
            let off = base.text.len() as u64;
            let mut t = base.text.to_vec();
            t.extend_from_slice(&text);
            let mut e = base.ends.to_vec();
            e.extend(ends.iter().map(|x| x + off));
            (Store::Owned(t), Store::Owned(e))
        };
        let values = ends.len();
        codes.truncate(rows.saturating_sub(base_rows));
        let codes = if values == 0 {
            CodeVec::None
        } else if values < 256 {
            CodeVec::U8(Store::Owned(join(
                &base.codes,
                base_rows,
                &codes,
                rows,
                |c| c as u8,
            )))
        } else if values < 65_536 {
            CodeVec::U16(Store::Owned(join(
                &base.codes,
                base_rows,
                &codes,
                rows,
                |c| c as u16,
            )))
        } else {
            CodeVec::U32(Store::Owned(join(
                &base.codes,
                base_rows,
                &codes,
                rows,
                |c| c,
            )))
        };
        Codes { text, ends, codes }
    }
}

/// The first `base_rows` codes of `base` then `tail`, as `rows` codes of one width (in bulk
/// passes that the compiler vectorises: this is what extending a cached column costs).
fn join<T: Copy + Default>(
    base: &CodeVec,
    base_rows: usize,
    tail: &[u32],
    rows: usize,
    to: impl Fn(u32) -> T,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(rows);
    let n = base_rows.min(rows);
    match base {
        CodeVec::None => {}
        CodeVec::U8(v) => out.extend(v.iter().take(n).map(|&c| to(u32::from(c)))),
        CodeVec::U16(v) => out.extend(v.iter().take(n).map(|&c| to(u32::from(c)))),
        CodeVec::U32(v) => out.extend(v.iter().take(n).map(|&c| to(c))),
    }
    out.resize(n, T::default());
    out.extend(tail.iter().map(|&c| to(c)));
    out.resize(rows, T::default());
    out
}

/// The groups of rows that hold the same decoded pixels, as sorted arrays (a lookup is a
/// binary search; no allocation per group).
#[derive(Default)]
pub(super) struct Copies {
    /// Rows that have a copy, ascending.
    rows: Vec<u64>,
    /// For each of `rows`, its group's index.
    group: Vec<u32>,
    /// Where each group starts in `members` (one more than groups).
    starts: Vec<usize>,
    /// The groups' rows, each group ascending.
    members: Vec<u64>,
}

impl Copies {
    /// From `(pixel key, row)` pairs sorted by key then row.
    pub(super) fn from_sorted(pixels: impl Iterator<Item = (u128, u64)>) -> Self {
        let mut c = Copies {
            starts: vec![0],
            ..Default::default()
        };
        let mut run: Vec<u64> = Vec::new();
        let mut key = None;
        let close = |run: &mut Vec<u64>, c: &mut Copies| {
            if run.len() > 1 {
                c.members.append(run);
                c.starts.push(c.members.len());
            }
            run.clear();
        };
        for (k, row) in pixels {
            if key != Some(k) {
                close(&mut run, &mut c);
                key = Some(k);
            }
            run.push(row);
        }
        close(&mut run, &mut c);
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(c.members.len());
        for g in 0..c.starts.len() - 1 {
            for &r in &c.members[c.starts[g]..c.starts[g + 1]] {
                pairs.push((r, g as u32));
            }
        }
        pairs.sort_unstable();
        (c.rows, c.group) = pairs.into_iter().unzip();
        c
    }

    /// The rows with the same pixels as `id`, `id` included (empty: none).
    pub(super) fn of(&self, id: u64) -> &[u64] {
        let Ok(i) = self.rows.binary_search(&id) else {
            return &[];
        };
        let g = self.group[i] as usize;
        match (self.starts.get(g), self.starts.get(g + 1)) {
            (Some(&s), Some(&e)) => self.members.get(s..e).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn heap_bytes(&self) -> usize {
        8 * (self.rows.len() + self.starts.len() + self.members.len()) + 4 * self.group.len()
    }
}

/// The `(pixel key, row)` pairs of rows that have a pixel hash, sorted (key, then row): what
/// copies are found from, and what a later open needs to find copies among appended rows.
#[derive(Default)]
pub(super) enum Pixels {
    #[default]
    Empty,
    Owned(Vec<(u128, u64)>),
    /// From the cache file: keys as (high, low) words, and rows.
    Mapped {
        keys: Store<u64>,
        rows: Store<u32>,
    },
    /// Pairs, and (sorted) pairs of rows after theirs: read as one sequence, never copied.
    Extended(Box<Pixels>, Vec<(u128, u64)>),
}

impl Pixels {
    /// Pairs held.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::Owned(v) => v.len(),
            Self::Mapped { rows, .. } => rows.len(),
            Self::Extended(base, added) => base.len() + added.len(),
        }
    }

    /// The pairs, in order.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (u128, u64)> + '_> {
        match self {
            Self::Empty => Box::new(std::iter::empty()),
            Self::Owned(v) => Box::new(v.iter().copied()),
            Self::Mapped { keys, rows } => Box::new(
                keys.chunks_exact(2)
                    .zip(rows.iter())
                    .map(|(k, &r)| ((u128::from(k[0]) << 64) | u128::from(k[1]), u64::from(r))),
            ),
            Self::Extended(base, added) => {
                Box::new(merge_sorted(base.iter(), added.iter().copied()))
            }
        }
    }
}

/// Two sorted `(key, row)` sequences as one.
fn merge_sorted<'a>(
    a: impl Iterator<Item = (u128, u64)> + 'a,
    b: impl Iterator<Item = (u128, u64)> + 'a,
) -> impl Iterator<Item = (u128, u64)> + 'a {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x <= y => a.next(),
        (Some(_), Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        _ => b.next(),
    })
}

/// What a snapshot holds about its rows' metadata (see the module's documentation).
pub(super) struct Table {
    /// Rows covered: `0..rows`.
    pub(super) rows: usize,
    pub(super) columns: BTreeMap<Column, Codes>,
    pub(super) format: Codes,
    pub(super) extra: BTreeMap<String, Codes>,
    /// `extra` keys seen but not coded (too many columns, or too many values).
    pub(super) uncoded: BTreeSet<String>,
    /// Every `extra` key of any row.
    pub(super) extra_keys: BTreeSet<String>,
    pub(super) copies: Copies,
    /// Sorted pixel keys: what the cache file stores so that appended rows find their copies.
    pub(super) pixels: Pixels,
}

impl Table {
    /// Heap bytes of the in-memory metadata (not what is mapped from the cache file).
    pub(super) fn heap_bytes(&self) -> usize {
        let pixels = match &self.pixels {
            Pixels::Owned(v) | Pixels::Extended(_, v) => {
                v.capacity() * std::mem::size_of::<(u128, u64)>()
            }
            _ => 0,
        };
        self.columns.values().map(Codes::heap_bytes).sum::<usize>()
            + self.format.heap_bytes()
            + self.extra.values().map(Codes::heap_bytes).sum::<usize>()
            + self.copies.heap_bytes()
            + pixels
    }
}

/// Builds a [`Table`] from rows in id order, from nothing or on top of a table of the first
/// rows (the cache's).
pub(super) struct TableBuilder {
    columns: Vec<(Column, CodesBuilder)>,
    format: CodesBuilder,
    extra: BTreeMap<String, CodesBuilder>,
    uncoded: BTreeSet<String>,
    extra_keys: BTreeSet<String>,
    /// The base table's pixels (sorted), and (pixel key, row) of each row added.
    base_pixels: Pixels,
    pixels: Vec<(u128, u64)>,
    rows: usize,
}

impl TableBuilder {
    pub(super) fn new() -> Self {
        Self {
            columns: CODED
                .iter()
                .map(|&c| (c, CodesBuilder::default()))
                .collect(),
            format: CodesBuilder::default(),
            extra: BTreeMap::new(),
            uncoded: BTreeSet::new(),
            extra_keys: BTreeSet::new(),
            base_pixels: Pixels::Empty,
            pixels: Vec::new(),
            rows: 0,
        }
    }

    /// Continue `t`: rows pushed next are rows `t.rows..`. The result equals a table built
    /// from all rows at once, since a table keeps all of a builder's state (codes,
    /// dictionaries, coded and uncoded keys, sorted pixel keys).
    pub(super) fn extend(t: Table) -> Self {
        let n = t.rows;
        let mut columns = t.columns;
        Self {
            columns: CODED
                .iter()
                .map(|&c| {
                    let base = columns.remove(&c).unwrap_or_else(Codes::empty);
                    (c, CodesBuilder::extend(base, n))
                })
                .collect(),
            format: CodesBuilder::extend(t.format, n),
            extra: t
                .extra
                .into_iter()
                .map(|(k, c)| (k, CodesBuilder::extend(c, n)))
                .collect(),
            uncoded: t.uncoded,
            extra_keys: t.extra_keys,
            base_pixels: t.pixels,
            pixels: Vec::new(),
            rows: n,
        }
    }

    /// Add the next row: its format, its [`CODED`] values (in that order) and its `extra`.
    pub(super) fn push(
        &mut self,
        format: &str,
        values: &[Option<&str>],
        extra: &serde_json::Map<String, serde_json::Value>,
    ) {
        let row = self.rows;
        self.format.set(row, Some(format));
        for ((_, b), v) in self.columns.iter_mut().zip(values) {
            b.set(row, *v);
        }
        for (k, v) in extra {
            if !self.extra_keys.contains(k) {
                self.extra_keys.insert(k.clone());
            }
            if k == ItemMeta::PIXEL_HASH {
                if let Some(h) = v.as_str() {
                    self.pixels.push((pixel_key(h), row as u64));
                    // Unique per image: a filter on it reads SQLite.
                    if !self.uncoded.contains(k) {
                        self.uncoded.insert(k.clone());
                    }
                }
                continue;
            }
            let Some(s) = v.as_str() else { continue };
            if self.uncoded.contains(k) {
                continue;
            }
            let always = ALWAYS_CODED.contains(&k.as_str());
            if !self.extra.contains_key(k) {
                let others = self
                    .extra
                    .keys()
                    .filter(|k| !ALWAYS_CODED.contains(&k.as_str()))
                    .count();
                if !always && others >= MAX_EXTRA_COLUMNS {
                    self.uncoded.insert(k.clone());
                    continue;
                }
                self.extra.insert(k.clone(), CodesBuilder::default());
            }
            let Some(b) = self.extra.get_mut(k) else {
                continue;
            };
            b.set(row, Some(s));
            if !always && b.distinct() > MAX_EXTRA_VALUES {
                self.extra.remove(k);
                self.uncoded.insert(k.clone());
            }
        }
        self.rows += 1;
    }

    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    pub(super) fn finish(self) -> Table {
        let rows = self.rows;
        let mut added = self.pixels;
        added.sort_unstable();
        // Rows added come after the base's, so that (key, row) order merges.
        let pixels = match self.base_pixels {
            Pixels::Empty => Pixels::Owned(added),
            base if added.is_empty() => base,
            base => Pixels::Extended(Box::new(base), added),
        };
        Table {
            rows,
            columns: self
                .columns
                .into_iter()
                .map(|(c, b)| (c, b.finish(rows)))
                .collect(),
            format: self.format.finish(rows),
            extra: self
                .extra
                .into_iter()
                .map(|(k, b)| (k, b.finish(rows)))
                .collect(),
            uncoded: self.uncoded,
            extra_keys: self.extra_keys,
            copies: Copies::from_sorted(pixels.iter()),
            pixels,
        }
    }
}

/// A pixel hash as a number: its 32 lower-case hex digits, or (any other text) a hash of the text with
/// the top bit set, so that it cannot equal a hex one.
fn pixel_key(h: &str) -> u128 {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if h.len() == 32 && h.bytes().all(lower_hex) {
        if let Ok(v) = u128::from_str_radix(h, 16) {
            return v;
        }
    }
    use sha2::Digest;
    let d = sha2::Sha256::digest(h.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b) | (1u128 << 127) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_narrow_pad_and_count() {
        let mut b = CodesBuilder::default();
        b.set(1, Some("CT"));
        b.set(2, Some("MR"));
        b.set(4, Some("CT"));
        let c = b.finish(6);
        assert_eq!(c.codes(), 3);
        let got: Vec<Option<&str>> = (0..7).map(|r| c.get(r)).collect();
        assert_eq!(
            got,
            [None, Some("CT"), Some("MR"), None, Some("CT"), None, None]
        );
        assert_eq!(c.counts(6), [3, 2, 1]);
        assert_eq!(
            c.select(|v| v.eq_ignore_ascii_case("ct")),
            [false, true, false]
        );
        let mut big = CodesBuilder::default();
        for r in 0..70_000 {
            big.set(r, Some(&format!("v{r}")));
        }
        let big = big.finish(70_000);
        assert!(matches!(big.codes, CodeVec::U32(_)));
        assert_eq!(big.get(69_999), Some("v69999"));
        assert!(matches!(
            CodesBuilder::default().finish(5).codes,
            CodeVec::None
        ));
    }

    #[test]
    fn pixel_keys_of_hex_and_other_text_differ() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(pixel_key(hex), 0x0123456789abcdef0123456789abcdef);
        assert_ne!(pixel_key("x"), pixel_key("y"));
        assert_eq!(pixel_key("x") >> 127, 1);
    }
}
