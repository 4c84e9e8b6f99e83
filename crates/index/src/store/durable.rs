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

/// Write a file atomically: `fill` writes a temporary file beside `path` (and hands it back),
/// which is synced, renamed over `path`, and the folder synced; on any error the temporary
/// file is removed and `path` is as it was. Returns the bytes written.
pub fn write_atomic(path: &Path, fill: impl FnOnce(File) -> Result<File>) -> Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> Result<u64> {
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let f = fill(f)?;
        f.sync_all()?;
        let n = f.metadata()?.len();
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)?;
        Ok(n)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
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
