//! The parameters of a search, parsed and bounded once for every caller (the server's query
//! string, the CLI's flags). Every value that fails to parse is a [`QueryError::BadParameter`]
//! naming its parameter, and every value is bounded, so no parameter can grow a request's
//! memory past what the limits below state.
//!
//! Memory of one parsed [`Params`]: at most [`MAX_PARAMS`] pairs are looked at, filters hold at
//! most [`MAX_FILTER_VALUES`] values of at most [`MAX_VALUE_BYTES`] each (keyed by names of at
//! most as many bytes), a text query at most [`MAX_TEXT_BYTES`]: under 20 KiB in all, whatever
//! the query string. (The server's HTTP layer bounds the query string itself.) Numbers
//! (`k`, `offset`, ids) are plain integers; what they cost at search time is bounded by the
//! index, not by their value (see [`crate::search`]).

use crate::{Field, Filters, QueryError, Request};
use simcase_imaging::WindowPreset;
use std::fmt;

/// Most `name=value` pairs in one search.
pub const MAX_PARAMS: usize = 64;
/// Longest filter value, and longest `meta.NAME` field name, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// Most filter values in one search, all fields together.
pub const MAX_FILTER_VALUES: usize = 32;
/// Longest text query, in bytes (the text towers read at most 256 tokens).
pub const MAX_TEXT_BYTES: usize = 1024;
/// Largest `k` (results per page): the server's default `max_k` and the CLI's bound.
pub const MAX_K: usize = 500;
/// Longest value quoted back in an error message.
const MAX_QUOTED: usize = 64;

/// `v` in quotes, cut to a few dozen bytes: error messages echo client input, boundedly.
pub(crate) fn quote(v: &str) -> String {
    if v.len() <= MAX_QUOTED {
        return format!("{v:?}");
    }
    let mut end = MAX_QUOTED;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &v[..end], v.len())
}

/// A calendar date, ordered: what `date_from`/`date_to` take and what `meta.study_date` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StudyDate {
    /// `YYYYMMDD` as a number, so that numeric order is date order.
    ymd: u32,
}

impl StudyDate {
    /// The date `year`-`month`-`day`, if it is one (leap years included; years 0..=9999).
    pub fn from_ymd(year: u32, month: u32, day: u32) -> Option<Self> {
        let leap =
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (year <= 9999 && (1..=days).contains(&day)).then_some(Self {
            ymd: year * 10_000 + month * 100 + day,
        })
    }

    /// The date as the number `YYYYMMDD` (what a Milvus collection's `study_date` holds).
    pub fn as_number(self) -> u32 {
        self.ymd
    }

    /// A date as a request gives it: DICOM's DA form `YYYYMMDD` or ISO `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_with(s, b'-')
    }

    /// A date as an index stores it (`meta.study_date`, from DICOM StudyDate or a manifest):
    /// `YYYYMMDD`, `YYYY-MM-DD`, or the ACR-NEMA `YYYY.MM.DD` of older DICOM; DICOM's space
    /// padding is ignored.
    pub fn parse_stored(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::parse_with(s, b'-').or_else(|| Self::parse_with(s, b'.'))
    }

    fn parse_with(s: &str, sep: u8) -> Option<Self> {
        let b = s.as_bytes();
        let (y, m, d) = match b.len() {
            8 => (&b[..4], &b[4..6], &b[6..]),
            10 if b[4] == sep && b[7] == sep => (&b[..4], &b[5..7], &b[8..]),
            _ => return None,
        };
        Self::from_ymd(digits(y)?, digits(m)?, digits(d)?)
    }
}

/// ASCII digits as a number (none other accepted: no sign, no spaces).
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

impl fmt::Display for StudyDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = (self.ymd / 10_000, self.ymd / 100 % 100, self.ymd % 100);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// `value` of parameter `name` as a date.
pub fn parse_date(name: &str, value: &str) -> Result<StudyDate, QueryError> {
    StudyDate::parse(value).ok_or_else(|| {
        QueryError::bad(
            name,
            format!("not a date: {} (use YYYY-MM-DD or YYYYMMDD)", quote(value)),
        )
    })
}

/// `value` of parameter `name` as a whole number (a count, an offset).
pub fn parse_count(name: &str, value: &str) -> Result<usize, QueryError> {
    value.parse().map_err(|_| {
        QueryError::bad(
            name,
            format!("must be a whole number, got {}", quote(value)),
        )
    })
}

/// `value` of parameter `name` as an item id.
pub fn parse_id(name: &str, value: &str) -> Result<u64, QueryError> {
    value.parse().map_err(|_| {
        QueryError::bad(
            name,
            format!("item ids are whole numbers, got {}", quote(value)),
        )
    })
}

