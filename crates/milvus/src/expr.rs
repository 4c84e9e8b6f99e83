//! Filters as Milvus boolean expressions, built so that no value can change an expression's
//! meaning. Every user value becomes a string literal through [`string`], which escapes what
//! Milvus's expression grammar (Plan.g4) and its Go unquoting (`strconv.Unquote`) give a meaning
//! to: backslash, both quotes, and control characters. JSON keys never reach the parser as
//! user text at all: Milvus 2.3 slices `x["key"]` paths apart on `][` and keeps escapes
//! verbatim, so the `x` field stores each extra key under [`json_key`] (hex of its bytes),
//! which needs no escaping.

use simcase_index::Column;

/// `s` as a Milvus string literal that no value can break out of: double-quoted, with `\` and
/// `"` escaped and every control character written `\uXXXX` (a raw newline ends a literal in
/// the grammar; other escapes would be read by `strconv.Unquote`).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                // Control characters beyond the BMP do not exist, so four digits suffice.
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The key under which the `x` JSON field stores the extra value `key`: `k` and the hex of its
/// bytes, so that an expression names it without any user text.
pub fn json_key(key: &str) -> String {
    let mut out = String::with_capacity(1 + 2 * key.len());
    out.push('k');
    for b in key.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// How values are compared: ASCII case-insensitively, as local filters compare (stored values
/// are lowercased the same way).
pub fn fold(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// A filterable field of the collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldRef {
    /// One of the item's text columns (a VarChar field of the same name).
    Column(Column),
    /// The container format.
    Format,
    /// A manifest column kept in the item's extra metadata (a key of the `x` JSON field).
    Extra(String),
}

impl FieldRef {
    /// The field as the expression names it.
    pub fn path(&self) -> String {
        match self {
            Self::Column(c) => c.name().to_string(),
            Self::Format => "format".into(),
            Self::Extra(k) => format!("x[\"{}\"]", json_key(k)),
        }
    }
}

/// A search's restrictions, as one Milvus expression: `fields` OR within a field and AND across
/// fields, an inclusive study-date range, ids left out, a column's values left out, and an
/// already-built clause.
#[derive(Clone, Debug, Default)]
pub struct Where {
    /// Allowed values per field (compared ASCII case-insensitively; an empty value never
    /// matches, and a field with no values matches nothing).
    pub fields: Vec<(FieldRef, Vec<String>)>,
    /// Earliest study date kept, YYYYMMDD; rows without a date are excluded when either bound
    /// is set.
    pub date_from: Option<u32>,
    /// Latest study date kept, YYYYMMDD, inclusive.
    pub date_to: Option<u32>,
    /// Item ids never returned.
    pub exclude_ids: Vec<u64>,
    /// Rows whose column holds one of these values are skipped (the group-by loop: groups
    /// already filled).
    pub not_in: Option<(Column, Vec<String>)>,
    /// A clause ANDed as it is (trusted: built by code, never from user text).
    pub raw: Option<String>,
}

/// Always false: ids are 63-bit, never negative.
const NOTHING: &str = "id < 0";

fn list(values: &[String]) -> String {
    let v: Vec<String> = values.iter().map(|v| string(&fold(v))).collect();
    format!("[{}]", v.join(", "))
}

impl Where {
    /// The expression, or `None` when nothing is restricted.
    pub fn to_expr(&self) -> Option<String> {
        let mut clauses: Vec<String> = Vec::new();
        for (field, values) in &self.fields {
            let values: Vec<String> = values.iter().filter(|v| !v.is_empty()).cloned().collect();
            if values.is_empty() {
                clauses.push(NOTHING.into());
                continue;
            }
            let path = field.path();
            match field {
                // `in` on a JSON path is not in every 2.3 release; equality chains are.
                FieldRef::Extra(_) => {
                    let ors: Vec<String> = values
                        .iter()
                        .map(|v| format!("{path} == {}", string(&fold(v))))
                        .collect();
                    clauses.push(ors.join(" or "));
                }
                _ => clauses.push(format!("{path} in {}", list(&values))),
            }
        }
        if self.date_from.is_some() || self.date_to.is_some() {
            clauses.push(format!(
                "study_date >= {}",
                self.date_from.unwrap_or(1).max(1)
            ));
            if let Some(to) = self.date_to {
                clauses.push(format!("study_date <= {to}"));
            }
        }
        if !self.exclude_ids.is_empty() {
            let ids: Vec<String> = self.exclude_ids.iter().map(|i| i.to_string()).collect();
            clauses.push(format!("id not in [{}]", ids.join(", ")));
        }
        if let Some((col, values)) = &self.not_in {
            if !values.is_empty() {
                clauses.push(format!("{} not in {}", col.name(), list(values)));
            }
        }
        if let Some(r) = &self.raw {
            clauses.push(r.clone());
        }
        match clauses.len() {
            0 => None,
            1 => clauses.pop(),
            _ => Some(
                clauses
                    .iter()
                    .map(|c| format!("({c})"))
                    .collect::<Vec<_>>()
                    .join(" and "),
            ),
        }
    }
}

/// `a and b` of two optional expressions.
pub fn and(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("({a}) and ({b})")),
        (Some(x), None) | (None, Some(x)) => Some(x.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Go's `strconv.Unquote` makes of a double-quoted literal using only the escapes
    /// [`string`] writes; `None` where it would fail (or the literal ends early).
    fn unquote(lit: &str) -> Option<String> {
        let inner = lit.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut it = inner.chars();
        while let Some(c) = it.next() {
            match c {
                '"' | '\n' => return None,
                '\\' => match it.next()? {
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    'u' => {
                        let h: String = it.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    _ => return None,
                },
                c => out.push(c),
            }
        }
        Some(out)
    }

    #[test]
    fn hostile_strings_round_trip_and_stay_one_literal() {
        for s in [
            "",
            "plain",
            "a\" || id > 0 || \"",
            "\\",
            "\"",
            "'",
            "\n",
            "\r\t\u{0}\u{7f}\u{85}",
            "üñí©ødé 肺",
            "x\"]",
            "\\\"",
            "ends with \\",
        ] {
            let lit = string(s);
            assert_eq!(unquote(&lit).as_deref(), Some(s), "{lit}");
            assert!(!lit.contains('\n') && !lit.contains('\r'), "{lit}");
            // The only unescaped quotes are the delimiters.
            let body = &lit[1..lit.len() - 1];
            let mut esc = false;
            for c in body.chars() {
                assert!(esc || c != '"', "{lit}");
                esc = !esc && c == '\\';
            }
            assert!(!esc, "{lit} ends inside an escape");
        }
    }

    #[test]
    fn json_keys_are_hex() {
        assert_eq!(json_key("view"), "k76696577");
        assert_eq!(json_key("x\"]"), "k78225d");
        assert!(json_key("é\\\n").chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn where_builds_one_clause_per_restriction() {
        assert_eq!(Where::default().to_expr(), None);
        let w = Where {
            fields: vec![
                (
                    FieldRef::Column(Column::Modality),
                    vec!["CT".into(), "Mr".into()],
                ),
                (FieldRef::Extra("view".into()), vec!["PA".into(), "".into()]),
                (FieldRef::Format, vec!["dicom".into()]),
            ],
            date_from: Some(20200101),
            date_to: Some(20201231),
            exclude_ids: vec![7, 9],
            not_in: Some((Column::PatientKey, vec!["AB\"".into()])),
            raw: Some("split == \"train\"".into()),
        };
        assert_eq!(
            w.to_expr().unwrap(),
            "(modality in [\"ct\", \"mr\"]) and (x[\"k76696577\"] == \"pa\") and \
             (format in [\"dicom\"]) and (study_date >= 20200101) and (study_date <= 20201231) and \
             (id not in [7, 9]) and (patient_key not in [\"ab\\\"\"]) and (split == \"train\")"
        );
        let only_to = Where {
            date_to: Some(20001231),
            ..Default::default()
        };
        assert_eq!(
            only_to.to_expr().unwrap(),
            "(study_date >= 1) and (study_date <= 20001231)"
        );
        let nothing = Where {
            fields: vec![(FieldRef::Column(Column::Label), vec![String::new()])],
            ..Default::default()
        };
        assert_eq!(nothing.to_expr().unwrap(), "id < 0");
        assert_eq!(and(Some("a"), Some("b")).unwrap(), "(a) and (b)");
        assert_eq!(and(None, Some("b")).unwrap(), "b");
    }
}
