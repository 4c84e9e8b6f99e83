//! The collection schema and the mapping between items and Milvus columns: `pk` (the content
//! key, primary), `id` (its [`item_id`](crate::item_id)), `vector`, one lowercased VarChar per
//! [`Column`], `format`, `study_date` (YYYYMMDD as Int64, 0 for none), `x` (lowercased string
//! extras under hex keys, for `meta.*` filters) and `meta` (the whole [`ItemMeta`] as stored,
//! original case, what results show).

use crate::expr::{fold, json_key};
use crate::proto::common::KeyValuePair;
use crate::proto::schema::{
    field_data, scalar_field, vector_field, CollectionSchema, DataType, FieldData, FieldSchema,
    FloatArray, JsonArray, LongArray, ScalarField, StringArray, VectorField,
};
use anyhow::{anyhow, Result};
use simcase_index::{Column, Item, ItemMeta};

/// Longest text a VarChar field takes (Milvus's limit); longer values are cut for filtering
/// (the `meta` field keeps them whole).
pub(crate) const MAX_VARCHAR: usize = 65_535;
/// Longest content key.
const MAX_PK: usize = 512;

pub(crate) const PK: &str = "pk";
pub(crate) const ID: &str = "id";
pub(crate) const VECTOR: &str = "vector";
pub(crate) const FORMAT: &str = "format";
pub(crate) const STUDY_DATE: &str = "study_date";
pub(crate) const X: &str = "x";
pub(crate) const META: &str = "meta";

fn kv(k: &str, v: impl ToString) -> KeyValuePair {
    KeyValuePair {
        key: k.into(),
        value: v.to_string(),
    }
}

fn field(name: &str, t: DataType, params: Vec<KeyValuePair>) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type: t as i32,
        type_params: params,
        ..Default::default()
    }
}

/// The schema of a simcase collection of `dim`-value vectors.
pub(crate) fn schema(name: &str, description: &str, dim: usize) -> CollectionSchema {
    let mut pk = field(PK, DataType::VarChar, vec![kv("max_length", MAX_PK)]);
    pk.is_primary_key = true;
    let mut fields = vec![
        pk,
        field(ID, DataType::Int64, vec![]),
        field(VECTOR, DataType::FloatVector, vec![kv("dim", dim)]),
    ];
    for c in Column::ALL {
        fields.push(field(
            c.name(),
            DataType::VarChar,
            vec![kv("max_length", MAX_VARCHAR)],
        ));
    }
    fields.push(field(
        FORMAT,
        DataType::VarChar,
        vec![kv("max_length", 256)],
    ));
    fields.push(field(STUDY_DATE, DataType::Int64, vec![]));
    fields.push(field(X, DataType::Json, vec![]));
    fields.push(field(META, DataType::Json, vec![]));
    CollectionSchema {
        name: name.into(),
        description: description.into(),
        fields,
        ..Default::default()
    }
}

