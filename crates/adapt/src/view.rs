//! Views: an adapter stored with its index under a name, in `DIR/views/NAME.json` (what it is:
//! format version, method, model, widths, the fused models' blocks and weights, what it was
//! tuned to, how many rows it learned from, when) and `DIR/views/NAME.f32` (its numbers, little-endian f32: mean, linear map, then the
//! residual head's W₁, b₁, W₂, b₂). Both are written to temporary names, fsynced and renamed,
//! numbers first, so a view is either whole or absent.

use crate::{Adapter, Block, Method, Residual};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// FNV-1a, 64-bit: ties a view's `.json` to the `.f32` written with it.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The view format this build writes and reads.
pub const VERSION: u64 = 1;

/// A stored view's description.
#[derive(Clone, Debug)]
pub struct ViewInfo {
    /// Its name.
    pub name: String,
    /// The model whose embeddings it adapts.
    pub model: String,
    /// The adapter.
    pub adapter: Adapter,
    /// Everything else recorded (rows learned from, classes, created, leave-classes-out).
    pub meta: Value,
}

fn folder(index: &Path) -> PathBuf {
    index.join("views")
}

/// A view name: letters, digits, `-`, `_`, `.`, 1 to 64 of them, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    anyhow::ensure!(
        ok,
        "view name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
    );
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    simcase_index::store::durable::write_atomic(path, |mut f| {
        f.write_all(bytes)?;
        Ok(f)
    })?;
    Ok(())
}

/// Store `adapter` as view `name` of the index at `index` (replacing one of that name).
pub fn save(index: &Path, name: &str, model: &str, adapter: &Adapter, meta: Value) -> Result<()> {
    check_name(name)?;
    let dir = folder(index);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut nums: Vec<f32> = Vec::new();
    nums.extend(&adapter.mean);
    nums.extend(&adapter.linear);
    if let Some(r) = &adapter.residual {
        for part in [&r.w1, &r.b1, &r.w2, &r.b2] {
            nums.extend(part.iter());
        }
    }
    let bytes: Vec<u8> = nums.iter().flat_map(|x| x.to_le_bytes()).collect();
    let head = json!({
        "format": VERSION,
        "name": name,
        "model": model,
        "method": adapter.method_name(),
        "dim_in": adapter.dim_in,
        // A fused index's parts the view keeps: [first value, count, weight] (exact in JSON:
        // an f32 is an f64 exactly).
        "blocks": adapter.blocks.iter().map(|b| json!([b.start, b.len, b.weight])).collect::<Vec<_>>(),
        "dim_out": adapter.dim_out,
        "mean": adapter.mean.len(),
        "linear": adapter.linear.len(),
        "hidden": adapter.residual.as_ref().map(|r| r.hidden),
        "floats": nums.len(),
        // The .json is renamed in last: a reader that finds it with numbers of another write
        // (a crash or a concurrent replace between the two renames) sees the checksum differ.
        "fnv64": format!("{:016x}", fnv64(&bytes)),
        "tuned": adapter.tuned,
        "meta": meta,
    });
    write_atomic(&dir.join(format!("{name}.f32")), &bytes)?;
    write_atomic(
        &dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&head)?.as_bytes(),
    )?;
    Ok(())
}

