//! The Parquet export, through the `parquet` crate's column writers (no Arrow): `id` as
//! `INT64 (INTEGER(64,false))` (uint64 in pyarrow and pandas), each text column an optional
//! `BYTE_ARRAY (STRING)`, and `vector` a required `LIST` of required `FLOAT` (the standard
//! three-level list layout, which pyarrow reads as `list<float>`). Row groups of
//! [`ROW_GROUP`] rows; pages uncompressed (no codec is built in).

use crate::Table;
use anyhow::Result;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::sync::Arc;

/// Rows per row group.
pub const ROW_GROUP: usize = 65_536;

/// The file's schema for `t`'s columns.
fn schema(t: &Table) -> String {
    let mut s =
        String::from("message simcase_export {\n  required int64 id (INTEGER(64,false));\n");
    for (name, _) in &t.text {
        s.push_str(&format!("  optional binary {name} (STRING);\n"));
    }
    s.push_str(
        "  required group vector (LIST) {\n    repeated group list {\n      required float element;\n    }\n  }\n}\n",
    );
    s
}

/// Write `t` as Parquet to `f`; the file back.
pub fn write(t: &Table, f: std::fs::File) -> Result<std::fs::File> {
    let schema = Arc::new(parse_message_type(&schema(t))?);
    let props = Arc::new(WriterProperties::builder().build());
    let mut w = SerializedFileWriter::new(std::io::BufWriter::new(f), schema, props)?;
    for start in (0..t.len()).step_by(ROW_GROUP) {
        let end = (start + ROW_GROUP).min(t.len());
        let mut rg = w.next_row_group()?;
        let mut col = 0;
        while let Some(mut c) = rg.next_column()? {
            match col {
                0 => {
                    let ids: Vec<i64> = t.ids[start..end].iter().map(|&i| i as i64).collect();
                    c.typed::<Int64Type>().write_batch(&ids, None, None)?;
                }
                i if i <= t.text.len() => {
                    let values = &t.text[i - 1].1[start..end];
                    let present: Vec<ByteArray> = values
                        .iter()
                        .flatten()
                        .map(|s| ByteArray::from(s.as_str()))
                        .collect();
                    let def: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                    c.typed::<ByteArrayType>()
                        .write_batch(&present, Some(&def), None)?;
                }
                _ => {
                    let values = &t.vectors[start * t.dim..end * t.dim];
                    let def = vec![1i16; values.len()];
                    let rep: Vec<i16> = (0..values.len())
                        .map(|j| i16::from(j % t.dim != 0))
                        .collect();
                    c.typed::<FloatType>()
                        .write_batch(values, Some(&def), Some(&rep))?;
                }
            }
            c.close()?;
            col += 1;
        }
        rg.close()?;
    }
    let buf = w.into_inner()?;
    Ok(buf.into_inner().map_err(|e| e.into_error())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::{ListAccessor, RowAccessor};

    #[test]
    fn rows_columns_and_lists_read_back() {
        let t = Table {
            ids: vec![3, 9],
            text: vec![("label", vec![Some("MR/brain".into()), None])],
            dim: 2,
            vectors: vec![0.6, 0.8, 1.0, -0.5],
        };
        let path = std::env::temp_dir().join(format!("simcase-pq-{}.parquet", std::process::id()));
        write(&t, std::fs::File::create(&path).unwrap()).unwrap();
        let r = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let rows: Vec<(u64, Option<String>, Vec<f32>)> = r
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                let list = row.get_list(2).unwrap();
                (
                    row.get_ulong(0).unwrap(),
                    row.get_string(1).ok().cloned(),
                    (0..list.len())
                        .map(|i| list.get_float(i).unwrap())
                        .collect(),
                )
            })
            .collect();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            rows,
            [
                (3, Some("MR/brain".to_string()), vec![0.6, 0.8]),
                (9, None, vec![1.0, -0.5])
            ]
        );
    }
}