/// Whether a described schema is this one (field names and types).
pub(crate) fn schema_matches(s: &CollectionSchema, dim: usize) -> bool {
    let want = schema("", "", dim);
    want.fields.iter().all(|w| {
        s.fields.iter().any(|f| {
            f.name == w.name
                && f.data_type == w.data_type
                && (w.name != VECTOR
                    || f.type_params
                        .iter()
                        .any(|p| p.key == "dim" && p.value == dim.to_string()))
        })
    })
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The study date of an item as YYYYMMDD, 0 when it has none that reads as one.
pub(crate) fn study_date(m: &ItemMeta) -> i64 {
    let Some(s) = m.extra.get("study_date").and_then(|v| v.as_str()) else {
        return 0;
    };
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() != 8 {
        return 0;
    }
    digits.parse().unwrap_or(0)
}

fn strings(name: &str, data: Vec<String>) -> FieldData {
    scalar(
        name,
        DataType::VarChar,
        scalar_field::Data::StringData(StringArray { data }),
    )
}

fn scalar(name: &str, t: DataType, data: scalar_field::Data) -> FieldData {
    FieldData {
        r#type: t as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Scalars(ScalarField {
            data: Some(data),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The column-wise fields of `batch` for an insert or upsert.
pub(crate) fn to_fields(batch: &[(ItemMeta, Vec<f32>)], dim: usize) -> Result<Vec<FieldData>> {
    let n = batch.len();
    let mut vectors = Vec::with_capacity(n * dim);
    for (m, v) in batch {
        if v.len() != dim {
            return Err(anyhow!(
                "{}: vector of {} values, the collection holds {dim}",
                m.path,
                v.len()
            ));
        }
        if m.hash.is_empty() || m.hash.len() > MAX_PK {
            return Err(anyhow!(
                "{}: content key of {} bytes (1..={MAX_PK})",
                m.path,
                m.hash.len()
            ));
        }
        vectors.extend_from_slice(v);
    }
    let mut out = vec![
        strings(PK, batch.iter().map(|(m, _)| m.hash.clone()).collect()),
        scalar(
            ID,
            DataType::Int64,
            scalar_field::Data::LongData(LongArray {
                data: batch
                    .iter()
                    .map(|(m, _)| crate::item_id(&m.hash) as i64)
                    .collect(),
            }),
        ),
        FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: VECTOR.into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim: dim as i64,
                data: Some(vector_field::Data::FloatVector(FloatArray {
                    data: vectors,
                })),
                ..Default::default()
            })),
            ..Default::default()
        },
    ];
    for c in Column::ALL {
        out.push(strings(
            c.name(),
            batch
                .iter()
                .map(|(m, _)| cut(&fold(c.get(m).unwrap_or("")), MAX_VARCHAR))
                .collect(),
        ));
    }
    out.push(strings(
        FORMAT,
        batch
            .iter()
            .map(|(m, _)| cut(&fold(&m.format), 256))
            .collect(),
    ));
    out.push(scalar(
        STUDY_DATE,
        DataType::Int64,
        scalar_field::Data::LongData(LongArray {
            data: batch.iter().map(|(m, _)| study_date(m)).collect(),
        }),
    ));
    let mut xs = Vec::with_capacity(n);
    let mut metas = Vec::with_capacity(n);
    for (m, _) in batch {
        let x: serde_json::Map<String, serde_json::Value> = m
            .extra
            .iter()
            .filter_map(|(k, v)| Some((json_key(k), serde_json::Value::String(fold(v.as_str()?)))))
            .collect();
        xs.push(serde_json::to_vec(&x)?);
        metas.push(serde_json::to_vec(m)?);
    }
    out.push(scalar(
        X,
        DataType::Json,
        scalar_field::Data::JsonData(JsonArray { data: xs }),
    ));
    out.push(scalar(
        META,
        DataType::Json,
        scalar_field::Data::JsonData(JsonArray { data: metas }),
    ));
    Ok(out)
}

/// Columns of a query or search reply, by name.
pub(crate) struct Columns<'a>(pub(crate) &'a [FieldData]);