/// `k` results per page, refused unless it is 1..=`max_k` (the same message for the API and
/// the CLI).
pub fn check_k(k: usize, max_k: usize) -> Result<usize, QueryError> {
    if k == 0 || k > max_k {
        return Err(QueryError::bad(
            "k",
            format!("must be 1..={max_k}, got {k}"),
        ));
    }
    Ok(k)
}

/// A text query: not blank, at most [`MAX_TEXT_BYTES`].
pub fn check_text(text: &str) -> Result<(), QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError::bad("text", "the text query is empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(QueryError::bad(
            "text",
            format!(
                "{} bytes; a text query is at most {MAX_TEXT_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// `value` of parameter `name` as a DICOM window: a preset or `C,W` with finite numbers.
pub fn parse_window(name: &str, value: &str) -> Result<WindowPreset, QueryError> {
    if value.len() > MAX_QUOTED {
        return Err(QueryError::bad(
            name,
            format!("not a window: {}", quote(value)),
        ));
    }
    let w: WindowPreset = value.parse().map_err(|e| QueryError::bad(name, e))?;
    if !(w.center.is_finite() && w.width.is_finite()) {
        return Err(QueryError::bad(
            name,
            format!("centre and width must be finite, got {}", quote(value)),
        ));
    }
    Ok(w)
}

/// A search as a query string states it, the same for `GET` (by `id` or `text`) and `POST`
/// (an upload).
#[derive(Clone, Debug)]
pub struct Params {
    /// Page, filters and grouping.
    pub req: Request,
    /// The DICOM window for an uploaded query.
    pub window: Option<WindowPreset>,
    /// "More like this" item.
    pub id: Option<u64>,
    /// Text query.
    pub text: Option<String>,
    /// The view to search in (a name checked like [`simcase_adapt::view::check_name`]).
    pub view: Option<String>,
    /// An indexed archived instance, by SOP Instance UID.
    pub sop_uid: Option<String>,
    /// With `sop_uid`: keep results of the query's own study (left out by default).
    pub include_same_study: bool,
    /// Leave out results of the query's own patient.
    pub exclude_same_patient: bool,
}

/// `true`/`1` or `false`/`0` (empty: false).
fn parse_flag(name: &str, v: &str) -> Result<bool, QueryError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(QueryError::bad(
            name,
            format!("{} is not true or false", quote(other)),
        )),
    }
}

impl Params {
    /// Results per page when `k` is not given.
    pub const DEFAULT_K: usize = 20;

    /// Parse a query string's `name=value` pairs: `k` (1..=`max_k`), `offset`, `id`, `text`,
    /// `group_by`, `window`, `duplicates` (`collapse`, the default, or `all`), `view` (a view
    /// stored with the index), `rerank` (`none`, `aqe` or `kr`) (each at most once; an empty
    /// `group_by`, `window`, `duplicates`, `view` or `rerank` means the default),
    /// `date_from`/`date_to`, and every other name as a filter field (repeatable). `token` is
    /// skipped (it authenticates, it does not search). Any bad value is a
    /// [`QueryError::BadParameter`] naming its parameter.
    pub fn parse(pairs: &[(String, String)], max_k: usize) -> Result<Self, QueryError> {
        if pairs.len() > MAX_PARAMS {
            return Err(QueryError::bad(
                "query",
                format!(
                    "{} parameters; a search takes at most {MAX_PARAMS}",
                    pairs.len()
                ),
            ));
        }
        let mut p = Self {
            req: Request {
                k: Self::DEFAULT_K,
                ..Request::default()
            },
            window: None,
            id: None,
            text: None,
            view: None,
            sop_uid: None,
            include_same_study: false,
            exclude_same_patient: false,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, v) in pairs {
            let name = name.as_str();
            if [
                "k",
                "offset",
                "id",
                "text",
                "group_by",
                "window",
                "duplicates",
                "view",
                "rerank",
                "sop_uid",
                "include_same_study",
                "exclude_same_patient",
            ]
            .contains(&name)
            {
                if seen.contains(&name) {
                    return Err(QueryError::bad(name, "given more than once"));
                }
                seen.push(name);
            }
            match name {
                "k" => p.req.k = parse_count("k", v)?,
                "offset" => p.req.offset = parse_count("offset", v)?,
                "id" => p.id = Some(parse_id("id", v)?),
                "text" => {
                    check_text(v)?;
                    p.text = Some(v.clone());
                }
                "group_by" if v.is_empty() => {}
                "group_by" => p.req.group_by = Some(v.parse()?),
                "duplicates" if v.is_empty() => {}
                "duplicates" => p.req.duplicates = v.parse()?,
                "view" if v.is_empty() => {}
                "view" => {
                    simcase_adapt::view::check_name(v).map_err(|_| {
                        QueryError::bad(
                            "view",
                            format!(
                                "{} is not a view name (1 to 64 letters, digits, '-', '_' or \
                                 '.', not starting with '.')",
                                quote(v)
                            ),
                        )
                    })?;
                    p.view = Some(v.clone());
                }
                "rerank" if v.is_empty() => {}
                "rerank" => p.req.rerank = v.parse()?,
                "sop_uid" => {
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
                    if !ok {
                        return Err(QueryError::bad(
                            "sop_uid",
                            format!("{} is not a UID (digits and dots, at most 64)", quote(v)),
                        ));
                    }
                    p.sop_uid = Some(v.clone());
                }
                "include_same_study" => p.include_same_study = parse_flag(name, v)?,
                "exclude_same_patient" => p.exclude_same_patient = parse_flag(name, v)?,
                "window" if v.is_empty() => {}
                "window" => p.window = Some(parse_window("window", v)?),
                "token" => {}
                other => p.req.filters.add(other, v)?,
            }
        }
        check_k(p.req.k, max_k)?;
        Ok(p)
    }
}

