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

/// One code per row, as narrow as the dictionary allows.
#[derive(Clone, Debug)]
enum CodeVec {
    /// No row has a value.
    None,
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// One field of every row, dictionary-coded: code 0 is "no value", code `c ≥ 1` is the
/// dictionary's value `c - 1`. Values are kept exactly as stored (matching them
/// case-insensitively is the caller's choice, per code).
#[derive(Clone, Debug)]
pub struct Codes {
    values: Vec<Box<str>>,
    codes: CodeVec,
}

impl Codes {
    /// A column where no row has a value.
    pub fn empty() -> Self {
        Self {
            values: Vec::new(),
            codes: CodeVec::None,
        }
    }

    /// Row `row`'s code (0: no value, also for a row past the end).
    #[inline]
    pub fn code(&self, row: u64) -> u32 {
        let i = row as usize;
        match &self.codes {
            CodeVec::None => 0,
            CodeVec::U8(v) => v.get(i).map_or(0, |&c| u32::from(c)),
            CodeVec::U16(v) => v.get(i).map_or(0, |&c| u32::from(c)),
            CodeVec::U32(v) => v.get(i).copied().unwrap_or(0),
        }
    }

    /// The value of `code` (none for code 0).
    pub fn value(&self, code: u32) -> Option<&str> {
        let i = (code as usize).checked_sub(1)?;
        self.values.get(i).map(|v| &**v)
    }

    /// Row `row`'s value.
    pub fn get(&self, row: u64) -> Option<&str> {
        self.value(self.code(row))
    }

    /// Codes in use, 0 ("no value") included: the length of [`Codes::counts`] and of a
    /// [`Codes::select`] table.
    pub fn codes(&self) -> usize {
        self.values.len() + 1
    }

    /// Rows per code among the first `rows` (index 0: rows without a value).
    pub fn counts(&self, rows: usize) -> Vec<usize> {
        let mut n = vec![0usize; self.codes()];
        match &self.codes {
            CodeVec::None => n[0] = rows,
            CodeVec::U8(v) => v.iter().take(rows).for_each(|&c| n[c as usize] += 1),
            CodeVec::U16(v) => v.iter().take(rows).for_each(|&c| n[c as usize] += 1),
            CodeVec::U32(v) => v.iter().take(rows).for_each(|&c| n[c as usize] += 1),
        }
        n
    }

    /// For each code, whether its value passes `pred` (code 0, no value, never does).
    pub fn select(&self, mut pred: impl FnMut(&str) -> bool) -> Vec<bool> {
        std::iter::once(false)
            .chain(self.values.iter().map(|v| pred(v)))
            .collect()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let codes = match &self.codes {
            CodeVec::None => 0,
            CodeVec::U8(v) => v.capacity(),
            CodeVec::U16(v) => 2 * v.capacity(),
            CodeVec::U32(v) => 4 * v.capacity(),
        };
        codes + self.values.iter().map(|v| v.len() + 16).sum::<usize>()
    }
}

/// Interns one column's values while rows stream in.
#[derive(Default)]
pub(super) struct CodesBuilder {
    at: HashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
    codes: Vec<u32>,
}

impl CodesBuilder {
    /// Set row `row`'s value (rows before it that were never set have none).
    pub(super) fn set(&mut self, row: usize, v: Option<&str>) {
        let code = match v {
            None => 0,
            Some(v) => match self.at.get(v) {
                Some(&c) => c,
                None => {
                    self.values.push(v.into());
                    let c = self.values.len() as u32;
                    self.at.insert(v.into(), c);
                    c
                }
            },
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
        self.values.len()
    }

    /// The column over `rows` rows, narrowed.
    pub(super) fn finish(self, rows: usize) -> Codes {
        let Self {
            values, mut codes, ..
        } = self;
        codes.truncate(rows);
        let codes = if values.is_empty() {
            CodeVec::None
        } else {
            codes.resize(rows, 0);
            if values.len() < 256 {
                CodeVec::U8(codes.into_iter().map(|c| c as u8).collect())
            } else if values.len() < 65_536 {
                CodeVec::U16(codes.into_iter().map(|c| c as u16).collect())
            } else {
                CodeVec::U32(codes)
            }
        };
        Codes { values, codes }
    }
}

/// What a snapshot holds about its rows' metadata (see the module's documentation).
pub(super) struct Table {
    pub(super) columns: BTreeMap<Column, Codes>,
    pub(super) format: Codes,
    pub(super) extra: BTreeMap<String, Codes>,
    /// `extra` keys seen but not coded (too many columns, or too many values).
    pub(super) uncoded: BTreeSet<String>,
    /// Every `extra` key of any row.
    pub(super) extra_keys: BTreeSet<String>,
    pub(super) copies: HashMap<u64, Arc<[u64]>>,
}

/// Builds a [`Table`] from rows in id order.
pub(super) struct TableBuilder {
    columns: Vec<(Column, CodesBuilder)>,
    format: CodesBuilder,
    extra: BTreeMap<String, CodesBuilder>,
    uncoded: BTreeSet<String>,
    extra_keys: BTreeSet<String>,
    /// (pixel hash, row) of every row that has one.
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
            pixels: Vec::new(),
            rows: 0,
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
        let mut pixels = self.pixels;
        pixels.sort_unstable();
        let mut copies = HashMap::new();
        for run in pixels.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
            let ids: Arc<[u64]> = run.iter().map(|p| p.1).collect();
            copies.extend(ids.iter().map(|&id| (id, ids.clone())));
        }
        Table {
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
            copies,
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
