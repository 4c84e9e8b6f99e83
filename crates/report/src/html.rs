//! The report page: one HTML file with its style inline, the figures as inline SVG and the
//! thumbnails as data URIs. No script and no external resource, so it opens from a USB stick,
//! an e-mail or an air-gapped workstation as it does here. It shows labels, scores and
//! pixels, never a path or a patient identifier.

use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.3}"))
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1560px;\
padding:1.2em 2em;color:#1b1b1b}h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.8em;\
border-bottom:1px solid #ddd;padding-bottom:.2em}figure{margin:1em 0}figure svg{max-width:100%;\
height:auto}figcaption{color:#444;max-width:60em}table{border-collapse:collapse;margin:.6em 0}\
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}\
td:first-child,th:first-child,#summary td:nth-child(2),#summary th:nth-child(2){text-align:left}.note{background:#fff8e1;border-left:4px solid \
#f0b400;padding:.5em 1em}.ex{display:flex;gap:.6em;align-items:flex-start;margin:.5em 0 1em}\
.ex div{width:120px;font-size:12px;text-align:center}.ex img{width:112px;height:112px;\
object-fit:contain;background:#111;border:3px solid #bbb}.ex .q img{border-color:#1f77b4}\
.ex .ok img{border-color:#2ca02c}.ex .no img{border-color:#d62728}.muted{color:#666}";

/// The page from the report JSON, the drawn figures `(name, svg)` and each model's
/// thumbnails (by item id).
pub fn page(
    report: &Value,
    figures: &[(String, String)],
    thumbs: &[&HashMap<u64, Option<String>>],
) -> String {
    let models = report["models"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap_or("?"))
        .collect();
    let svg = |name: &str| {
        figures
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str())
            .unwrap_or("")
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>simcase report: {}</title><style>{STYLE}</style></head><body>",
        esc(report["manifest"].as_str().unwrap_or(""))
    );
    let _ = write!(
        h,
        "<h1>Retrieval report: {}</h1><p class=\"muted\">simcase {} · models: {} · protocol \
         of Denner et al. (2025): index = train split, queries = test split, cosine search \
         over L2-normalised embeddings, modified P@N (N capped by the class's size in the \
         index), kNN label vote with k tuned on val. Figures as SVG and PNG in \
         <code>figures/</code>, their numbers in <code>report.json</code>.</p>",
        esc(report["manifest"].as_str().unwrap_or("")),
        esc(report["version"].as_str().unwrap_or("")),
        esc(&names.join(", "))
    );
    if let Some(s) = report["skipped"].as_str() {
        let _ = write!(h, "<p class=\"note\" id=\"skipped\">{}</p>", esc(s));
    } else {
        summary(&mut h, &models);
        let fig = |h: &mut String, name: &str, caption: &str| {
            let _ = write!(
                h,
                "<figure id=\"fig-{name}\">{}<figcaption>{caption}</figcaption></figure>",
                svg(name)
            );
        };
        let _ = write!(h, "<h2>P@N as N grows</h2>");
        fig(
            &mut h,
            "pn-curve",
            "Modified P@N for N = 1…100, micro (solid, mean over queries) and macro (dashed, \
             mean over classes), per label level; dots mark the paper's N = 1, 3, 5, 10.",
        );
        let _ = write!(h, "<h2>Modalities, anatomy and pathology</h2>");
        fig(
            &mut h,
            "modality",
            "P@1 (micro) per modality at the full label; the paper found ultrasound and CT \
             easiest and X-ray hardest.",
        );
        fig(
            &mut h,
            "levels",
            "P@1 (micro) at each label level: the modality, modality/anatomy and the full \
             modality/anatomy/pathology label. Anatomy is easier than pathology.",
        );
        adaptation(&mut h, &models);
        per_class(&mut h, &models);
        let _ = write!(h, "<h2>Confusion of the top-1 retrieved label</h2>");
        for n in &names {
            if !figures.iter().any(|(f, _)| *f == format!("confusion-{n}")) {
                let _ = write!(
                    h,
                    "<p class=\"note\">{}: more than {} classes, too many for a readable \
                     heat map; the counts are in <code>report.json</code>.</p>",
                    esc(n),
                    crate::figures::MAX_CONFUSION
                );
                continue;
            }
            fig(
                &mut h,
                &format!("confusion-{n}"),
                &format!(
                    "{}: rows are true labels, columns the label of the first retrieved image; \
                     shade is the row's share, the diagonal is outlined. A row's sum is its \
                     class's queries in the table above.",
                    esc(n)
                ),
            );
        }
        let _ = write!(h, "<h2>kNN vote</h2>");
        fig(
            &mut h,
            "knn",
            "Accuracy of the kNN label vote at the full label as k grows, on test (solid) and \
             val (dashed); the dot is the k tuned on val.",
        );
        let _ = write!(h, "<h2>Index-size scaling</h2>");
        fig(&mut h, "scaling", &scaling_caption(&models));
    }
    let _ = write!(h, "<h2>Embedding map</h2>");
    for n in &names {
        let _ = write!(
            h,
            "<figure id=\"fig-map-{n}\">{}<figcaption>{}: the first two principal \
             components of every embedded image.</figcaption></figure>",
            svg(&format!("map-{n}")),
            esc(n)
        );
    }
    examples(&mut h, &models, thumbs);
    h.push_str("</body></html>\n");
    h
}

fn summary(h: &mut String, models: &[Value]) {
    let _ = write!(
        h,
        "<h2>Summary</h2><table id=\"summary\"><tr><th>model</th><th>level</th>\
         <th>P@1</th><th>P@3</th><th>P@5</th><th>P@10</th><th>kNN k</th><th>kNN acc</th>\
         <th>kNN macro-F1</th></tr>"
    );
    for m in models {
        for lvl in simcase_eval::LEVELS {
            let l = &m["eval"]["levels"][lvl];
            let k = &m["eval"]["knn"][lvl];
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{lvl}</td>",
                esc(m["model"].as_str().unwrap_or("?"))
            );
            for n in simcase_eval::NS {
                let p = &l[format!("P@{n}")];
                let _ = write!(h, "<td>{} / {}</td>", num(&p["micro"]), num(&p["macro"]));
            }
            let _ = write!(
                h,
                "<td>{}</td><td>{}</td><td>{}</td></tr>",
                k["k"],
                num(&k["accuracy"]),
                num(&k["macro_f1"])
            );
        }
    }
    let c = &models.first().map(|m| m["eval"]["counts"].clone());
    let _ = write!(
        h,
        "</table><p class=\"muted\">P@N cells are micro / macro. Index {} images, {} \
         queries (test), {} val; {} manifest rows could not be used.</p>",
        c.as_ref().map_or(Value::Null, |c| c["index"].clone()),
        c.as_ref().map_or(Value::Null, |c| c["test"].clone()),
        c.as_ref().map_or(Value::Null, |c| c["val"].clone()),
        c.as_ref()
            .map_or(Value::Null, |c| c["unusable_rows"].clone()),
    );
}

