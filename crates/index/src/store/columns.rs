//! What the index stores about each item, declared once: [`ItemMeta`] and [`Column`], the list
//! of optional text columns that the SQLite schema, the row reader and writer, search filters,
//! the API's counts and the CLI all go through. Adding a column means adding one variant here.
//! Also how a manifest row's labels merge into a stored item ([`ItemMeta::merge_labels`]):
//! re-running a manifest fills what is empty and reports, rather than overwrites, what differs.

use serde::{Deserialize, Serialize};

/// Labels and provenance of one indexed image.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ItemMeta {
    /// The file the item was read from (the server leaves it out unless asked, by clearing it:
    /// an empty path is not serialised).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Content id (SHA-256 of the file, with the frame or slice appended for parts of a file).
    pub hash: String,
    /// The container format (`png`, `jpeg`, `dicom`, `nifti`, `nrrd`).
    pub format: String,
    /// Imaging modality (`CT`, `MR`, `US`, `XR`, …).
    pub modality: Option<String>,
    /// Anatomy, the second part of a `modality/anatomy/pathology` label.
    pub anatomy: Option<String>,
    /// Pathology, the third part of a label.
    pub pathology: Option<String>,
    /// The full label, usually `modality/anatomy/pathology`.
    pub label: Option<String>,
    /// `train`, `val` or `test`, from a manifest.
    pub split: Option<String>,
    /// The data set or archive the item came from.
    pub source: Option<String>,
    /// Salted hash of the patient id; never the raw value.
    pub patient_key: Option<String>,
    /// DICOM StudyInstanceUID.
    pub study_uid: Option<String>,
    /// DICOM SeriesInstanceUID.
    pub series_uid: Option<String>,
    /// DICOM SOPInstanceUID.
    pub sop_uid: Option<String>,
    /// DICOM BodyPartExamined.
    pub body_part: Option<String>,
    /// Other manifest columns (and DICOM extras such as `study_date`), as a JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The optional text columns of an item, in schema order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    /// [`ItemMeta::modality`]
    Modality,
    /// [`ItemMeta::anatomy`]
    Anatomy,
    /// [`ItemMeta::pathology`]
    Pathology,
    /// [`ItemMeta::label`]
    Label,
    /// [`ItemMeta::split`]
    Split,
    /// [`ItemMeta::source`]
    Source,
    /// [`ItemMeta::patient_key`]
    PatientKey,
    /// [`ItemMeta::study_uid`]
    StudyUid,
    /// [`ItemMeta::series_uid`]
    SeriesUid,
    /// [`ItemMeta::sop_uid`]
    SopUid,
    /// [`ItemMeta::body_part`]
    BodyPart,
}

impl Column {
    /// Every column, in the order of the `items` table.
    pub const ALL: [Column; 11] = [
        Self::Modality,
        Self::Anatomy,
        Self::Pathology,
        Self::Label,
        Self::Split,
        Self::Source,
        Self::PatientKey,
        Self::StudyUid,
        Self::SeriesUid,
        Self::SopUid,
        Self::BodyPart,
    ];

    /// The columns a search may filter on and the API counts: labels and provenance, not
    /// identifiers (patient keys and UIDs are grouped by, not listed).
    pub const FILTERS: [Column; 7] = [
        Self::Modality,
        Self::Anatomy,
        Self::Pathology,
        Self::Label,
        Self::Source,
        Self::Split,
        Self::BodyPart,
    ];

    /// The columns a manifest row sets: labels, split, source and patient key. Re-running a
    /// manifest updates these (and the manifest's other columns, kept in `extra`).
    pub const MANIFEST: [Column; 7] = [
        Self::Modality,
        Self::Anatomy,
        Self::Pathology,
        Self::Label,
        Self::Split,
        Self::Source,
        Self::PatientKey,
    ];