/// Load view `name` of the index at `index`.
pub fn load(index: &Path, name: &str) -> Result<ViewInfo> {
    check_name(name)?;
    let dir = folder(index);
    let jp = dir.join(format!("{name}.json"));
    let text = match std::fs::read_to_string(&jp) {
        Ok(t) => t,
        Err(_) => bail!(
            "{}: no view {name:?} (views: {})",
            index.display(),
            listed(index)
        ),
    };
    let h: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not a view", jp.display()))?;
    let shown = jp.display();
    anyhow::ensure!(
        h["format"].as_u64() == Some(VERSION),
        "{shown}: view format {} (this simcase reads {VERSION})",
        h["format"]
    );
    let get = |k: &str| -> Result<usize> {
        h[k].as_u64()
            .map(|v| v as usize)
            .with_context(|| format!("{shown}: no {k}"))
    };
    let method: Option<Method> = match h["method"].as_str().unwrap_or("") {
        "none" => None,
        m => Some(m.parse()?),
    };
    let (dim_in, dim_out) = (get("dim_in")?, get("dim_out")?);
    let mut blocks = Vec::new();
    for b in h["blocks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (start, len, weight) = (b[0].as_u64(), b[1].as_u64(), b[2].as_f64());
        let ok = match (start, len, weight) {
            (Some(s), Some(l), Some(w)) => {
                l > 0 && s.checked_add(l).is_some_and(|e| e <= dim_in as u64) && w.is_finite()
            }
            _ => false,
        };
        anyhow::ensure!(
            ok,
            "{shown}: block {b} is not within the {dim_in} values of a row"
        );
        blocks.push(Block {
            start: start.unwrap_or(0) as usize,
            len: len.unwrap_or(0) as usize,
            weight: weight.unwrap_or(0.0) as f32,
        });
    }
    let dim_mid = if blocks.is_empty() {
        dim_in
    } else {
        blocks.iter().map(|b| b.len).sum()
    };
    let (nm, nl, floats) = (get("mean")?, get("linear")?, get("floats")?);
    let hidden = h["hidden"].as_u64().map(|v| v as usize);
    let fp = dir.join(format!("{name}.f32"));
    let bytes = std::fs::read(&fp).with_context(|| format!("reading {}", fp.display()))?;
    // Sizes come from a file: checked arithmetic, so a hostile .json cannot wrap them.
    let want_res = hidden.map_or(Some(0), |k| {
        k.checked_mul(dim_mid)?
            .checked_mul(2)?
            .checked_add(k)?
            .checked_add(dim_mid)
    });
    let sizes_ok = (|| {
        let total = nm.checked_add(nl)?.checked_add(want_res?)?;
        let linear_ok = if nl == 0 {
            dim_out == dim_mid && nm == 0
        } else {
            nl == dim_mid.checked_mul(dim_out)? && nm == dim_mid
        };
        // A view with no method only weighs blocks: nothing else may be there.
        let method_ok = method.is_some() || (!blocks.is_empty() && total == 0);
        Some(
            total == floats
                && floats.checked_mul(4)? == bytes.len()
                && linear_ok
                && method_ok
                && dim_in > 0,
        )
    })()
    .unwrap_or(false);
    anyhow::ensure!(
        sizes_ok,
        "{}: {} bytes do not hold the view its .json describes",
        fp.display(),
        bytes.len()
    );
    anyhow::ensure!(
        h["fnv64"].as_str() == Some(format!("{:016x}", fnv64(&bytes)).as_str()),
        "{}: the numbers are not those its .json was written with (an interrupted or \
         concurrent `simcase adapt`); run it again",
        fp.display()
    );
    let nums: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut at = 0;
    let mut take = |k: usize| {
        let v = nums[at..at + k].to_vec();
        at += k;
        v
    };
    let mean = take(nm);
    let linear = take(nl);
    let residual = hidden.map(|k| Residual {
        hidden: k,
        w1: take(k * dim_mid),
        b1: take(k),
        w2: take(dim_mid * k),
        b2: take(dim_mid),
    });
    let tuned: BTreeMap<String, f64> =
        serde_json::from_value(h["tuned"].clone()).unwrap_or_default();
    Ok(ViewInfo {
        name: name.to_string(),
        model: h["model"].as_str().unwrap_or("").to_string(),
        adapter: Adapter {
            method,
            dim_in,
            blocks,
            dim_out,
            residual,
            mean,
            linear,
            tuned,
        },
        meta: h["meta"].clone(),
    })
}

/// Load view `name` for an index of `model` embeddings of width `dim`; a view built for another
/// model or width is refused, naming both.
pub fn load_for(index: &Path, name: &str, model: &str, dim: usize) -> Result<ViewInfo> {
    let v = load(index, name)?;
    crate::check_compatible(
        &v.model,
        v.adapter.dim_in,
        model,
        dim,
        &folder(index).join(format!("{name}.json")),
    )?;
    Ok(v)
}

/// The index's views for a message: their names, or how to make one.
pub fn listed(index: &Path) -> String {
    let known = list(index).unwrap_or_default();
    if known.is_empty() {
        "none; make one with `simcase adapt`".to_string()
    } else {
        known.join(", ")
    }
}