impl Filters {
    /// Add the filter `name=value`: `date_from`/`date_to` (once each, a date, from ≤ to), or a
    /// field ([`Field`]) and one of its allowed values (case-insensitive; repeats ignored).
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), QueryError> {
        if let Some(slot) = match name {
            "date_from" => Some(&mut self.date_from),
            "date_to" => Some(&mut self.date_to),
            _ => None,
        } {
            if slot.is_some() {
                return Err(QueryError::bad(name, "given more than once"));
            }
            *slot = Some(parse_date(name, value)?);
            if let (Some(from), Some(to)) = (self.date_from, self.date_to) {
                if from > to {
                    return Err(QueryError::bad(
                        "date_from",
                        format!("{from} is after date_to {to}"),
                    ));
                }
            }
            return Ok(());
        }
        let field: Field = name.parse()?;
        if value.is_empty() {
            return Err(QueryError::bad(name, "empty value"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(QueryError::bad(
                name,
                format!(
                    "{} bytes; a filter value is at most {MAX_VALUE_BYTES}",
                    value.len()
                ),
            ));
        }
        if self.fields.values().map(Vec::len).sum::<usize>() >= MAX_FILTER_VALUES {
            return Err(QueryError::bad(
                name,
                format!("a search takes at most {MAX_FILTER_VALUES} filter values"),
            ));
        }
        let allowed = self.fields.entry(field).or_default();
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
            allowed.push(value.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupBy;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn named(q: &[(&str, &str)]) -> String {
        match Params::parse(&pairs(q), 500) {
            Err(QueryError::BadParameter { name, .. }) => name,
            Err(e) => panic!("{q:?}: not a bad parameter: {e}"),
            Ok(_) => panic!("{q:?} was accepted"),
        }
    }

    #[test]
    fn dates_parse_in_dicom_and_iso_form_and_nothing_else() {
        let d = StudyDate::from_ymd(2019, 3, 7).unwrap();
        assert_eq!(StudyDate::parse("20190307"), Some(d));
        assert_eq!(StudyDate::parse("2019-03-07"), Some(d));
        assert_eq!(d.to_string(), "2019-03-07");
        assert_eq!(StudyDate::parse_stored("2019.03.07"), Some(d));
        assert_eq!(StudyDate::parse_stored("20190307 "), Some(d));
        assert_eq!(
            StudyDate::parse("2019.03.07"),
            None,
            "requests: DA or ISO only"
        );
        assert_eq!(
            StudyDate::parse("2020-02-29").unwrap().to_string(),
            "2020-02-29"
        );
        for bad in [
            "notadate",
            "",
            "2019",
            "2019-3-7",
            "20191307",
            "20190230",
            "20190229",
            "19000229",
            "2019-03-32",
            "2019/03/07",
            "+2019030",
            "２０１９0307",
            "2019-03-07T00:00",
            "20190307 ",
        ] {
            assert_eq!(StudyDate::parse(bad), None, "{bad:?}");
        }
        assert!(StudyDate::parse("19991231") < StudyDate::parse("2000-01-01"));
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let text = "y".repeat(MAX_TEXT_BYTES + 1);
        let many: Vec<(String, String)> = (0..=MAX_PARAMS)
            .map(|i| ("modality".to_string(), format!("M{i}")))
            .collect();
        for (q, name) in [
            (&[("k", "abc")][..], "k"),
            (&[("k", "0")], "k"),
            (&[("k", "501")], "k"),
            (&[("k", "-1")], "k"),
            (&[("k", "1"), ("k", "2")], "k"),
            (&[("offset", "-1")], "offset"),
            (&[("offset", "1e3")], "offset"),
            (&[("offset", "99999999999999999999999")], "offset"),
            (&[("id", "x")], "id"),
            (&[("id", "-3")], "id"),
            (&[("text", "  ")], "text"),
            (&[("text", &text)], "text"),
            (&[("group_by", "doctor")], "group_by"),
            (&[("duplicates", "some")], "duplicates"),
            (
                &[("duplicates", "all"), ("duplicates", "all")],
                "duplicates",
            ),
            (&[("window", "nope")], "window"),
            (&[("view", "../etc")], "view"),
            (&[("view", ".hidden")], "view"),
            (&[("view", "a"), ("view", "b")], "view"),
            (&[("rerank", "dba")], "rerank"),
            (&[("rerank", "kr"), ("rerank", "kr")], "rerank"),
            (&[("window", "nan,400")], "window"),
            (&[("window", "40,inf")], "window"),
            (&[("date_from", "notadate")], "date_from"),
            (&[("date_to", "2019-02-30")], "date_to"),
            (
                &[("date_from", "20200101"), ("date_to", "20190101")],
                "date_from",
            ),
            (
                &[("date_to", "20200101"), ("date_to", "20210101")],
                "date_to",
            ),
            (&[("modality", "")], "modality"),
            (&[("modality", &long)], "modality"),
            (&[("nosuchfield", "1")], "nosuchfield"),
            (&[("meta.", "1")], "meta."),
        ] {
            assert_eq!(named(q), name, "{q:?}");
        }
        assert_eq!(
            Params::parse(&many, 500).unwrap_err().to_string(),
            format!(
                "query: {} parameters; a search takes at most {MAX_PARAMS}",
                MAX_PARAMS + 1
            )
        );
        let values: Vec<(String, String)> = (0..=MAX_FILTER_VALUES)
            .map(|i| ("label".to_string(), format!("L{i}")))
            .collect();
        assert_eq!(
            match Params::parse(&values, 500) {
                Err(QueryError::BadParameter { name, .. }) => name,
                other => panic!("{other:?}"),
            },
            "label"
        );
        let meta_name = format!("meta.{long}");
        assert!(matches!(
            Params::parse(&pairs(&[(&meta_name, "1")]), 500),
            Err(QueryError::BadParameter { .. })
        ));
    }

    #[test]
    fn good_values_parse_to_a_bounded_request() {
        let p = Params::parse(
            &pairs(&[
                ("k", "7"),
                ("offset", "18446744073709551615"),
                ("id", "3"),
                ("group_by", "patient"),
                ("window", ""),
                ("duplicates", "all"),
                ("view", "whiten"),
                ("rerank", "kr"),
                ("modality", "CT"),
                ("modality", "ct"),
                ("modality", "MR"),
                ("meta.view", "PA"),
                ("date_from", "2019-01-01"),
                ("date_to", "20191231"),
                ("token", "whatever"),
            ]),
            500,
        )
        .unwrap();
        assert_eq!((p.req.k, p.req.offset, p.id), (7, usize::MAX, Some(3)));
        assert_eq!(p.req.group_by, Some(GroupBy::Patient));
        assert_eq!(p.req.duplicates, crate::Duplicates::All);
        assert_eq!(p.window, None);
        assert_eq!(p.view.as_deref(), Some("whiten"));
        assert_eq!(p.req.rerank, crate::Rerank::Kr(crate::rerank::Kr::PAPER));
        let modality: Field = "modality".parse().unwrap();
        assert_eq!(p.req.filters.fields[&modality], vec!["CT", "MR"]);
        assert_eq!(p.req.filters.date_from, StudyDate::from_ymd(2019, 1, 1));
        assert_eq!(p.req.filters.date_to, StudyDate::from_ymd(2019, 12, 31));
        let d = Params::parse(&[], 500).unwrap();
        assert_eq!((d.req.k, d.req.offset), (Params::DEFAULT_K, 0));
        assert_eq!(d.req.duplicates, crate::Duplicates::Collapse);
        assert_eq!((d.view, d.req.rerank), (None, crate::Rerank::None));
        assert!(d.req.filters.is_empty());
        let e = Params::parse(&pairs(&[("view", ""), ("rerank", "aqe")]), 500).unwrap();
        assert_eq!((e.view, e.req.rerank), (None, crate::Rerank::AQE));
    }

    #[test]
    fn quoted_values_are_cut() {
        let q = quote(&"z".repeat(10_000));
        assert!(q.len() < 100 && q.ends_with("(10000 bytes)"), "{q}");
    }
}
