//! An index's settings, written once when it is created: the model and dimension its vectors
//! belong to, and the random salt of its patient keys (from the OS random source, never a
//! guessable fallback: a predictable salt would let anyone who knows a PatientID find it).
//! The shares of a sharded ingest must share one salt, or one patient would get a key per
//! share that no merge can join (raw ids are never stored): a new index takes its salt from
//! `SIMCASE_PATIENT_SALT` when that is set, a secret given to every job (see `simcase merge`).

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// The schema of `index.sqlite` this code writes.
pub(super) const SCHEMA_VERSION: &str = "1";

/// The `meta` key of [`Settings::embedding_precision`].
const PRECISION_KEY: &str = "embedding_precision";

/// The environment variable a new index takes its patient-key salt from (32 to 128 hex
/// digits, e.g. `openssl rand -hex 16`), so that separate jobs make keys that join.
pub const SALT_ENV: &str = "SIMCASE_PATIENT_SALT";

/// The model an index was built with, its embedding dimension, and its patient-key salt.
#[derive(Clone)]
pub struct Settings {
    /// The model's catalogue name.
    pub model: String,
    /// Values per vector.
    pub dim: usize,
    salt: String,
    /// The arithmetic its vectors were embedded in (`f32`, `bf16`, or `mixed` once two
    /// ingests differed); `None` for an index made before this was recorded (f32).
    embedding_precision: Option<String>,
}

/// The salt stays out of logs and error messages.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("model", &self.model)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// New settings for a fresh index: the salt of `like` when given, else the one
    /// [`SALT_ENV`] gives, else one from the OS random source.
    pub(super) fn new(model: &str, dim: usize, like: Option<&Settings>) -> Result<Self> {
        let salt = match like {
            Some(s) => s.salt.clone(),
            None => match env_salt()? {
                Some(s) => s,
                None => random_salt()?,
            },
        };
        Ok(Self {
            model: model.into(),
            dim,
            salt,
            embedding_precision: None,
        })
    }

    /// The arithmetic the vectors were embedded in: `f32` (also for an index that predates
    /// the record), `bf16`, or `mixed`.
    pub fn embedding_precision(&self) -> &str {
        self.embedding_precision.as_deref().unwrap_or("f32")
    }

    /// Whether patient keys of both indexes are made with one salt (and so join).
    pub fn same_salt(&self, other: &Settings) -> bool {
        self.salt == other.salt
    }

    /// New settings for an index kept elsewhere (a Milvus collection records them itself):
    /// the salt [`SALT_ENV`] gives, else one from the OS random source, as for a new folder.
    pub fn generate(model: &str, dim: usize) -> Result<Self> {
        Self::new(model, dim, None)
    }

    /// Settings recorded elsewhere (a Milvus collection's), salt included.
    pub fn with_salt(model: &str, dim: usize, salt: &str) -> Self {
        Self {
            model: model.into(),
            dim,
            salt: salt.into(),
            embedding_precision: None,
        }
    }

    /// Refuse to write into `what` (an existing index or collection) when [`SALT_ENV`] is set
    /// to another salt than its own: the keys would not join those of the other jobs.
    pub fn check_env_salt(&self, what: &dyn std::fmt::Display) -> Result<()> {
        if let Some(salt) = env_salt()? {
            anyhow::ensure!(
                self.salt == salt,
                "{what} makes patient keys with another salt than {SALT_ENV} gives, so its keys \
                 would not join those of indexes made with it; unset {SALT_ENV} or use \
                 another --index"
            );
        }
        Ok(())
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
            embedding_precision: get(PRECISION_KEY)?,
        }))
    }

    /// Record that vectors embedded at `precision` are being added to an index of `rows` rows:
    /// the first ingest sets it, a later one at another precision makes it `mixed`. Returns
    /// the recorded value when it changed.
    pub(super) fn record_precision(
        &mut self,
        conn: &Connection,
        precision: &str,
        rows: usize,
    ) -> Result<Option<String>> {
        let now = match self.embedding_precision.as_deref() {
            _ if rows == 0 => precision.to_string(),
            Some(p) if p == precision => return Ok(None),
            None if precision == "f32" => return Ok(None),
            _ => "mixed".to_string(),
        };
        if self.embedding_precision.as_deref() == Some(now.as_str()) {
            return Ok(None);
        }
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![PRECISION_KEY, now],
        )?;
        self.embedding_precision = Some(now.clone());
        Ok(Some(now))
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

/// The salt [`SALT_ENV`] gives, lower-cased (`None` when unset or empty); an error, which
/// never shows the value, when it is not 32 to 128 hex digits.
pub(super) fn env_salt() -> Result<Option<String>> {
    let Some(v) = std::env::var_os(SALT_ENV).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = v.to_string_lossy().trim().to_ascii_lowercase();
    anyhow::ensure!(
        (32..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit()),
        "{SALT_ENV} is set but is not 32 to 128 hex digits ({} characters given; make one \
         with `openssl rand -hex 16`)",
        v.chars().count()
    );
    Ok(Some(v))
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
