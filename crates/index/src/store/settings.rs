//! An index's settings, written once when it is created: the model and dimension its vectors
//! belong to, and the random salt of its patient keys (from the OS random source, never a
//! guessable fallback: a predictable salt would let anyone who knows a PatientID find it).

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// The schema of `index.sqlite` this code writes.
pub(super) const SCHEMA_VERSION: &str = "1";

/// The model an index was built with, its embedding dimension, and its patient-key salt.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The model's catalogue name.
    pub model: String,
    /// Values per vector.
    pub dim: usize,
    salt: String,
}

impl Settings {
    /// New settings for a fresh index, with a salt from the OS random source.
    pub(super) fn new(model: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            model: model.into(),
            dim,
            salt: random_salt()?,
        })
    }

    /// New settings with a salt from the OS random source, for an index kept elsewhere (a
    /// Milvus collection records them itself).
    pub fn generate(model: &str, dim: usize) -> Result<Self> {
        Self::new(model, dim)
    }

    /// Settings recorded elsewhere (a Milvus collection's), salt included.
    pub fn with_salt(model: &str, dim: usize, salt: &str) -> Self {
        Self {
            model: model.into(),
            dim,
            salt: salt.into(),
        }
    }

    /// The patient-key salt, for recording settings elsewhere (never log it).
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// A stable pseudonym for a patient id, unique to this index.
    pub fn patient_key(&self, raw: &str) -> String {
        let d = Sha256::digest(format!("{}:{}", self.salt, raw.trim()).as_bytes());
        hex(&d[..8])
    }

    /// The stored settings, or `None` for an index that has none yet.
    pub(super) fn read(conn: &Connection) -> Result<Option<Self>> {
        let get = |k: &str| -> Result<Option<String>> {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()?)
        };
        let (Some(model), Some(dim), Some(salt)) = (get("model")?, get("dim")?, get("salt")?)
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            model,
            dim: dim.parse().context("bad dim in index settings")?,
            salt,
        }))
    }

    /// Store these settings (one transaction).
    pub(super) fn write(&self, conn: &Connection) -> Result<()> {
        let tx = conn.unchecked_transaction()?;
        for (k, v) in [
            ("model", self.model.clone()),
            ("dim", self.dim.to_string()),
            ("salt", self.salt.clone()),
            ("schema", SCHEMA_VERSION.into()),
        ] {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn random_salt() -> Result<String> {
    let mut seed = [0u8; 16];
    getrandom::fill(&mut seed).map_err(|e| {
        anyhow::anyhow!("no randomness from the OS for the index's patient-key salt: {e}")
    })?;
    Ok(hex(&seed))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_are_random_and_full_length() {
        let a = random_salt().unwrap();
        let b = random_salt().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
