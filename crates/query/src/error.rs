//! Why a query could not be answered, as a type: each variant is one kind of fault, so a
//! caller maps the kind (the server: a status code, in one place) rather than parsing messages.
//! Every message is one line and names what was at fault (a parameter, an item, a file).

use simcase_imaging::DecodeError;

/// Longest parameter name quoted back in an error (a name is client input too).
const MAX_QUOTED_NAME: usize = 64;

/// A query that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A request parameter is malformed or out of its bounds: the caller's fault.
    #[error("{name}: {reason}")]
    BadParameter {
        /// The parameter, as the caller spelled it (cut to 64 bytes).
        name: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// The query names an item that the index does not hold.
    #[error("no item {id} in the index ({items} items)")]
    NotFound {
        /// The id asked for.
        id: u64,
        /// Items the index holds.
        items: usize,
    },
    /// A text query on an index whose model has no text tower.
    #[error("{model} has no text tower; text search needs a CLIP-family model")]
    NoTextTower {
        /// The index's model.
        model: String,
    },
    /// The query image could not be decoded.
    #[error("{name}: {reason}")]
    Decode {
        /// The file (or upload) that failed.
        name: String,
        /// Why (in the message, not as a source: an error chain printed whole, `{:#}`, would
        /// repeat it).
        reason: DecodeError,
    },
    /// The query vector is not in the index's space (a model other than the index's).
    #[error("the query has {got} dimensions, the index {want}")]
    Dimension {
        /// The query's length.
        got: usize,
        /// The index's dimension.
        want: usize,
    },
    /// The model failed to load or to embed the query: the server's fault, not the caller's.
    #[error("the model failed: {0:#}")]
    Model(anyhow::Error),
    /// The index's stored metadata could not be read (SQLite failed): the server's fault.
    #[error("reading the index failed: {0:#}")]
    Index(anyhow::Error),
}

impl QueryError {
    /// A bad value for parameter `name`.
    pub fn bad(name: &str, reason: impl Into<String>) -> Self {
        Self::BadParameter {
            name: quoted_name(name),
            reason: reason.into(),
        }
    }
}

/// `name`, cut to [`MAX_QUOTED_NAME`] bytes at a character boundary.
fn quoted_name(name: &str) -> String {
    if name.len() <= MAX_QUOTED_NAME {
        return name.to_string();
    }
    let mut end = MAX_QUOTED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let QueryError::BadParameter { name, .. } = QueryError::bad(&long, "x") else {
            unreachable!()
        };
        assert!(name.len() <= MAX_QUOTED_NAME + "…".len(), "{}", name.len());
        assert!(name.ends_with('…') && name.starts_with("éé"));
        assert_eq!(QueryError::bad("k", "too big").to_string(), "k: too big");
    }
}