    /// The column's name in SQLite, in filters and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Modality => "modality",
            Self::Anatomy => "anatomy",
            Self::Pathology => "pathology",
            Self::Label => "label",
            Self::Split => "split",
            Self::Source => "source",
            Self::PatientKey => "patient_key",
            Self::StudyUid => "study_uid",
            Self::SeriesUid => "series_uid",
            Self::SopUid => "sop_uid",
            Self::BodyPart => "body_part",
        }
    }

    /// The column called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The column's value in `m`.
    pub fn get(self, m: &ItemMeta) -> Option<&str> {
        self.field(m).as_deref()
    }

    fn field(self, m: &ItemMeta) -> &Option<String> {
        match self {
            Self::Modality => &m.modality,
            Self::Anatomy => &m.anatomy,
            Self::Pathology => &m.pathology,
            Self::Label => &m.label,
            Self::Split => &m.split,
            Self::Source => &m.source,
            Self::PatientKey => &m.patient_key,
            Self::StudyUid => &m.study_uid,
            Self::SeriesUid => &m.series_uid,
            Self::SopUid => &m.sop_uid,
            Self::BodyPart => &m.body_part,
        }
    }

    /// The column's slot in `m`, to set it.
    pub fn slot(self, m: &mut ItemMeta) -> &mut Option<String> {
        match self {
            Self::Modality => &mut m.modality,
            Self::Anatomy => &mut m.anatomy,
            Self::Pathology => &mut m.pathology,
            Self::Label => &mut m.label,
            Self::Split => &mut m.split,
            Self::Source => &mut m.source,
            Self::PatientKey => &mut m.patient_key,
            Self::StudyUid => &mut m.study_uid,
            Self::SeriesUid => &mut m.series_uid,
            Self::SopUid => &mut m.sop_uid,
            Self::BodyPart => &mut m.body_part,
        }
    }
}

/// Keys in [`ItemMeta::extra`] that place an item inside its file: written at ingest, read by
/// whatever re-decodes the item (thumbnails) or groups by volume.
pub mod part_keys {
    /// Frame number of a multi-frame DICOM object.
    pub const FRAME: &str = "frame";
    /// How many frames the object has.
    pub const FRAMES: &str = "frames";
    /// Content id shared by a volume's slices.
    pub const VOLUME: &str = "volume";
    /// Slice number across `AXIS`.
    pub const SLICE: &str = "slice";
    /// How many slices that axis has.
    pub const SLICES: &str = "slices";
    /// The slicing axis (`axial`, `coronal`, `sagittal`).
    pub const AXIS: &str = "axis";
}

/// A stored value that a manifest row would change: the field, the stored value and the
/// manifest's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// The column (or `extra` key).
    pub field: String,
    /// What the index holds.
    pub stored: String,
    /// What the manifest says.
    pub manifest: String,
}

/// Text of an `extra` value, `None` when it is null or empty.
fn extra_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