impl<'a> Columns<'a> {
    fn get(&self, name: &str) -> Result<&'a FieldData> {
        self.0
            .iter()
            .find(|f| f.field_name == name)
            .ok_or_else(|| anyhow!("Milvus reply lacks the `{name}` field"))
    }

    fn scalars(&self, name: &str) -> Result<&'a scalar_field::Data> {
        match &self.get(name)?.field {
            Some(field_data::Field::Scalars(ScalarField { data: Some(d), .. })) => Ok(d),
            _ => Err(anyhow!("Milvus reply: `{name}` is not a scalar field")),
        }
    }

    pub(crate) fn strings(&self, name: &str) -> Result<&'a [String]> {
        match self.scalars(name)? {
            scalar_field::Data::StringData(s) => Ok(&s.data),
            _ => Err(anyhow!("Milvus reply: `{name}` is not text")),
        }
    }

    pub(crate) fn longs(&self, name: &str) -> Result<&'a [i64]> {
        match self.scalars(name)? {
            scalar_field::Data::LongData(s) => Ok(&s.data),
            _ => Err(anyhow!("Milvus reply: `{name}` is not Int64")),
        }
    }

    pub(crate) fn jsons(&self, name: &str) -> Result<&'a [Vec<u8>]> {
        match self.scalars(name)? {
            scalar_field::Data::JsonData(s) => Ok(&s.data),
            _ => Err(anyhow!("Milvus reply: `{name}` is not JSON")),
        }
    }

    pub(crate) fn vectors(&self, name: &str, dim: usize) -> Result<&'a [f32]> {
        match &self.get(name)?.field {
            Some(field_data::Field::Vectors(VectorField {
                data: Some(vector_field::Data::FloatVector(v)),
                ..
            })) if dim > 0 && v.data.len() % dim == 0 => Ok(&v.data),
            _ => Err(anyhow!(
                "Milvus reply: `{name}` is not a float vector of {dim} values"
            )),
        }
    }

    /// The rows' items (from `pk` and `meta`).
    pub(crate) fn items(&self) -> Result<Vec<Item>> {
        let pks = self.strings(PK)?;
        let metas = self.jsons(META)?;
        if pks.len() != metas.len() {
            return Err(anyhow!(
                "Milvus reply: {} keys but {} metadata rows",
                pks.len(),
                metas.len()
            ));
        }
        pks.iter()
            .zip(metas)
            .map(|(pk, m)| {
                let mut meta: ItemMeta = serde_json::from_slice(m)
                    .map_err(|e| anyhow!("Milvus row {pk}: unreadable metadata ({e})"))?;
                meta.hash = pk.clone();
                Ok(Item {
                    id: crate::item_id(pk),
                    meta,
                })
            })
            .collect()
    }

    /// Rows in the reply (by its `pk` or first field).
    pub(crate) fn len(&self) -> usize {
        if let Ok(p) = self.strings(PK) {
            return p.len();
        }
        match self.0.first().and_then(|f| f.field.as_ref()) {
            Some(field_data::Field::Scalars(ScalarField { data: Some(d), .. })) => match d {
                scalar_field::Data::StringData(s) => s.data.len(),
                scalar_field::Data::LongData(s) => s.data.len(),
                scalar_field::Data::JsonData(s) => s.data.len(),
                _ => 0,
            },
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_fields() {
        let mut m = ItemMeta {
            path: "/a/b.dcm".into(),
            hash: "abc#2".into(),
            format: "DICOM".into(),
            modality: Some("CT".into()),
            ..Default::default()
        };
        m.extra.insert("study_date".into(), "2020-01-31".into());
        m.extra.insert("View".into(), "PA".into());
        m.extra.insert("frame".into(), 2.into());
        assert_eq!(study_date(&m), 20200131);
        let f = to_fields(&[(m.clone(), vec![0.6, 0.8])], 2).unwrap();
        let c = Columns(&f);
        assert_eq!(c.strings("modality").unwrap(), ["ct"]);
        assert_eq!(c.strings("label").unwrap(), [""]);
        assert_eq!(c.strings(FORMAT).unwrap(), ["dicom"]);
        assert_eq!(c.longs(STUDY_DATE).unwrap(), [20200131]);
        assert_eq!(c.longs(ID).unwrap(), [crate::item_id("abc#2") as i64]);
        assert_eq!(c.vectors(VECTOR, 2).unwrap(), [0.6, 0.8]);
        let x: serde_json::Value = serde_json::from_slice(&c.jsons(X).unwrap()[0]).unwrap();
        assert_eq!(x[json_key("View")], "pa");
        assert!(
            x.get(json_key("frame")).is_none(),
            "only strings are filterable"
        );
        let items = c.items().unwrap();
        assert_eq!(items[0].meta, m);
        assert_eq!(c.len(), 1);
        assert!(to_fields(&[(m, vec![1.0])], 2).is_err());
        assert!(schema_matches(&schema("c", "", 2), 2));
        assert!(!schema_matches(&schema("c", "", 3), 2));
    }
}
