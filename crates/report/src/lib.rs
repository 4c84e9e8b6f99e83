//! `simcase report`: the paper's analyses of a labelled manifest as one self-contained page.
//! Each model's manifest is embedded once into eval's per-model index (resuming, so a second
//! report or an earlier `simcase eval` costs no embedding), and every figure is computed from
//! those stored vectors: the P@N curve, modalities and label levels, the per-class table, the
//! top-1 confusion, kNN accuracy against k, the index-size scaling curve, a PCA map and
//! retrieval examples. The output folder holds `index.html` (figures inlined as SVG,
//! thumbnails as data URIs: no network, no script), `figures/*.svg|png` and `report.json`,
//! the numbers every figure was drawn from. It is written beside its final place and renamed
//! into it, so a failed run leaves no half report.

pub mod analysis;
pub mod figures;
mod html;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use simcase_eval::protocol::{self, Row};
use simcase_eval::{at_level, LEVELS};
use simcase_models::ModelId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What to report on, and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// The manifest (labelled with a `split` column for the protocol's figures).
    pub manifest: PathBuf,
    /// Models, side by side (each must be installed).
    pub models: Vec<ModelId>,
    /// The report folder.
    pub out: PathBuf,
    /// Replace an existing report folder.
    pub force: bool,
    /// Eval's folder of per-model indexes (default `$SIMCASE_HOME/eval`).
    pub work: Option<PathBuf>,
    /// Images embedded together.
    pub batch: usize,
    /// The analyses' knobs.
    pub knobs: analysis::Knobs,
}

/// What a report run made.
#[derive(Debug)]
pub struct Summary {
    /// The page.
    pub index: PathBuf,
    /// Figures written (each as SVG and PNG).
    pub figures: Vec<String>,
    /// Figures not drawn, with why, one line.
    pub skipped: Option<String>,
}

/// A progress bar on stderr (hidden when `quiet`).
pub(crate) fn progress(len: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Refuse an existing `out` unless `force`; with `force`, only a folder that is empty or
/// holds an earlier report (its `report.json`) is replaced, never any other folder.
pub fn check_out(out: &Path, force: bool) -> Result<()> {
    anyhow::ensure!(
        out.file_name().is_some(),
        "{}: --out needs a folder name",
        out.display()
    );
    if !out.exists() {
        return Ok(());
    }
    let shown = out.display();
    anyhow::ensure!(
        force,
        "{shown} already exists; give another --out, or --force to replace the report in it"
    );
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("{shown}: cannot read the existing folder"))?
        .next()
        .is_none();
    let earlier = std::fs::read(out.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["simcase_report"].is_number());
    anyhow::ensure!(
        empty || earlier,
        "{shown} exists and is not a simcase report folder (no report.json); --force only \
         replaces an earlier report, so give another --out"
    );
    Ok(())
}

/// One model's part of the report: its eval report and analyses (scored manifests), its map
/// and examples, and the thumbnails the page shows.
struct ModelPart {
    json: Value,
    thumbs: HashMap<u64, Option<String>>,
}

