//! Ingest into a collection: [`simcase_ingest::run`] writes through this [`Sink`] as it does
//! into a local index. The content key is the primary key and batches are upserted, so a
//! re-run inserts nothing twice; a batch counts as committed only once Milvus has flushed it.
//! Failed files are logged by the run and listed in its summary; a collection keeps no errors
//! table, so nothing of a failed file is stored.

use crate::Collection;
use anyhow::Result;
use simcase_index::{ItemMeta, LabelOutcome, LabelUpdate};
use simcase_ingest::{Known, Sink};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Whether `keys` holds `key` or a key `key` + `sep` + anything, for any of `seps`.
fn has_prefixed(keys: &BTreeSet<String>, key: &str, seps: &[char]) -> bool {
    if keys.contains(key) {
        return true;
    }
    seps.iter().any(|sep| {
        let p = format!("{key}{sep}");
        keys.range(p.clone()..)
            .next()
            .is_some_and(|k| k.starts_with(&p))
    })
}

impl Sink for Collection {
    fn known_files(&self) -> Result<Known> {
        let keys = Arc::new(self.keys()?);
        let k2 = keys.clone();
        Ok(Known::new(
            move |key| Ok(has_prefixed(&keys, key, &['#'])),
            move |hash| Ok(has_prefixed(&k2, hash, &['#', '@'])),
        ))
    }

    fn settings(&self) -> &simcase_index::Settings {
        Collection::settings(self)
    }

    fn add(&mut self, batch: &[(ItemMeta, Vec<f32>)]) -> Result<()> {
        self.upsert(batch)
    }

    fn record_error(&self, _path: &str, _kind: &str, _reason: &str) -> Result<()> {
        Ok(())
    }

    fn clear_error(&self, _path: &str) -> Result<()> {
        Ok(())
    }

    fn update_labels(
        &mut self,
        updates: &[LabelUpdate],
        relabel: bool,
    ) -> Result<Vec<LabelOutcome>> {
        let mut out = Vec::with_capacity(updates.len());
        let mut changed: Vec<(ItemMeta, Vec<f32>)> = Vec::new();
        for u in updates {
            let mut o = LabelOutcome::default();
            if u.hash.is_empty() {
                out.push(o);
                continue;
            }
            let mut items = self.file_items(&u.hash)?;
            items.sort_by(|a, b| a.0.hash.cmp(&b.0.hash));
            for (mut meta, v) in items {
                o.items += 1;
                if o.path.is_empty() {
                    o.path = meta.path.clone();
                }
                let mut d = Vec::new();
                if meta.merge_labels(&u.labels, relabel, &mut d) {
                    changed.push((meta, v));
                    o.changed += 1;
                }
                for x in d {
                    if !o.disagreements.iter().any(|y| y.field == x.field) {
                        o.disagreements.push(x);
                    }
                }
            }
            out.push(o);
        }
        for chunk in changed.chunks(256) {
            self.upsert(chunk)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes_find_parts_but_not_other_hashes() {
        let keys: super::BTreeSet<String> = ["aa", "ab#1", "ac@axial#0", "acd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let has = |k: &str, s: &[char]| super::has_prefixed(&keys, k, s);
        assert!(has("aa", &['#']) && has("ab", &['#']) && !has("a", &['#']));
        assert!(has("ac@axial", &['#']) && !has("ac", &['#']) && has("ac", &['#', '@']));
        assert!(!has("ad", &['#', '@']));
    }
}