impl ItemMeta {
    /// Merge what a manifest row says (`from`'s [`Column::MANIFEST`] values and `extra`
    /// columns) into this stored item. An empty stored value is filled; an equal one is left;
    /// a different one is kept and reported in `disagreements`, unless `relabel`, when the
    /// manifest wins (and it is still reported). Empty manifest values never clear anything,
    /// and the keys that place an item in its file ([`part_keys`]) are never touched. Returns
    /// whether anything changed.
    pub fn merge_labels(
        &mut self,
        from: &ItemMeta,
        relabel: bool,
        disagreements: &mut Vec<Disagreement>,
    ) -> bool {
        let mut changed = false;
        for c in Column::MANIFEST {
            let Some(new) = c.get(from).filter(|v| !v.is_empty()) else {
                continue;
            };
            let slot = c.slot(self);
            match slot.as_deref() {
                Some(old) if old == new => {}
                Some(old) if !old.is_empty() => {
                    disagreements.push(Disagreement {
                        field: c.name().into(),
                        stored: old.into(),
                        manifest: new.into(),
                    });
                    if relabel {
                        *slot = Some(new.into());
                        changed = true;
                    }
                }
                _ => {
                    *slot = Some(new.into());
                    changed = true;
                }
            }
        }
        const PLACING: [&str; 6] = [
            part_keys::FRAME,
            part_keys::FRAMES,
            part_keys::VOLUME,
            part_keys::SLICE,
            part_keys::SLICES,
            part_keys::AXIS,
        ];
        for (k, v) in &from.extra {
            let Some(new) = extra_text(v) else { continue };
            if PLACING.contains(&k.as_str()) {
                continue;
            }
            match self.extra.get(k).and_then(extra_text) {
                Some(old) if old == new => {}
                Some(old) => {
                    disagreements.push(Disagreement {
                        field: k.clone(),
                        stored: old,
                        manifest: new,
                    });
                    if relabel {
                        self.extra.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
                None => {
                    self.extra.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    fn extra_u32(&self, key: &str) -> Option<u32> {
        self.extra.get(key)?.as_u64()?.try_into().ok()
    }

    /// The frame or slice this item is, if it is one of several in its file.
    pub fn part_index(&self) -> Option<u32> {
        self.extra_u32(part_keys::FRAME)
            .or_else(|| self.extra_u32(part_keys::SLICE))
    }

    /// The slicing axis of a volume slice (`axial`, `coronal`, `sagittal`).
    pub fn slice_axis(&self) -> Option<&str> {
        self.extra.get(part_keys::AXIS)?.as_str()
    }

    /// The volume a slice belongs to.
    pub fn volume(&self) -> Option<&str> {
        self.extra.get(part_keys::VOLUME)?.as_str()
    }

    /// The key in [`ItemMeta::extra`] of the decoded pixels' hash ([`ItemMeta::set_pixel_hash`]).
    pub const PIXEL_HASH: &'static str = "pixel_hash";

    /// The hash of the item's decoded pixels, if it was stored (indexes before it have none).
    pub fn pixel_hash(&self) -> Option<&str> {
        self.extra.get(Self::PIXEL_HASH)?.as_str()
    }

    /// Store the hash of the decoded image (`width` × `height`, samples `data`): equal for the
    /// same pixels whatever the file's encoding (transfer syntax, container), so that search
    /// can show stored copies of one image once. XXH3-128 of the size and the samples' bits
    /// (little-endian), as 32 hex digits.
    ///
    /// Not SHA-256 (which it was until 2026-12): hashing 8–16 MB of f32 samples per X-ray took
    /// 40% of a decode thread at 1.7 GB/s, and ingest shares 2 cores with the embedder; XXH3 runs
    /// at 10–20 GB/s. It only groups copies for display (the content key, which identifies a
    /// file, stays SHA-256), and an accidental collision among 10^7 images has odds of about
    /// 10^-25. Items hashed before keep their SHA-256 values: a copy indexed before the change
    /// and one indexed after it are listed apart.
    pub fn set_pixel_hash(&mut self, width: usize, height: usize, data: &[f32]) {
        let mut h = twox_hash::XxHash3_128::new();
        h.write(&(width as u64).to_le_bytes());
        h.write(&(height as u64).to_le_bytes());
        if cfg!(target_endian = "little") {
            h.write(bytemuck::cast_slice(data));
        } else {
            let mut buf = [0u8; 16384];
            for chunk in data.chunks(buf.len() / 4) {
                for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
                    b.copy_from_slice(&v.to_bits().to_le_bytes());
                }
                h.write(&buf[..4 * chunk.len()]);
            }
        }
        let hex = format!("{:032x}", h.finish_128());
        self.extra.insert(Self::PIXEL_HASH.into(), hex.into());
    }
}

/// A stored item: its row in `vectors.f32` and its metadata.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Item {
    /// The item's row, which is also its id in searches and the API.
    pub id: u64,
    /// What is known about it.
    #[serde(flatten)]
    pub meta: ItemMeta,
}

/// The `items` table, from [`Column::ALL`].
pub(super) fn create_items_sql() -> String {
    let cols: String = Column::ALL
        .iter()
        .map(|c| format!(", {} TEXT", c.name()))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS items(
            row INTEGER PRIMARY KEY, path TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
            format TEXT NOT NULL{cols}, extra TEXT,
            added_at TEXT NOT NULL DEFAULT (datetime('now')));"
    )
}

/// `row, path, hash, format, <columns>, extra`: the select list [`row_to_item`] reads and the
/// insert list [`insert_sql`] writes.
pub(super) fn select_list() -> String {
    let cols: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    format!("row, path, hash, format, {}, extra", cols.join(", "))
}

/// `INSERT INTO items(<select list>) VALUES (?1, …)`.
pub(super) fn insert_sql() -> String {
    let n = 5 + Column::ALL.len();
    let params: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO items({}) VALUES ({})",
        select_list(),
        params.join(", ")
    )
}

/// The values [`insert_sql`] binds for one item at `row`.
pub(super) fn insert_values(row: i64, m: &ItemMeta) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.to_string()));
    let mut v = vec![
        Value::Integer(row),
        Value::Text(m.path.clone()),
        Value::Text(m.hash.clone()),
        Value::Text(m.format.clone()),
    ];
    v.extend(Column::ALL.iter().map(|c| text(c.get(m))));
    let extra = (!m.extra.is_empty())
        .then(|| serde_json::to_string(&m.extra).ok())
        .flatten();
    v.push(text(extra.as_deref()));
    v
}