/// Build the report. Models must be installed.
pub fn run(o: &Options) -> Result<Summary> {
    check_out(&o.out, o.force)?;
    anyhow::ensure!(!o.models.is_empty(), "report needs at least one --model");
    // An unreadable manifest fails here; an unlabelled one gets the figures without labels.
    simcase_ingest::read_manifest(&o.manifest)?;
    let scored = protocol::check_manifest(&o.manifest).err();
    let eval_opts = protocol::Options {
        manifest: o.manifest.clone(),
        work: o.work.clone(),
        batch: o.batch,
        quiet: o.knobs.quiet,
    };
    let mut parts = Vec::new();
    for &m in &o.models {
        parts.push(match &scored {
            None => scored_part(&eval_opts, m, &o.knobs)?,
            Some(_) => unscored_part(&eval_opts, m, &o.knobs)?,
        });
    }
    let skipped = scored.as_ref().map(|why| {
        format!(
            "skipped the P@N curve, modality and level bars, per-class table, confusion, kNN \
             curve and scaling curve: {}",
            one_line(&format!("{why:#}"))
        )
    });
    let name = o
        .manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let report = json!({
        "simcase_report": 1,
        "manifest": name,
        "version": env!("CARGO_PKG_VERSION"),
        "skipped": skipped,
        "models": parts.iter().map(|p| p.json.clone()).collect::<Vec<_>>(),
    });
    // Written beside the final folder, then renamed into place.
    let parent = o
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("{}: cannot create the folder", parent.display()))?;
    let leaf = o
        .out
        .file_name()
        .context("--out needs a folder name")?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{leaf}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = write_report(&tmp, &report, &parts);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let figures = written?;
    // Checked again: a folder may have appeared at --out while the models ran.
    if let Err(e) = check_out(&o.out, o.force) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if o.out.exists() {
        let old = parent.join(format!(".{leaf}.old-{}", std::process::id()));
        std::fs::rename(&o.out, &old)
            .with_context(|| format!("{}: cannot move the old report aside", o.out.display()))?;
        if let Err(e) = std::fs::rename(&tmp, &o.out) {
            // Put the old report back rather than leave nothing at --out.
            let _ = std::fs::rename(&old, &o.out);
            return Err(e).with_context(|| {
                format!("{}: cannot move the report into place", o.out.display())
            });
        }
        std::fs::remove_dir_all(&old).ok();
    } else {
        std::fs::rename(&tmp, &o.out)
            .with_context(|| format!("{}: cannot move the report into place", o.out.display()))?;
    }
    simcase_index::store::durable::sync_dir(parent).ok();
    Ok(Summary {
        index: o.out.join("index.html"),
        figures,
        skipped,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Draw every figure into `dir/figures`, then `report.json` and `index.html`.
fn write_report(dir: &Path, report: &Value, parts: &[ModelPart]) -> Result<Vec<String>> {
    let figs = dir.join("figures");
    std::fs::create_dir_all(&figs).with_context(|| format!("creating {}", figs.display()))?;
    let mut drawn: Vec<(String, String)> = Vec::new();
    let mut save = |name: &str, (svg, png): (String, Vec<u8>)| -> Result<()> {
        for (ext, bytes) in [("svg", svg.as_bytes()), ("png", png.as_slice())] {
            let mut f = std::fs::File::create(figs.join(format!("{name}.{ext}")))?;
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()?;
        }
        drawn.push((name.to_string(), svg));
        Ok(())
    };
    let models = report["models"].as_array().cloned().unwrap_or_default();
    let named = |key: &str| -> Vec<(&str, &Value)> {
        models
            .iter()
            .filter(|m| !m["analysis"].is_null())
            .map(|m| (m["model"].as_str().unwrap_or("?"), &m["analysis"][key]))
            .collect()
    };
    if report["skipped"].is_null() {
        save(
            "pn-curve",
            figures::render(&figures::PnCurve {
                models: named("curve"),
            })?,
        )?;
        // Per modality (full label), and the three label levels, P@1 micro.
        let mut mods: Vec<String> = models
            .iter()
            .flat_map(|m| {
                m["eval"]["per_modality"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        mods.sort();
        mods.dedup();
        let p1 = |v: &Value| v["P@1"]["micro"].as_f64();
        let series = |f: &dyn Fn(&Value) -> Vec<Option<f64>>| -> Vec<(&str, Vec<Option<f64>>)> {
            models
                .iter()
                .map(|m| (m["model"].as_str().unwrap_or("?"), f(&m["eval"])))
                .collect()
        };
        save(
            "modality",
            figures::render(&figures::Bars {
                title: "P@1 (micro) per modality, full label".into(),
                y: "modified P@1",
                groups: mods.clone(),
                series: series(&|e| {
                    mods.iter()
                        .map(|m| p1(&e["per_modality"][m][LEVELS[2]]))
                        .collect()
                }),
            })?,
        )?;
        save(
            "levels",
            figures::render(&figures::Bars {
                title: "P@1 (micro): modality, anatomy, pathology".into(),
                y: "modified P@1",
                groups: vec!["modality".into(), "anatomy".into(), "pathology".into()],
                series: series(&|e| LEVELS.iter().map(|l| p1(&e["levels"][l])).collect()),
            })?,
        )?;
        save(
            "knn",
            figures::render(&figures::Knn {
                models: named("knn_curve"),
                level: LEVELS[2],
            })?,
        )?;
        save(
            "scaling",
            figures::render(&figures::Scaling {
                models: named("scaling"),
            })?,
        )?;
        for m in &models {
            let name = m["model"].as_str().unwrap_or("?");
            // A heat map of thousands of classes is neither readable nor small: the counts
            // stay in report.json.
            let n = m["analysis"]["confusion"]["classes"]
                .as_array()
                .map_or(0, Vec::len);
            if n > figures::MAX_CONFUSION {
                continue;
            }
            save(
                &format!("confusion-{name}"),
                figures::render(&figures::Confusion {
                    model: name,
                    data: &m["analysis"]["confusion"],
                })?,
            )?;
        }
    }
    for m in &models {
        let name = m["model"].as_str().unwrap_or("?");
        let map = &m["map"];
        let points: Vec<(f64, f64)> = map["points"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| (p[0].as_f64().unwrap_or(0.0), p[1].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        let cats = |key: &str| -> Vec<String> {
            map[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap_or("(no label)").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let colourings: Vec<(&str, Vec<String>)> = if map["label"].is_array() {
            vec![("modality", cats("modality")), ("label", cats("label"))]
        } else {
            vec![("manifest order", cats("order"))]
        };
        save(
            &format!("map-{name}"),
            figures::render(&figures::Map {
                model: name,
                points,
                explained: (
                    map["explained"][0].as_f64().unwrap_or(0.0),
                    map["explained"][1].as_f64().unwrap_or(0.0),
                ),
                colourings,
            })?,
        )?;
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    let thumbs: Vec<&HashMap<u64, Option<String>>> = parts.iter().map(|p| &p.thumbs).collect();
    std::fs::write(dir.join("index.html"), html::page(report, &drawn, &thumbs))?;
    for f in ["report.json", "index.html"] {
        if let Ok(f) = std::fs::File::open(dir.join(f)) {
            f.sync_all().ok();
        }
    }
    simcase_index::store::durable::sync_dir(&figs).ok();
    simcase_index::store::durable::sync_dir(dir).ok();
    Ok(drawn.into_iter().map(|(n, _)| n).collect())
}

/// Thumbnails (PNG data URIs) of the ids the examples show; `None` where a file cannot be
/// read any more.
fn thumbnails(examples: &[Value], paths: &HashMap<u64, &Path>) -> HashMap<u64, Option<String>> {
    use base64::Engine as _;
    let mut ids: Vec<u64> = Vec::new();
    for e in examples {
        ids.extend(e["id"].as_u64());
        for h in e["hits"].as_array().into_iter().flatten() {
            ids.extend(h["id"].as_u64());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let opts = simcase_imaging::DecodeOptions::default();
    ids.into_iter()
        .map(|id| {
            let uri = paths
                .get(&id)
                .and_then(|p| {
                    let p = std::path::Path::new(p);
                    simcase_imaging::thumbnail_png(simcase_imaging::Input::File(p), 112, &opts)
                        .ok()
                        .flatten()
                })
                .map(|png| {
                    format!(
                        "data:image/png;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(png)
                    )
                });
            (id, uri)
        })
        .collect()
}

fn scored_part(a: &protocol::Options, m: ModelId, knobs: &analysis::Knobs) -> Result<ModelPart> {
    let (reader, rows, missing) = protocol::embed_manifest(a, m, None)?;
    let eval = protocol::evaluate(&reader, &rows, missing, knobs.max_k, None)?;
    let adapted = adapted(&reader, &rows, missing, knobs)?;
    let split = analysis::Split::new(&reader, &rows);
    let an = analysis::labelled(&split, &eval, knobs)?;
    let map = map_of(&reader, &rows)?;
    let paths: HashMap<u64, &Path> = rows.iter().map(|r| (r.id(), r.path())).collect();
    let thumbs = thumbnails(an["examples"].as_array().map_or(&[], |v| v), &paths);
    Ok(ModelPart {
        json: json!({ "model": m.name(), "eval": eval, "analysis": an, "map": map,
                      "adapted": adapted }),
        thumbs,
    })
}

/// The linear adapters `simcase adapt` offers, and k-reciprocal re-ranking of the frozen model (the MLP head takes tens of seconds more; `simcase
/// eval --adapt mlp` scores it), each learned from the train rows and tuned on val, scored with
/// the protocol unchanged, and checked on classes it never saw (leave-classes-out: 20% of the
/// full labels held out of adaptation). A method that cannot learn from this manifest (too few
/// val rows, one class) is listed with its reason.
fn adapted(
    reader: &simcase_index::Reader,
    rows: &[Row],
    missing: usize,
    knobs: &analysis::Knobs,
) -> Result<Value> {
    use simcase_eval::adapted::{self as ad, Space};
    let space = Space::frozen(reader, rows)?;
    let held = ad::held_out_classes(rows, 0.2);
    let held_set: std::collections::HashSet<String> = held.iter().cloned().collect();
    let frozen_unseen = ad::unseen_p1(&space, rows, &held_set).ok();
    let mut out = Vec::new();
    for method in [
        simcase_adapt::Method::Whiten,
        simcase_adapt::Method::Lw,
        simcase_adapt::Method::Lda,
    ] {
        let (a, fitted) = match ad::adapt(&space, rows, method, &Default::default()) {
            Ok(x) => x,
            Err(e) => {
                out.push(json!({ "method": method.name(), "error": one_line(&format!("{e:#}")) }));
                continue;
            }
        };
        let r = a.score(rows, missing, knobs.max_k, None)?;
        let unseen = match frozen_unseen {
            Some(fu) if fu.1 > 0 => ad::adapt(&space, rows, method, &held_set)
                .and_then(|(lco, _)| ad::unseen_p1(&lco, rows, &held_set))
                .ok()
                .map(|(p, _)| ad::unseen_record(&a.name, fu, p, &held)),
            _ => None,
        };
        out.push(json!({
            "method": method.name(),
            "dim": fitted.adapter.dim_out,
            "tuned": fitted.adapter.tuned,
            "levels": r["levels"],
            "knn": r["knn"],
            "unseen": unseen,
        }));
    }
    // k-reciprocal re-ranking of the frozen model's top 100, knobs tuned on val.
    if let Ok((kr, _)) = ad::tune_kr(&space, rows) {
        let f = |q: &[f32], short: &[&[f32]]| kr.rerank(q, short);
        let r = protocol::evaluate_reranked(
            &format!("{}+kr", space.name),
            space.dim,
            rows,
            &|id| space.vectors.get(&id).map(Vec::as_slice),
            Some(&f),
            missing,
            knobs.max_k,
            None,
        )?;
        out.push(json!({
            "method": "frozen+kr",
            "dim": space.dim,
            "tuned": { "k1": kr.k1, "k2": kr.k2, "lambda": (f64::from(kr.lambda) * 1e6).round() / 1e6 },
            "levels": r["levels"],
            "knn": r["knn"],
            "unseen": null,
        }));
    }
    Ok(Value::Array(out))
}

/// The PCA map of every scored row, with its modality and label.
fn map_of(reader: &simcase_index::Reader, rows: &[Row]) -> Result<Value> {
    let ids: Vec<u64> = rows.iter().map(Row::id).collect();
    let mut map = analysis::pca(reader, &ids)?;
    map["modality"] = rows.iter().map(|r| at_level(r.label(), 0)).collect();
    map["label"] = rows.iter().map(|r| r.label().to_string()).collect();
    Ok(map)
}

fn unscored_part(a: &protocol::Options, m: ModelId, knobs: &analysis::Knobs) -> Result<ModelPart> {
    let (reader, rows, missing) = protocol::embed_all(a, m)?;
    let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
    let mut map = analysis::pca(&reader, &ids)?;
    if rows.iter().any(|r| r.label.is_some()) {
        let cut = |lvl: Option<usize>| -> Value {
            rows.iter()
                .map(|r| match (&r.label, lvl) {
                    (Some(l), Some(lvl)) => Value::from(at_level(l, lvl)),
                    (Some(l), None) => Value::from(l.as_str()),
                    (None, _) => Value::Null,
                })
                .collect()
        };
        map["modality"] = cut(Some(0));
        map["label"] = cut(None);
    } else {
        // No labels: coloured by where each image sits in the manifest (first to last fifth).
        let n = rows.len().max(1);
        map["order"] = (0..rows.len())
            .map(|i| format!("rows {}/5 of the manifest", i * 5 / n + 1))
            .collect();
    }
    let examples = analysis::unscored_examples(&reader, &rows, knobs.examples.max(1) * 4)?;
    let paths: HashMap<u64, &Path> = rows.iter().map(|r| (r.id, r.path.as_path())).collect();
    let thumbs = thumbnails(&examples, &paths);
    Ok(ModelPart {
        json: json!({ "model": m.name(), "eval": null, "analysis": null, "map": map,
                      "examples": examples, "unusable_rows": missing }),
        thumbs,
    })
}
