//! Search results back into the PACS as a DICOM Comprehensive SR: the query image, the model,
//! the reference database, and each retrieved image with its rank and similarity score, as
//! image references the viewer can open. Why an SR: image-retrieval results that stay on a
//! workstation go unused; an SR filed in the query's own study is where the radiologist looks.
//!
//! The document is filed in the query's study, as a new series (Modality `SR`), with the
//! query's patient attributes as the PACS itself holds them (read by QIDO-RS from the PACS
//! the SR goes to: they travel from the archive back to it, and are not logged or kept).
//! Concept names use a private coding scheme (`99SIMCASE`), as DICOM allows for content that no
//! standard template describes.

use anyhow::{Context, Result};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// Comprehensive SR Storage.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
/// The coding scheme of the concept names below.
pub const SCHEME: &str = "99SIMCASE";

/// The concept names of the document's content items: (code value, meaning).
pub mod concept {
    /// The document's title.
    pub const TITLE: (&str, &str) = ("SC-0001", "Similar case search");
    /// The model that embedded query and archive.
    pub const MODEL: (&str, &str) = ("SC-0002", "Embedding model");
    /// The index searched.
    pub const DATABASE: (&str, &str) = ("SC-0003", "Reference database");
    /// The query image.
    pub const QUERY: (&str, &str) = ("SC-0004", "Query image");
    /// One result.
    pub const RESULT: (&str, &str) = ("SC-0005", "Similar case");
    /// A result's image.
    pub const IMAGE: (&str, &str) = ("SC-0006", "Retrieved image");
    /// A result's cosine similarity to the query.
    pub const SCORE: (&str, &str) = ("SC-0007", "Similarity score");
    /// A result's rank.
    pub const RANK: (&str, &str) = ("SC-0008", "Rank");
    /// A result's stored label.
    pub const LABEL: (&str, &str) = ("SC-0009", "Label");
}

/// One image a document references.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRef {
    /// SOP Class UID.
    pub sop_class: String,
    /// SOP Instance UID.
    pub sop_instance: String,
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// The 1-based frame, for a frame of a multi-frame object.
    pub frame: Option<u32>,
}

/// One retrieved image.
#[derive(Clone, Debug)]
pub struct Found {
    /// 1-based rank.
    pub rank: usize,
    /// Cosine similarity with the query.
    pub score: f32,
    /// The image.
    pub image: ImageRef,
    /// Its stored label, if any.
    pub label: Option<String>,
}

/// The query's patient, as the PACS holds it (all optional: DICOM's type 2 attributes).
#[derive(Clone, Debug, Default)]
pub struct Patient {
    /// Patient's Name (0010,0010).
    pub name: Option<String>,
    /// Patient ID (0010,0020).
    pub id: Option<String>,
    /// Patient's Birth Date (0010,0030).
    pub birth_date: Option<String>,
    /// Patient's Sex (0010,0040).
    pub sex: Option<String>,
}

/// What one search's document says.
#[derive(Clone, Debug)]
pub struct Search {
    /// The query image (its study is the document's).
    pub query: ImageRef,
    /// Its patient.
    pub patient: Patient,
    /// The model's name.
    pub model: String,
    /// The reference database (the index and its size).
    pub database: String,
    /// The results, best first.
    pub results: Vec<Found>,
}

/// A new UID under the UUID root `2.25` (ISO/IEC 9834-8): 128 random bits, in decimal.
pub fn new_uid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    // A version-4 UUID's fixed bits, so the number is one a UUID can be.
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Ok(format!("2.25.{}", u128::from_be_bytes(b)))
}

fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code((value, meaning): (&str, &str)) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, SCHEME),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A content item: relationship CONTAINS, its value type and concept name, then `rest`.
fn item(
    value_type: &str,
    name: (&str, &str),
    rest: Vec<DataElement<InMemDicomObject>>,
) -> InMemDicomObject {
    let mut o = InMemDicomObject::from_element_iter([
        el(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
        el(tags::VALUE_TYPE, VR::CS, value_type),
        seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(name)]),
    ]);
    for e in rest {
        o.put(e);
    }
    o
}

