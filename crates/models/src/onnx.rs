//! Just enough of the ONNX protobuf to lift float initializers out of a model: the graph's
//! initializers and its nodes (op type, name, inputs), which tell what a folded
//! `onnx::MatMul_1234` weight belongs to. A hand-written reader avoids a protoc build step.

use anyhow::{bail, Context, Result};

/// A float tensor stored in the graph.
pub struct Initializer {
    /// The initializer's name, as node inputs refer to it.
    pub name: String,
    /// The tensor's shape.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// A graph node: an operator and the values it consumes.
pub struct Node {
    /// The operator (`MatMul`, `Add`, …).
    pub op_type: String,
    /// The node's name.
    pub name: String,
    /// Names of its inputs (initializers or other nodes' outputs).
    pub inputs: Vec<String>,
}

/// The parts of an ONNX model's graph this reader keeps.
pub struct Graph {
    /// The graph's float initializers (weights).
    pub initializers: Vec<Initializer>,
    /// The graph's nodes, in file order.
    pub nodes: Vec<Node>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).context("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }

    /// Next (field number, value), or None at the end.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?)?;
                let end = self.pos.checked_add(len).context("length overflow")?;
                let bytes = self.buf.get(self.pos..end).context("truncated field")?;
                self.pos = end;
                Field::Bytes(bytes)
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            w => bail!("unsupported protobuf wire type {w}"),
        };
        Ok(Some((key >> 3, f)))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        if self.pos + n > self.buf.len() {
            bail!("truncated fixed field");
        }
        self.pos += n;
        Ok(())
    }
}

fn string(b: &[u8]) -> Result<String> {
    Ok(std::str::from_utf8(b)?.to_string())
}

const FLOAT: u64 = 1;

fn tensor(buf: &[u8]) -> Result<Option<Initializer>> {
    let (mut name, mut dims, mut dtype, mut raw, mut floats) =
        (String::new(), Vec::new(), 0, None, Vec::new());
    let mut r = Reader::new(buf);
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Varint(d)) => dims.push(d as usize),
            (1, Field::Bytes(packed)) => {
                let mut p = Reader::new(packed);
                while p.pos < packed.len() {
                    dims.push(p.varint()? as usize);
                }
            }
            (2, Field::Varint(t)) => dtype = t,
            (4, Field::Bytes(packed)) => floats.extend(
                packed
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (8, Field::Bytes(b)) => name = string(b)?,
            (9, Field::Bytes(b)) => raw = Some(b),
            (14, Field::Varint(1)) => bail!("tensor {name}: external data is not supported"),
            _ => {}
        }
    }
    if dtype != FLOAT {
        return Ok(None);
    }
    let data = match raw {
        Some(b) => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        None => floats,
    };
    let n: usize = dims.iter().product();
    if data.len() != n {
        bail!("tensor {name}: {} values for shape {dims:?}", data.len());
    }
    Ok(Some(Initializer { name, dims, data }))
}

fn node(buf: &[u8]) -> Result<Node> {
    let mut n = Node {
        op_type: String::new(),
        name: String::new(),
        inputs: Vec::new(),
    };
    let mut r = Reader::new(buf);
    while let Some((num, f)) = r.field()? {
        if let Field::Bytes(b) = f {
            match num {
                1 => n.inputs.push(string(b)?),
                3 => n.name = string(b)?,
                4 => n.op_type = string(b)?,
                _ => {}
            }
        }
    }
    Ok(n)
}

/// Parse a serialized `ModelProto`, keeping float initializers and all nodes.
pub fn parse_model(bytes: &[u8]) -> Result<Graph> {
    let mut r = Reader::new(bytes);
    let mut graph = None;
    while let Some((num, f)) = r.field()? {
        if let (7, Field::Bytes(b)) = (num, f) {
            graph = Some(b);
        }
    }
    let graph = graph.context("no graph in ONNX model")?;
    let mut g = Graph {
        initializers: Vec::new(),
        nodes: Vec::new(),
    };
    let mut r = Reader::new(graph);
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Bytes(b)) => g.nodes.push(node(b)?),
            (5, Field::Bytes(b)) => g.initializers.extend(tensor(b)?),
            _ => {}
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(num: u64, wire: u64) -> u8 {
        (num << 3 | wire) as u8
    }

    fn bytes_field(num: u64, b: &[u8]) -> Vec<u8> {
        let mut v = vec![key(num, 2), b.len() as u8];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn parses_a_hand_built_model() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let mut t = vec![key(1, 0), 2, key(2, 0), 1];
        t.extend(bytes_field(8, b"w"));
        t.extend(bytes_field(9, &raw));
        let mut n = bytes_field(1, b"x");
        n.extend(bytes_field(1, b"w"));
        n.extend(bytes_field(3, b"/fc/MatMul"));
        n.extend(bytes_field(4, b"MatMul"));
        let mut g = bytes_field(1, &n);
        g.extend(bytes_field(5, &t));
        let model = bytes_field(7, &g);
        let g = parse_model(&model).unwrap();
        assert_eq!(g.initializers[0].name, "w");
        assert_eq!(g.initializers[0].dims, vec![2]);
        assert_eq!(g.initializers[0].data, vec![1.5, -2.0]);
        assert_eq!(g.nodes[0].op_type, "MatMul");
        assert_eq!(g.nodes[0].inputs, vec!["x", "w"]);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let model = bytes_field(7, &bytes_field(5, &[key(8, 2), 50, b'a']));
        assert!(parse_model(&model).is_err());
        assert!(parse_model(&[0xff; 20]).is_err());
    }
}
