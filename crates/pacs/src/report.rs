//! A search filed back into the archive: the query's origin and the ranked hits turned into
//! [`sr::Search`] (SOP classes from the index, or asked of the PACS), written as a
//! Comprehensive SR and stored by STOW-RS in the query's study. One function, so `simcase
//! search --report-to-pacs` and the server's `POST /api/report` file the same document.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use simcase_index::Snapshot;
use simcase_query::{Hit, Origin};
use std::path::Path;

use crate::sr::{self, Found, ImageRef, Patient, Search};
use crate::{DicomWeb, Instance};

/// What was filed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Filed {
    /// The new SR's SOP Instance UID.
    pub sr_uid: String,
    /// The study it was filed in (the query's).
    pub study_uid: String,
    /// Results referenced.
    pub results: usize,
    /// Results left out: no DICOM UIDs (a PNG, a NIfTI slice) or no SOP class to be found.
    pub left_out: usize,
}

/// The attributes asked of the PACS for the query instance: SOP Class UID, then the patient
/// module's name, id, birth date and sex (they go back into the same PACS only).
const QUERY_TAGS: [&str; 5] = ["00080016", "00100010", "00100020", "00100030", "00100040"];

/// The query's study, series and SOP Instance UIDs, when it is an archived instance (a
/// report can be filed only in the query's own study).
pub fn archived(origin: &Origin) -> Option<(&String, &String, &String)> {
    match (&origin.study_uid, &origin.series_uid, &origin.sop_uid) {
        (Some(st), Some(se), Some(so)) => Some((st, se, so)),
        _ => None,
    }
}

/// Files the search of `origin` (an archived instance, [`archived`]) with `hits`, ranked in
/// `reader`, the index folder `index`, as an SR in `dw`; the SR names the database by the
/// folder's name and its size.
pub fn file(
    dw: &DicomWeb,
    reader: &Snapshot,
    index: &Path,
    origin: &Origin,
    hits: &[Hit],
) -> Result<Filed> {
    let Some((study, series, sop)) = archived(origin) else {
        bail!(
            "the query must be an archived instance (dicomweb+…/instances/I, sop_uid=) or an \
             indexed DICOM item (id:N), for the report to be filed in its study"
        );
    };
    let attrs = dw.attributes(&instance(study, series, sop), &QUERY_TAGS)?;
    let query = ImageRef {
        sop_class: text(&attrs, "00080016").context("the PACS gives the query no SOP Class UID")?,
        sop_instance: sop.clone(),
        study: study.clone(),
        series: series.clone(),
        frame: None,
    };
    let patient = Patient {
        name: attrs["00100010"]["Value"][0]["Alphabetic"]
            .as_str()
            .map(String::from),
        id: text(&attrs, "00100020"),
        birth_date: text(&attrs, "00100030"),
        sex: text(&attrs, "00100040"),
    };
    let mut results = Vec::new();
    let mut left_out = 0usize;
    for h in hits {
        let (Some(st), Some(se), Some(so)) = (&h.study_uid, &h.series_uid, &h.sop_uid) else {
            left_out += 1;
            continue;
        };
        let stored = reader.item(h.id)?.and_then(|it| {
            it.meta
                .extra
                .get("sop_class_uid")
                .and_then(|v| v.as_str())
                .map(String::from)
        });
        // Items indexed before SOP classes were stored: ask the PACS.
        let class = stored.or_else(|| {
            dw.attributes(&instance(st, se, so), &["00080016"])
                .ok()
                .and_then(|v| text(&v, "00080016"))
        });
        let Some(class) = class else {
            left_out += 1;
            continue;
        };
        results.push(Found {
            rank: h.rank,
            score: h.score,
            image: ImageRef {
                sop_class: class,
                sop_instance: so.clone(),
                study: st.clone(),
                series: se.clone(),
                // DICOM frames count from 1; a single-frame object names none.
                frame: h.frames.filter(|&n| n > 1).and(h.frame).map(|f| f + 1),
            },
            label: h.label.clone(),
        });
    }
    let search = Search {
        query,
        patient,
        model: reader.settings().model.clone(),
        database: format!("{} ({} items)", folder_name(index), reader.len()),
        results,
    };
    let now = sr::utc_now();
    let (bytes, sr_uid) = sr::build(&search, (&now.0, &now.1))?;
    dw.store(&bytes)?;
    Ok(Filed {
        sr_uid,
        study_uid: study.clone(),
        results: search.results.len(),
        left_out,
    })
}

/// The index folder's own name (its whole path when it has none, as `/`).
fn folder_name(index: &Path) -> String {
    index.file_name().map_or_else(
        || index.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn instance(study: &str, series: &str, sop: &str) -> Instance {
    Instance {
        study: study.to_string(),
        series: series.to_string(),
        sop: sop.to_string(),
    }
}

/// The first value of `tag` in a DICOM JSON object, as text.
fn text(v: &Value, tag: &str) -> Option<String> {
    v[tag]["Value"][0].as_str().map(String::from)
}