fn text_item(name: (&str, &str), value: &str) -> InMemDicomObject {
    item("TEXT", name, vec![el(tags::TEXT_VALUE, VR::UT, value)])
}

fn image_item(name: (&str, &str), r: &ImageRef) -> InMemDicomObject {
    let mut refd = InMemDicomObject::from_element_iter([
        el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, r.sop_class.as_str()),
        el(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            r.sop_instance.as_str(),
        ),
    ]);
    if let Some(f) = r.frame {
        refd.put(el(tags::REFERENCED_FRAME_NUMBER, VR::IS, f.to_string()));
    }
    item(
        "IMAGE",
        name,
        vec![seq(tags::REFERENCED_SOP_SEQUENCE, vec![refd])],
    )
}

fn num_item(name: (&str, &str), value: String, unit: (&str, &str)) -> InMemDicomObject {
    let units = InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, unit.0),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "UCUM"),
        el(tags::CODE_MEANING, VR::LO, unit.1),
    ]);
    let measured = InMemDicomObject::from_element_iter([
        el(tags::NUMERIC_VALUE, VR::DS, value),
        seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![units]),
    ]);
    item(
        "NUM",
        name,
        vec![seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured])],
    )
}

/// A score as a DS value (at most 16 characters): six decimals.
pub fn score_text(s: f32) -> String {
    format!("{s:.6}")
}

/// The evidence sequence: every referenced instance, by study and series.
fn evidence(refs: &[&ImageRef]) -> Vec<InMemDicomObject> {
    use std::collections::BTreeMap;
    let mut by: BTreeMap<&str, BTreeMap<&str, Vec<&ImageRef>>> = BTreeMap::new();
    for r in refs {
        let series = by
            .entry(r.study.as_str())
            .or_default()
            .entry(r.series.as_str())
            .or_default();
        if !series.iter().any(|x| x.sop_instance == r.sop_instance) {
            series.push(r);
        }
    }
    by.into_iter()
        .map(|(study, series)| {
            let series_items = series
                .into_iter()
                .map(|(uid, instances)| {
                    let sops = instances
                        .into_iter()
                        .map(|r| {
                            InMemDicomObject::from_element_iter([
                                el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, r.sop_class.as_str()),
                                el(
                                    tags::REFERENCED_SOP_INSTANCE_UID,
                                    VR::UI,
                                    r.sop_instance.as_str(),
                                ),
                            ])
                        })
                        .collect();
                    InMemDicomObject::from_element_iter([
                        el(tags::SERIES_INSTANCE_UID, VR::UI, uid),
                        seq(tags::REFERENCED_SOP_SEQUENCE, sops),
                    ])
                })
                .collect();
            InMemDicomObject::from_element_iter([
                el(tags::STUDY_INSTANCE_UID, VR::UI, study),
                seq(tags::REFERENCED_SERIES_SEQUENCE, series_items),
            ])
        })
        .collect()
}

