//! simcase and the hospital's archive. [`dicomweb`]: find an archive's instances (QIDO-RS) and
//! fetch them (WADO-RS) as ingest sources, so `simcase index dicomweb+http://…` indexes a PACS
//! as it indexes a folder, incrementally by SOP Instance UID. [`listen`]: a DICOM node that
//! indexes what is pushed to it (C-STORE). [`sr`]: a search written as a DICOM SR, which
//! [`report`] files in the query's study.

pub mod dicomweb;
pub mod listen;
pub mod report;
pub mod sr;

pub use dicomweb::{is_dicomweb, DicomWeb, Filter, Instance};

use std::path::PathBuf;
use std::sync::Arc;

/// The instances of `dw` that `filter` selects, as ingest sources: each item's path is its
/// instance URL, and its study, series and SOP Instance UIDs are set before the fetch (so a
/// caller can leave out those it holds; the decoded object's own UIDs are stored). With
/// `keep`, each fetched instance is also written there as `SOP.dcm` (atomically), before it
/// is decoded: a copy that fails to be written fails that instance.
pub fn sources(
    dw: &Arc<DicomWeb>,
    filter: &Filter,
    keep: Option<&std::path::Path>,
) -> anyhow::Result<Vec<simcase_ingest::Source>> {
    Ok(dw
        .search(filter)?
        .into_iter()
        .map(|i| {
            let mut s = simcase_ingest::Source {
                path: PathBuf::from(dw.instance_url(&i)),
                ..Default::default()
            };
            s.meta.study_uid = Some(i.study.clone());
            s.meta.series_uid = Some(i.series.clone());
            s.meta.sop_uid = Some(i.sop.clone());
            let dw = dw.clone();
            let keep = keep.map(|k| k.join(format!("{}.dcm", i.sop)));
            s.fetch = Some(simcase_ingest::Fetch(Arc::new(move || {
                let bytes = dw.fetch(&i)?;
                if let Some(to) = &keep {
                    simcase_index::store::durable::write_atomic(to, |mut f| {
                        std::io::Write::write_all(&mut f, &bytes)?;
                        Ok(f)
                    })
                    .map_err(|e| anyhow::anyhow!("keeping a copy in {}: {e:#}", to.display()))?;
                }
                Ok(bytes)
            })));
            s
        })
        .collect())
}
