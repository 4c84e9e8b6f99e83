//! The `.npy` format (numpy's NEP 1): a magic string, a version, a Python-literal header
//! giving the dtype and shape, padded so the data starts on a 64-byte boundary, then the rows.
//! An export is one structured array: `id` (`<u8`), each text column as fixed-width UTF-32
//! (`<U{w}`, `w` the column's longest value in characters, at least 1; numpy strips the
//! trailing NULs of shorter values), and `vector` (`<f4`, shape `(dim,)`). Loaded with plain
//! `np.load` (no pickle).

use crate::Table;
use anyhow::Result;
use std::io::{BufWriter, Write};

/// Write `t` as a `.npy` structured array to `f`; the file back, flushed.
pub fn write(t: &Table, f: std::fs::File) -> Result<std::fs::File> {
    let widths: Vec<usize> = t
        .text
        .iter()
        .map(|(_, col)| {
            col.iter()
                .map(|v| v.as_deref().map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
                .max(1)
        })
        .collect();
    let mut descr = String::from("[('id', '<u8'), ");
    for ((name, _), w) in t.text.iter().zip(&widths) {
        descr.push_str(&format!("('{name}', '<U{w}'), "));
    }
    descr.push_str(&format!("('vector', '<f4', ({},))]", t.dim));
    let header = format!(
        "{{'descr': {descr}, 'fortran_order': False, 'shape': ({},), }}",
        t.len()
    );
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(b"\x93NUMPY")?;
    // Version 1.0 has a 2-byte header length; 2.0 (numpy ≥ 1.9) a 4-byte one.
    let short = header.len() + 1 + 10 <= u16::MAX as usize;
    let prefix = if short { 10 } else { 12 };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    let len = total - prefix;
    if short {
        w.write_all(&[1, 0])?;
        w.write_all(&(len as u16).to_le_bytes())?;
    } else {
        w.write_all(&[2, 0])?;
        w.write_all(&(len as u32).to_le_bytes())?;
    }
    w.write_all(header.as_bytes())?;
    w.write_all(&vec![b' '; len - header.len() - 1])?;
    w.write_all(b"\n")?;
    for (row, id) in t.ids.iter().enumerate() {
        w.write_all(&id.to_le_bytes())?;
        for ((_, col), &width) in t.text.iter().zip(&widths) {
            let mut n = 0;
            for c in col[row].as_deref().unwrap_or("").chars() {
                w.write_all(&(c as u32).to_le_bytes())?;
                n += 1;
            }
            for _ in n..width {
                w.write_all(&[0; 4])?;
            }
        }
        for x in &t.vectors[row * t.dim..(row + 1) * t.dim] {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    Ok(w.into_inner().map_err(|e| e.into_error())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_to_64_bytes_and_rows_have_the_dtype_size() {
        let t = Table {
            ids: vec![0, 7],
            text: vec![("label", vec![Some("CT/é".into()), None])],
            dim: 3,
            vectors: vec![1.0, 0.0, 0.0, 0.0, 0.6, 0.8],
        };
        let path = std::env::temp_dir().join(format!("simcase-npy-{}.npy", std::process::id()));
        write(&t, std::fs::File::create(&path).unwrap()).unwrap();
        let b = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.ends_with('\n'), "{header:?}");
        assert!(header.contains("('label', '<U4')"), "{header}");
        assert!(header.contains("('vector', '<f4', (3,))") && header.contains("'shape': (2,)"));
        // Row: 8 (id) + 4 × 4 (label) + 3 × 4 (vector) = 36 bytes.
        let data = &b[10 + hlen..];
        assert_eq!(data.len(), 2 * 36);
        assert_eq!(u64::from_le_bytes(data[36..44].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_le_bytes(data[20..24].try_into().unwrap()),
            'é' as u32
        );
        assert_eq!(&data[44..60], &[0; 16], "a missing value is empty");
        assert_eq!(f32::from_le_bytes(data[68..72].try_into().unwrap()), 0.8);
    }
}