/// The document for `s` as a DICOM file (explicit VR little endian), with its SOP Instance
/// UID. `now` is `(YYYYMMDD, HHMMSS)`.
pub fn build(s: &Search, now: (&str, &str)) -> Result<(Vec<u8>, String)> {
    let (sop, series) = (new_uid()?, new_uid()?);
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut content = vec![
        text_item(concept::MODEL, &s.model),
        text_item(concept::DATABASE, &s.database),
        image_item(concept::QUERY, &s.query),
    ];
    for f in &s.results {
        let mut parts = vec![
            image_item(concept::IMAGE, &f.image),
            num_item(concept::SCORE, score_text(f.score), ("1", "no units")),
            num_item(concept::RANK, f.rank.to_string(), ("{rank}", "rank")),
        ];
        if let Some(l) = &f.label {
            parts.push(text_item(concept::LABEL, l));
        }
        content.push(item(
            "CONTAINER",
            concept::RESULT,
            vec![
                el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
                seq(tags::CONTENT_SEQUENCE, parts),
            ],
        ));
    }
    let mut refs: Vec<&ImageRef> = vec![&s.query];
    refs.extend(s.results.iter().map(|f| &f.image));
    let obj = InMemDicomObject::from_element_iter([
        el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        el(tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
        el(tags::STUDY_DATE, VR::DA, now.0),
        el(tags::CONTENT_DATE, VR::DA, now.0),
        el(tags::STUDY_TIME, VR::TM, now.1),
        el(tags::CONTENT_TIME, VR::TM, now.1),
        el(tags::ACCESSION_NUMBER, VR::SH, ""),
        el(tags::MODALITY, VR::CS, "SR"),
        el(tags::MANUFACTURER, VR::LO, "simcase"),
        el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
        el(tags::SERIES_DESCRIPTION, VR::LO, "simcase similar cases"),
        el(tags::PATIENT_NAME, VR::PN, opt(&s.patient.name)),
        el(tags::PATIENT_ID, VR::LO, opt(&s.patient.id)),
        el(tags::PATIENT_BIRTH_DATE, VR::DA, opt(&s.patient.birth_date)),
        el(tags::PATIENT_SEX, VR::CS, opt(&s.patient.sex)),
        el(tags::STUDY_INSTANCE_UID, VR::UI, s.query.study.as_str()),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()),
        el(tags::STUDY_ID, VR::SH, ""),
        el(tags::SERIES_NUMBER, VR::IS, "999"),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(concept::TITLE)]),
        el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        el(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        el(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
        seq(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            evidence(&refs),
        ),
        seq(tags::CONTENT_SEQUENCE, content),
    ]);
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .context("the SR's file meta")?;
    let mut out = Vec::new();
    file.write_all(&mut out).context("writing the SR")?;
    Ok((out, sop))
}

/// Today's date and the time now, in UTC, as DICOM writes them (`YYYYMMDD`, `HHMMSS`).
pub fn utc_now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    utc_of(secs)
}

/// [`utc_now`] of a Unix time (days to a civil date: H. Hinnant's algorithm).
fn utc_of(secs: i64) -> (String, String) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_and_uids_are_uuid_derived() {
        assert_eq!(utc_of(0), ("19700101".into(), "000000".into()));
        assert_eq!(
            utc_of(951_782_400 + 3661),
            ("20000229".into(), "010101".into())
        );
        assert_eq!(utc_of(1_796_256_000), ("20261203".into(), "000000".into()));
        let (a, b) = (new_uid().unwrap(), new_uid().unwrap());
        assert!(a != b && a.starts_with("2.25.") && a.len() <= 64, "{a}");
        assert!(a[5..].bytes().all(|c| c.is_ascii_digit()) && !a[5..].starts_with('0'));
    }

    #[test]
    fn a_document_reads_back_with_its_references_and_scores() {
        let r = |i: u32| ImageRef {
            sop_class: "1.2.840.10008.5.1.4.1.1.4".into(),
            sop_instance: format!("1.2.3.{i}"),
            study: "1.2.3".into(),
            series: "1.2.3.9".into(),
            frame: (i == 2).then_some(3),
        };
        let s = Search {
            query: r(1),
            patient: Patient {
                name: Some("Doe^Jane".into()),
                ..Default::default()
            },
            model: "dinov2-s".into(),
            database: "ct (12 items)".into(),
            results: vec![Found {
                rank: 1,
                score: 0.875,
                image: r(2),
                label: Some("CT/chest/nodule".into()),
            }],
        };
        let (bytes, sop) = build(&s, ("20261203", "101500")).unwrap();
        let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        let get = |t| obj.element(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(get(tags::SOP_INSTANCE_UID), sop);
        assert_eq!(get(tags::SOP_CLASS_UID), COMPREHENSIVE_SR);
        assert_eq!(get(tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(get(tags::MODALITY), "SR");
        let content = obj
            .element(tags::CONTENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(content.len(), 4);
        let result = content[3]
            .element(tags::CONTENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        let image = result[0]
            .element(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        let s = |o: &InMemDicomObject, t| o.element(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(s(&image[0], tags::REFERENCED_SOP_INSTANCE_UID), "1.2.3.2");
        assert_eq!(s(&image[0], tags::REFERENCED_FRAME_NUMBER), "3");
        let measured = result[1]
            .element(tags::MEASURED_VALUE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(s(&measured[0], tags::NUMERIC_VALUE), "0.875000");
    }
}