/// Frozen against adapted: P@1 at each level, P@10 and the kNN vote at the full label, and
/// P@1 on classes the adapter never saw.
fn adaptation(h: &mut String, models: &[Value]) {
    let _ = write!(
        h,
        "<h2>Adaptation without retraining</h2><table id=\"adapted\"><tr><th>model</th>\
         <th>space</th><th>dim</th><th>P@1 modality</th><th>P@1 anatomy</th><th>P@1 label</th>\
         <th>P@10 label</th><th>kNN acc</th><th>unseen classes P@1</th></tr>"
    );
    let cells = |h: &mut String, levels: &Value, knn: &Value| {
        for lvl in simcase_eval::LEVELS {
            let p = &levels[lvl]["P@1"];
            let _ = write!(h, "<td>{} / {}</td>", num(&p["micro"]), num(&p["macro"]));
        }
        let p = &levels[simcase_eval::LEVELS[2]]["P@10"];
        let _ = write!(
            h,
            "<td>{} / {}</td><td>{}</td>",
            num(&p["micro"]),
            num(&p["macro"]),
            num(&knn[simcase_eval::LEVELS[2]]["accuracy"])
        );
    };
    for m in models {
        let name = esc(m["model"].as_str().unwrap_or("?"));
        let adapted = m["adapted"].as_array().cloned().unwrap_or_default();
        let frozen_unseen = adapted
            .iter()
            .find_map(|a| a["unseen"]["frozen_P@1"].as_f64());
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>frozen</td><td>{}</td>",
            m["eval"]["dim"]
                .as_u64()
                .map_or("–".into(), |d| d.to_string())
        );
        cells(h, &m["eval"]["levels"], &m["eval"]["knn"]);
        let _ = write!(
            h,
            "<td>{}</td></tr>",
            frozen_unseen.map_or("–".into(), |p| format!("{p:.3}"))
        );
        for a in &adapted {
            let method = esc(a["method"].as_str().unwrap_or("?"));
            if let Some(e) = a["error"].as_str() {
                let _ = write!(
                    h,
                    "<tr><td>{name}</td><td>{method}</td><td colspan=\"7\" class=\"muted\">{}</td></tr>",
                    esc(e)
                );
                continue;
            }
            let _ = write!(
                h,
                "<tr><td>{name}</td><td>{method}</td><td>{}</td>",
                a["dim"]
            );
            cells(h, &a["levels"], &a["knn"]);
            let u = &a["unseen"];
            let flag = if u["hurts_unseen"] == true {
                " (hurts)"
            } else {
                ""
            };
            let _ = write!(h, "<td>{}{flag}</td></tr>", num(&u["adapted_P@1"]));
        }
    }
    let _ = write!(
        h,
        "</table><p class=\"muted\">Cells are micro / macro. Each adapter is learned from the \
         train rows and tuned on val (test never), then scored with the same protocol; \
         <code>simcase adapt --index DIR --method M</code> stores one with an index, and \
         <code>search --view</code> or the API's <code>view=</code> applies it; \
         <code>frozen+kr</code> re-ranks the frozen model's top 100 (<code>--rerank kr</code>). \
         Unseen classes: \
         20% of the full labels held out of adaptation, P@1 of their test queries; \
         \"hurts\" marks a loss of more than 0.02 against the frozen model.</p>"
    );
}