/// The names of an index's views.
pub fn list(index: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(folder(index)) else {
        return Ok(out);
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = n.strip_suffix(".json") {
            out.push(stem.to_string());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(method: Method, hidden: Option<usize>) -> Adapter {
        let d = 3;
        Adapter {
            method: Some(method),
            dim_in: d,
            blocks: Vec::new(),
            dim_out: if hidden.is_some() { d } else { 2 },
            residual: hidden.map(|k| Residual {
                hidden: k,
                w1: (0..k * d).map(|i| i as f32 * 0.1).collect(),
                b1: vec![0.5; k],
                w2: (0..d * k).map(|i| -(i as f32) * 0.01).collect(),
                b2: vec![0.25; d],
            }),
            mean: if hidden.is_some() {
                vec![]
            } else {
                vec![0.1, 0.2, 0.3]
            },
            linear: if hidden.is_some() {
                vec![]
            } else {
                vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.5]
            },
            tuned: [("shrinkage".to_string(), 0.1)].into(),
        }
    }

    #[test]
    fn a_view_persists_exactly_and_is_refused_for_another_model_or_width() {
        let dir = std::env::temp_dir().join(format!("simcase-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, a) in [
            ("lin", adapter(Method::Lw, None)),
            ("head", adapter(Method::Mlp, Some(4))),
        ] {
            save(&dir, name, "dinov2-s", &a, json!({"train_rows": 12})).unwrap();
            let v = load_for(&dir, name, "dinov2-s", 3).unwrap();
            assert_eq!(v.adapter, a);
            assert_eq!(v.meta["train_rows"], 12);
            let x = [0.3f32, -0.2, 0.9];
            assert_eq!(v.adapter.apply(&x), a.apply(&x));
        }
        assert_eq!(list(&dir).unwrap(), vec!["head", "lin"]);
        let e = load_for(&dir, "lin", "litemedsam", 3)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built for dinov2-s (3-d)") && e.contains("holds litemedsam (3-d)"),
            "{e}"
        );
        let e = load_for(&dir, "lin", "dinov2-s", 384)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds dinov2-s (384-d)"), "{e}");
        let e = load(&dir, "nope").unwrap_err().to_string();
        assert!(e.contains("no view \"nope\" (views: head, lin)"), "{e}");
        assert!(check_name("../x").is_err() && check_name(".hidden").is_err());
        // A numbers file that does not match its description is refused, not misread.
        std::fs::write(dir.join("views/lin.f32"), [0u8; 12]).unwrap();
        let e = load(&dir, "lin").unwrap_err().to_string();
        assert!(e.contains("do not hold the view"), "{e}");
        // Numbers of the right size from another write: the checksum tells.
        std::fs::write(dir.join("views/lin.f32"), [0u8; 36]).unwrap();
        let e = load(&dir, "lin").unwrap_err().to_string();
        assert!(e.contains("not those its .json was written with"), "{e}");
        // Sizes that would overflow are refused, not wrapped.
        let j = dir.join("views/lin.json");
        let mut h: Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        h["dim_in"] = json!(1u64 << 62);
        h["hidden"] = json!(2);
        std::fs::write(&j, h.to_string()).unwrap();
        let e = load(&dir, "lin").unwrap_err().to_string();
        assert!(e.contains("do not hold the view"), "{e}");
    }

    #[test]
    fn a_fused_view_keeps_and_weighs_its_blocks_then_maps_and_persists_them() {
        let dir = std::env::temp_dir().join(format!("simcase-view-fused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A row of model a (2 values) then model b (3 values).
        let x = [0.6f32, 0.0, 0.0, 0.8, 0.0];
        let weights = Adapter::weights(
            5,
            vec![
                Block {
                    start: 0,
                    len: 2,
                    weight: 0.25,
                },
                Block {
                    start: 2,
                    len: 3,
                    weight: 0.75,
                },
            ],
        );
        // By hand: (0.15, 0, 0, 0.6, 0) over its length √(0.0225 + 0.36).
        let n = (0.15f32 * 0.15 + 0.6 * 0.6).sqrt();
        let want = [0.15 / n, 0.0, 0.0, 0.6 / n, 0.0];
        let got = weights.apply(&x);
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?}"
        );
        // Only model b, then a linear map (2 × 3) learned on its values.
        let mut picked = adapter(Method::Lw, None);
        picked.dim_in = 5;
        picked.blocks = vec![Block {
            start: 2,
            len: 3,
            weight: 1.0,
        }];
        let y = picked.apply(&x);
        let b = [0.0f32 - 0.1, 1.0 - 0.2, 0.0 - 0.3];
        let (y0, y1) = (b[0] + 2.0 * b[2], 3.0 * b[1] + 0.5 * b[2]);
        let n = (y0 * y0 + y1 * y1).sqrt();
        assert!(
            (y[0] - y0 / n).abs() < 1e-6 && (y[1] - y1 / n).abs() < 1e-6,
            "{y:?}"
        );
        for (name, a) in [("w", &weights), ("b", &picked)] {
            save(&dir, name, "a+b", a, json!({})).unwrap();
            let v = load_for(&dir, name, "a+b", 5).unwrap();
            assert_eq!(&v.adapter, a);
            assert_eq!(v.adapter.apply(&x), a.apply(&x));
        }
        assert_eq!(load(&dir, "w").unwrap().adapter.method_name(), "none");
        // A block past the row's end is refused, naming it.
        let j = dir.join("views/w.json");
        let mut h: Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        h["blocks"][1] = json!([4, 3, 0.5]);
        std::fs::write(&j, h.to_string()).unwrap();
        let e = load(&dir, "w").unwrap_err().to_string();
        assert!(
            e.contains("block [4,3,0.5] is not within the 5 values"),
            "{e}"
        );
        // A view with no method and no blocks is not a view.
        h["blocks"] = json!([]);
        h["dim_out"] = json!(5);
        std::fs::write(&j, h.to_string()).unwrap();
        assert!(load(&dir, "w").is_err());
    }
}
