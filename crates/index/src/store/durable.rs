//! Durability of the index folder, stated once (as tantivy's `mmap_directory` does): a file
//! that is created or renamed is not durable until its *directory entry* is, so every creation
//! in the index folder, and the folder itself, is followed by an fsync of the containing
//! directory. SQLite syncs the directory for the files it creates itself; this covers ours.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// fsync a directory, so that entries created or renamed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// `create_dir_all`, then fsync the new folder and its parent, so that the folder exists after
/// a crash once this returns.
pub fn create_dir_synced(dir: &Path) -> Result<()> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !existed {
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Open (creating if missing, never truncating) a file in `dir` for reading and writing; a newly
/// created file's directory entry is synced before this returns.
pub fn open_or_create(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    let existed = path.exists();
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !existed {
        f.sync_all()?;
        sync_dir(dir)?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn creates_nested_folders_and_never_truncates() {
        let root = std::env::temp_dir().join(format!("simcase-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("a/b");
        create_dir_synced(&dir).unwrap();
        assert!(dir.is_dir());
        open_or_create(&dir, "f")
            .unwrap()
            .write_all(b"kept")
            .unwrap();
        let mut s = String::new();
        open_or_create(&dir, "f")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "kept");
        assert!(sync_dir(&root.join("missing")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