/// `UPDATE items SET <columns>, extra WHERE row = ?`: rewrites an item's labels (never its
/// path, hash, format or vector).
pub(super) fn update_sql() -> String {
    let sets: Vec<String> = Column::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", c.name(), i + 1))
        .collect();
    let n = Column::ALL.len();
    format!(
        "UPDATE items SET {}, extra = ?{} WHERE row = ?{}",
        sets.join(", "),
        n + 1,
        n + 2
    )
}

/// The values [`update_sql`] binds for item `row`.
pub(super) fn update_values(row: i64, m: &ItemMeta) -> Vec<rusqlite::types::Value> {
    let mut v = insert_values(row, m).split_off(4);
    v.push(rusqlite::types::Value::Integer(row));
    v
}

/// One row of [`select_list`] back into an [`Item`].
pub(super) fn row_to_item(r: &rusqlite::Row) -> rusqlite::Result<Item> {
    let mut meta = ItemMeta {
        path: r.get(1)?,
        hash: r.get(2)?,
        format: r.get(3)?,
        ..Default::default()
    };
    for (i, c) in Column::ALL.iter().enumerate() {
        *c.slot(&mut meta) = r.get(4 + i)?;
    }
    let extra: Option<String> = r.get(4 + Column::ALL.len())?;
    meta.extra = extra
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    Ok(Item {
        id: r.get::<_, i64>(0)? as u64,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_round_trips_through_its_name_and_slot() {
        let mut m = ItemMeta::default();
        for (i, c) in Column::ALL.into_iter().enumerate() {
            assert_eq!(Column::from_name(c.name()), Some(c));
            *c.slot(&mut m) = Some(format!("v{i}"));
        }
        for (i, c) in Column::ALL.into_iter().enumerate() {
            assert_eq!(c.get(&m), Some(format!("v{i}").as_str()), "{}", c.name());
        }
        assert_eq!(Column::from_name("path"), None);
        assert_eq!(
            insert_values(0, &m).len(),
            insert_sql().matches('?').count()
        );
        assert_eq!(
            update_values(0, &m).len(),
            update_sql().matches('?').count()
        );
    }

    fn manifest_row() -> ItemMeta {
        let mut m = ItemMeta {
            modality: Some("US".into()),
            anatomy: Some("breast".into()),
            pathology: Some("benign".into()),
            label: Some("US/breast/benign".into()),
            split: Some("train".into()),
            patient_key: Some("k1".into()),
            ..Default::default()
        };
        m.extra.insert("view".into(), "CC".into());
        m.extra.insert(part_keys::SLICE.into(), "7".into());
        m
    }

    #[test]
    fn merge_fills_empty_fields_without_disagreement() {
        let mut stored = ItemMeta {
            path: "/a.png".into(),
            hash: "h".into(),
            format: "png".into(),
            modality: Some(String::new()),
            ..Default::default()
        };
        stored.extra.insert(part_keys::SLICE.into(), 3.into());
        let mut d = Vec::new();
        assert!(stored.merge_labels(&manifest_row(), false, &mut d));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(stored.modality.as_deref(), Some("US"));
        assert_eq!(stored.label.as_deref(), Some("US/breast/benign"));
        assert_eq!(stored.split.as_deref(), Some("train"));
        assert_eq!(stored.patient_key.as_deref(), Some("k1"));
        assert_eq!(stored.extra["view"], "CC");
        // The item's place in its file is not the manifest's to change.
        assert_eq!(stored.extra[part_keys::SLICE], 3);
        assert_eq!(
            (stored.path.as_str(), stored.format.as_str()),
            ("/a.png", "png")
        );
        // Merging the same row again changes nothing.
        assert!(!stored.merge_labels(&manifest_row(), false, &mut d));
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn merge_reports_and_keeps_differing_values_unless_relabel() {
        let mut stored = ItemMeta {
            modality: Some("MR".into()),
            label: Some("MR/brain/glioma".into()),
            ..Default::default()
        };
        stored.extra.insert("view".into(), "MLO".into());
        let mut d = Vec::new();
        // The empty fields are still filled; the differing ones are kept.
        assert!(stored.merge_labels(&manifest_row(), false, &mut d));
        assert_eq!(stored.modality.as_deref(), Some("MR"));
        assert_eq!(stored.label.as_deref(), Some("MR/brain/glioma"));
        assert_eq!(stored.extra["view"], "MLO");
        assert_eq!(stored.anatomy.as_deref(), Some("breast"));
        let fields: Vec<&str> = d.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["modality", "label", "view"]);
        assert_eq!(
            d[0],
            Disagreement {
                field: "modality".into(),
                stored: "MR".into(),
                manifest: "US".into()
            }
        );
        d.clear();
        assert!(stored.merge_labels(&manifest_row(), true, &mut d));
        assert_eq!(d.len(), 3);
        assert_eq!(stored.modality.as_deref(), Some("US"));
        assert_eq!(stored.label.as_deref(), Some("US/breast/benign"));
        assert_eq!(stored.extra["view"], "CC");
        // An empty manifest value clears nothing, even with relabel.
        let empty = ItemMeta {
            split: Some(String::new()),
            ..Default::default()
        };
        assert!(!stored.merge_labels(&empty, true, &mut d));
        assert_eq!(stored.split.as_deref(), Some("train"));
    }

    #[test]
    fn pixel_hashes_depend_on_the_samples_and_the_shape_only() {
        let data: Vec<f32> = (0..3 * 40 * 30).map(|i| (i % 97) as f32 / 97.0).collect();
        let hash = |w, h, d: &[f32]| {
            let mut m = ItemMeta::default();
            m.set_pixel_hash(w, h, d);
            m.pixel_hash().unwrap().to_string()
        };
        let a = hash(40, 30, &data);
        assert_eq!(a.len(), 32);
        assert_eq!(a, hash(40, 30, &data.clone()));
        assert_ne!(a, hash(30, 40, &data), "same samples, other shape");
        let mut one_off = data.clone();
        one_off[2000] += 1e-6;
        assert_ne!(a, hash(40, 30, &one_off));
        assert_eq!(ItemMeta::default().pixel_hash(), None);
        // The stored values are compared across indexes and releases, so the definition is
        // pinned: these digests come from the reference implementation (Python `xxhash` 3.x,
        // `xxh3_128_hexdigest(struct.pack("<QQ", w, h) + struct.pack("<3600f", *samples))`).
        assert_eq!(a, "5e3bdb6a9e03069eb6d2884108d694e5");
        assert_eq!(hash(0, 0, &[]), "e5189a9599e3f86205ea23ef06e28b2d");
    }
}