fn per_class(h: &mut String, models: &[Value]) {
    let Some(first) = models.first() else { return };
    let _ = write!(
        h,
        "<h2>Per class, worst first</h2><table id=\"per-class\"><tr><th>class</th>\
         <th>index</th><th>queries</th>"
    );
    for m in models {
        let n = esc(m["model"].as_str().unwrap_or("?"));
        let _ = write!(h, "<th>{n} P@1</th><th>{n} P@10</th><th>{n} kNN F1</th>");
    }
    h.push_str("</tr>");
    let rows = |m: &Value| -> HashMap<String, Value> {
        m["analysis"]["per_class"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["class"].as_str().unwrap_or("").to_string(), r.clone()))
            .collect()
    };
    let others: Vec<HashMap<String, Value>> = models.iter().map(rows).collect();
    for r in first["analysis"]["per_class"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let class = r["class"].as_str().unwrap_or("");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            esc(class),
            r["index"],
            r["queries"]
        );
        for o in &others {
            let r = o.get(class).cloned().unwrap_or(Value::Null);
            let _ = write!(
                h,
                "<td>{}</td><td>{}</td><td>{}</td>",
                num(&r["P@1"]),
                num(&r["P@10"]),
                num(&r["knn_f1"])
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p class=\"muted\">Sorted by the first model's P@1, then P@10. A class with no \
         queries, or none in the index, has no P@N (–) and comes last.</p>"
    );
    let singles: Vec<String> = first["analysis"]["single_image_classes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} ({})",
                esc(s["class"].as_str().unwrap_or("")),
                esc(s["where"].as_str().unwrap_or(""))
            )
        })
        .collect();
    if !singles.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\" id=\"single\">Classes with one image: {}.</p>",
            singles.join("; ")
        );
    }
}

fn scaling_caption(models: &[Value]) -> String {
    let mut s = String::from(
        "Each class of the index cut to at most n examples (a seeded draw; mean over seeds, \
         band from the lowest to the highest seed), queries unchanged. The last point is the \
         largest class's size, where the index is whole. Rule: ",
    );
    s.push_str(crate::analysis::FLAT_RULE);
    s.push_str(" (dashed line). ");
    for m in models {
        let sc = &m["analysis"]["scaling"];
        let at = match sc["flattens_at"].as_u64() {
            Some(n) => format!("flattens at n = {n}"),
            None => "does not flatten".into(),
        };
        let _ = write!(
            s,
            "{}: full-index P@1 {}, {at} ({} seeds). ",
            esc(m["model"].as_str().unwrap_or("?")),
            num(&sc["full_P@1"]),
            sc["seeds"]
        );
    }
    s
}

fn examples(h: &mut String, models: &[Value], thumbs: &[&HashMap<u64, Option<String>>]) {
    let _ = write!(h, "<h2>Retrieval examples</h2>");
    let img = |t: &HashMap<u64, Option<String>>, id: &Value| match id
        .as_u64()
        .and_then(|i| t.get(&i).cloned().flatten())
    {
        Some(uri) => format!("<img alt=\"\" src=\"{uri}\">"),
        None => "<img alt=\"(unreadable)\">".into(),
    };
    for (m, t) in models.iter().zip(thumbs) {
        let list = if m["examples"].is_array() {
            &m["examples"]
        } else {
            &m["analysis"]["examples"]
        };
        let _ = write!(
            h,
            "<h3>{}</h3><p class=\"muted\">The query (blue) and its five nearest index \
             images; green: same full label, red: another.</p>",
            esc(m["model"].as_str().unwrap_or("?"))
        );
        for e in list.as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<div class=\"ex\"><div class=\"q\">{}<br>query<br>{}</div>",
                img(t, &e["id"]),
                esc(e["label"].as_str().unwrap_or("(no label)"))
            );
            for (i, hit) in e["hits"].as_array().into_iter().flatten().enumerate() {
                let class = match hit["correct"].as_bool() {
                    Some(true) => "ok",
                    Some(false) => "no",
                    None => "",
                };
                let _ = write!(
                    h,
                    "<div class=\"{class}\">{}<br>#{} · {}<br>{}</div>",
                    img(t, &hit["id"]),
                    i + 1,
                    num(&hit["score"]),
                    esc(hit["label"].as_str().unwrap_or("(no label)"))
                );
            }
            h.push_str("</div>");
        }
    }
}
