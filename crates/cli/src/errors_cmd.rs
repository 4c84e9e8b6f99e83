//! Failures are never silently lost: `simcase errors` lists the files an index could not take
//! (from its `errors` table) with their reasons and a count by kind, and `simcase index` ends
//! a run that had failures with a short summary of them by kind.

use anyhow::Result;
use simcase_index::store::{failures, Failure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct ErrorsArgs {
    /// Index folder.
    #[arg(long)]
    index: PathBuf,
    /// One JSON object: `errors` (path, kind, reason, at), `by_kind` and `total`.
    #[arg(long)]
    json: bool,
    /// Sort by path instead of newest first.
    #[arg(long)]
    by_path: bool,
}

/// Kinds with their counts and first path, most frequent first (ties by kind).
fn by_kind<'a>(
    failures: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, usize, &'a str)> {
    let mut m: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (kind, path) in failures {
        m.entry(kind).or_insert((0, path)).0 += 1;
    }
    let mut v: Vec<_> = m.into_iter().map(|(k, (n, p))| (k, n, p)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

fn files(n: usize) -> String {
    format!("{n} file{}", if n == 1 { "" } else { "s" })
}

/// The kinds shown in a run's summary; more are counted in one line.
const SUMMARY_KINDS: usize = 8;

/// Print a run's failures on stderr, grouped by kind with one example path each, then where
/// to find them all.
pub(crate) fn print_summary(failures: &[simcase_ingest::Failure], index: &Path) {
    if failures.is_empty() {
        return;
    }
    // By path, so that each kind's example does not depend on the decode threads' timing.
    let mut sorted: Vec<&simcase_ingest::Failure> = failures.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let groups = by_kind(sorted.iter().map(|f| (f.kind.as_str(), f.path.as_str())));
    eprintln!("{} failed:", files(failures.len()));
    for (kind, n, path) in groups.iter().take(SUMMARY_KINDS) {
        eprintln!("  {kind} ({}), e.g. {path}", files(*n));
    }
    let rest = &groups[groups.len().min(SUMMARY_KINDS)..];
    let more = if rest.is_empty() {
        String::new()
    } else {
        let n: usize = rest.iter().map(|g| g.1).sum();
        format!("… and {} more kinds ({}); ", rest.len(), files(n))
    };
    eprintln!(
        "  {more}`simcase errors --index {}` lists them all",
        index.display()
    );
}

pub(crate) fn run(a: &ErrorsArgs) -> Result<()> {
    let mut rows: Vec<Failure> = failures(&a.index)?;
    if a.by_path {
        rows.sort_by(|x, y| x.path.cmp(&y.path));
    }
    let groups = by_kind(rows.iter().map(|f| (f.kind.as_str(), f.path.as_str())));
    if a.json {
        let errors: Vec<_> = rows
            .iter()
            .map(|f| {
                serde_json::json!({
                    "path": f.path, "kind": f.kind, "reason": f.reason, "at": f.at,
                })
            })
            .collect();
        let by_kind: serde_json::Map<String, serde_json::Value> = groups
            .iter()
            .map(|(k, n, _)| (k.to_string(), (*n).into()))
            .collect();
        let out = serde_json::json!({
            "errors": errors, "by_kind": by_kind, "total": rows.len(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no failed files in {}", a.index.display());
        return Ok(());
    }
    for f in &rows {
        println!(
            "{} UTC  {}  {}",
            f.at,
            simcase_ingest::failure::printable(&f.path),
            simcase_ingest::failure::one_line(&f.reason)
        );
    }
    println!(
        "\n{} failed in {}, by kind:",
        files(rows.len()),
        a.index.display()
    );
    let width = groups
        .iter()
        .map(|g| g.1.to_string().len())
        .max()
        .unwrap_or(1);
    for (kind, n, _) in &groups {
        println!("  {n:>width$}  {kind}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_counted_most_frequent_first_with_their_first_path() {
        let g = by_kind([
            ("b", "/1"),
            ("a", "/2"),
            ("b", "/3"),
            ("c", "/4"),
            ("a", "/5"),
            ("b", "/6"),
        ]);
        assert_eq!(g, vec![("b", 3, "/1"), ("a", 2, "/2"), ("c", 1, "/4")]);
    }
}
