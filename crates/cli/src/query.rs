//! `simcase search`: embed the query with the index's own model, exact cosine top-k, over a
//! local index folder or a Milvus collection (`--index milvus://…`), printed alike.

use anyhow::{bail, Context, Result};
use simcase_imaging::WindowPreset;
use simcase_index::Snapshot;
use simcase_milvus::MilvusUrl;
use simcase_models::default_device;
use simcase_query::remote::RemoteIndex;
use simcase_query::{
    params, Also, Duplicates, Field, Filters, GroupBy, Hit, Query, Request, Response,
};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct SearchArgs {
    /// An image or DICOM file, `id:N` for an indexed item ("more like this"), or an archived
    /// instance: dicomweb+http://HOST/PATH/studies/S/series/R/instances/I (its stored embedding
    /// when the index holds it, else fetched by WADO-RS and embedded).
    #[arg(required_unless_present = "text", conflicts_with = "text")]
    query: Option<String>,
    /// Search by text, e.g. "pneumothorax" (CLIP-family models: biomedclip, clip-vit-*).
    #[arg(long)]
    text: Option<String>,
    #[command(flatten)]
    embed: crate::EmbedPrecision,
    /// The index folder, or a Milvus collection: `milvus://[USER:PASSWORD@]HOST:PORT/COLLECTION`
    /// (credentials else from SIMCASE_MILVUS_USER / SIMCASE_MILVUS_PASSWORD).
    #[arg(long)]
    index: PathBuf,
    /// Results (1..=500): distinct images, or groups with --group-by.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Results (or groups) skipped before the first one printed: the next page.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// DICOM window override for the query: lung, mediastinum, abdomen, bone, brain, or C,W.
    #[arg(long)]
    window: Option<WindowPreset>,
    /// Return the top-k distinct patients (studies, series, volumes), each scored by its best
    /// image, instead of k images.
    #[arg(long)]
    group_by: Option<GroupBy>,
    /// Only items whose FIELD is VALUE (repeatable; fields: modality, anatomy, pathology,
    /// label, source, split, body_part, format, meta.COLUMN).
    #[arg(long = "filter", value_name = "FIELD=VALUE", value_parser = parse_filter)]
    filters: Vec<(Field, String)>,
    /// HNSW candidates per search (default: the index's, set by `index --hnsw-ef-search`);
    /// more is slower and closer to exact.
    #[arg(long)]
    ef_search: Option<usize>,
    /// With a milvus:// index, how searches see the latest writes: `strong` (every
    /// acknowledged write; each search first waits for the server's time tick, up to ~200 ms),
    /// `bounded` (writes older than ~5 s; milliseconds a search) or `eventually`.
    #[arg(long, default_value = "strong", value_name = "LEVEL")]
    consistency: simcase_milvus::Consistency,
    /// List every stored copy of an image (the same decoded pixels in other files or
    /// transfer syntaxes) as a hit of its own, instead of one hit that names the others.
    #[arg(long)]
    all_duplicates: bool,
    /// Search in a view that `simcase adapt` stored with the index (query and rows mapped
    /// through its adapter); an unknown name's error lists the index's views.
    #[arg(long, value_name = "NAME")]
    view: Option<String>,
    /// Re-rank the candidates: `aqe` (α-query expansion, n = 3, α = 3) or `kr` (k-reciprocal
    /// re-ranking of the best 100; hits keep their cosine scores). Local indexes only.
    #[arg(long, default_value = "none", value_name = "none|aqe|kr")]
    rerank: simcase_query::Rerank,
    /// With an archived instance as the query: keep results of the query's own study (left
    /// out by default, so that a search does not answer with the query's neighbouring slices).
    #[arg(long)]
    include_same_study: bool,
    /// Leave out results of the query's own patient (an indexed item or archived instance).
    #[arg(long)]
    exclude_same_patient: bool,
    /// Link every hit to the hospital's viewer: a template with {study}, {series} and {sop},
    /// e.g. 'http://ohif/viewer?StudyInstanceUIDs={study}'.
    #[arg(long, value_name = "TEMPLATE")]
    viewer_url: Option<simcase_query::ViewerUrl>,
    /// Write the search into a PACS as a DICOM SR (filed in the query's study): the query, the
    /// model, the index, and each result with its rank and score. The query must be an
    /// archived instance (dicomweb+…/instances/I) or an indexed DICOM item (id:N).
    #[arg(long, value_name = "dicomweb+http://HOST/PATH")]
    report_to_pacs: Option<String>,
}

fn parse_filter(s: &str) -> Result<(Field, String)> {
    let (f, v) = s.split_once('=').context("expected FIELD=VALUE")?;
    Ok((f.parse()?, v.to_string()))
}

/// `id:N`, an archived instance (`dicomweb+http://…/instances/I`), or a file embedded with
/// the index's model.
pub fn resolve(reader: &Snapshot, query: &str, window: Option<WindowPreset>) -> Result<Query> {
    if let Some(id) = query.strip_prefix("id:") {
        let id: u64 = id.parse().with_context(|| format!("bad item id {id:?}"))?;
        return Ok(Query::item(reader, id)?);
    }
    if simcase_pacs::is_dicomweb(query) {
        return archived(reader, query, window);
    }
    let enc = index_encoder(reader)?;
    Ok(Query::file(enc.as_ref(), Path::new(query), window)?)
}

fn index_encoder(reader: &Snapshot) -> Result<Box<dyn simcase_models::Encoder>> {
    let model: simcase_models::ModelSet = reader.settings().model.parse()?;
    crate::ensure_models(&model)?;
    model.load(&default_device())
}

/// An archived instance as the query: the index's item of that SOP Instance UID when it holds
/// one (nothing fetched), else the instance fetched by WADO-RS and embedded; either way the
/// query knows its study and patient (salted as the index salts them).
fn archived(reader: &Snapshot, url: &str, window: Option<WindowPreset>) -> Result<Query> {
    let (service, inst) = simcase_pacs::dicomweb::parse_instance_url(url)?;
    if let Some(id) = reader.id_by_sop_uid(&inst.sop)? {
        eprintln!("the index holds this instance (item {id}): its stored embedding is the query");
        return Ok(Query::item(reader, id)?);
    }
    let bytes = simcase_pacs::DicomWeb::open(&service)?.fetch(&inst)?;
    let opts = simcase_imaging::DecodeOptions {
        window,
        ..Default::default()
    };
    let d =
        simcase_imaging::decode_bytes(&bytes, &opts).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let enc = index_encoder(reader)?;
    let mut q = Query::image(enc.as_ref(), &d.image)?;
    let dicom = d.dicom.unwrap_or_default();
    q.origin = simcase_query::Origin {
        study_uid: dicom.study_uid.or(Some(inst.study)),
        patient_key: dicom.patient_id.map(|p| reader.settings().patient_key(&p)),
        series_uid: dicom.series_uid.or(Some(inst.series)),
        sop_uid: dicom.sop_uid.or(Some(inst.sop)),
    };
    Ok(q)
}

/// Write `res` into the PACS at `url` as a DICOM SR ([`simcase_pacs::sr`]), filed in the
/// query's study. The query's SOP class and patient come from the PACS (QIDO-RS); a hit's SOP
/// class from its stored item, else from the PACS; a hit with neither is left out, said.
fn report_to_pacs(
    url: &str,
    reader: &Snapshot,
    q: &Query,
    res: &Response,
    index: &Path,
) -> Result<()> {
    let dw = simcase_pacs::DicomWeb::open(url)?;
    let f = simcase_pacs::report::file(&dw, reader, index, &q.origin, &res.hits)
        .context("--report-to-pacs")?;
    eprintln!(
        "report: SR {} stored in {} (study {}), {} results{}",
        f.sr_uid,
        dw.url(),
        f.study_uid,
        f.results,
        if f.left_out > 0 {
            format!(
                " ({} without DICOM UIDs or a SOP class left out)",
                f.left_out
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `req` with the query's own study left out (an archived instance, unless
/// `--include-same-study`) and its patient (`--exclude-same-patient`).
fn leave_out_origin(a: &SearchArgs, q: &Query, req: &Request) -> Request {
    let archived = a.query.as_deref().is_some_and(simcase_pacs::is_dicomweb);
    let mut req = req.clone();
    req.filters.exclude_origin(
        &q.origin,
        archived && !a.include_same_study,
        a.exclude_same_patient,
    );
    req
}

/// Width of the LABEL column: longer labels are cut in the middle ([`shorten`]).
const LABEL_WIDTH: usize = 34;
/// Width of the PATIENT/GROUP column: long UIDs are cut in the middle ([`shorten`]).
const GROUP_WIDTH: usize = 20;
/// Copies named on a hit's "also stored as" line (all are counted).
const ALSO_NAMED: usize = 4;

use simcase_index::shorten;

/// A file's name, for lines that list several files.
fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// "4 more: id:12 a.dcm, id:13 b.dcm [frame 3], …": a count, and the first few copies by id,
/// file name and part.
fn copies(total: usize, also: &[Also]) -> String {
    let mut named: Vec<String> = also
        .iter()
        .take(ALSO_NAMED)
        .map(|a| {
            let part = match (a.frame, a.slice) {
                (Some(f), _) => format!(" [frame {f}]"),
                (None, Some(s)) => format!(" [slice {s}]"),
                (None, None) => String::new(),
            };
            match &a.path {
                Some(p) => format!("id:{} {}{part}", a.id, file_name(p)),
                None => format!("id:{}{part}", a.id),
            }
        })
        .collect();
    if total > named.len() {
        named.push("…".into());
    }
    format!("{total} more: {}", named.join(", "))
}

/// The results as a table: rank, score, id, label, patient or group (shortened to fixed
/// widths), and the path with the slice or frame that matched; copies of an image collapsed
/// into a hit on a line of their own.
pub fn print_table(results: &[Hit]) {
    println!(
        "{:>4}  {:>6}  {:>6}  {:<LABEL_WIDTH$} {:<GROUP_WIDTH$} PATH",
        "RANK", "SCORE", "ID", "LABEL", "PATIENT/GROUP"
    );
    for r in results {
        let label = r.label.as_deref().or(r.modality.as_deref()).unwrap_or("-");
        let group = r
            .group
            .as_deref()
            .or(r.patient_key.as_deref())
            .unwrap_or("-");
        let mut path = r.path.as_deref().unwrap_or("-").to_string();
        if let Some(place) = r.place() {
            path = format!("{path} [{place}]");
        }
        println!(
            "{:>4}  {:>6.4}  {:>6}  {:<LABEL_WIDTH$} {:<GROUP_WIDTH$} {path}",
            r.rank,
            r.score,
            r.id,
            shorten(label, LABEL_WIDTH),
            shorten(group, GROUP_WIDTH),
        );
        if r.duplicates > 0 {
            println!(
                "{:>22}(also stored as {})",
                "",
                copies(r.duplicates, &r.also)
            );
        }
        if let Some(v) = &r.viewer {
            println!("{:>22}viewer: {v}", "");
        }
    }
}

/// What a search's page leaves unsaid in a table: the query's own copies (left out), and why
/// the page is empty. Returned as lines; the caller picks the stream.
pub fn notes(res: &Response) -> Vec<String> {
    let mut out = Vec::new();
    if res.query_duplicates > 0 {
        out.push(format!(
            "(the query is also stored as {}; left out of the results)",
            copies(res.query_duplicates, &res.query_also)
        ));
    }
    if let Some(why) = &res.empty_reason {
        out.push(format!("no results: {why}"));
    }
    out
}

pub fn search_cmd(a: &SearchArgs) -> Result<()> {
    let k = params::check_k(a.k, params::MAX_K)?;
    a.embed.apply();
    if let Some(ef) = a.ef_search {
        anyhow::ensure!((1..=4096).contains(&ef), "--ef-search must be 1..=4096");
    }
    let mut filters = Filters::default();
    for (f, v) in &a.filters {
        filters.fields.entry(f.clone()).or_default().push(v.clone());
    }
    let req = Request {
        k,
        offset: a.offset,
        filters,
        group_by: a.group_by,
        duplicates: if a.all_duplicates {
            Duplicates::All
        } else {
            Duplicates::Collapse
        },
        rerank: a.rerank,
    };
    let index = a.index.to_string_lossy();
    let mut res = if MilvusUrl::is_milvus(&index) {
        anyhow::ensure!(
            a.view.is_none() && a.report_to_pacs.is_none(),
            "--view and --report-to-pacs work with a local index folder, not a Milvus collection"
        );
        search_remote(a, &index, &req)?
    } else {
        search_local(a, &req)?
    };
    if let Some(v) = &a.viewer_url {
        v.fill(&mut res);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res.hits)?);
        // stdout stays a JSON array; the explanation of an empty page goes to stderr.
        if let Some(why) = &res.empty_reason {
            eprintln!("no results: {why}");
        }
        return Ok(());
    }
    let notes = notes(&res);
    if res.hits.is_empty() {
        for n in &notes {
            eprintln!("{n}");
        }
        return Ok(());
    }
    for n in &notes {
        println!("{n}");
    }
    print_table(&res.hits);
    if let Some(groups) = &res.groups {
        let counts: Vec<String> = groups.iter().map(|g| g.matched.to_string()).collect();
        println!(
            "(grouped by {:?}; matched items per group: {})",
            req.group_by.unwrap(),
            counts.join(", ")
        );
    }
    Ok(())
}

/// The search of a local index folder.
fn search_local(a: &SearchArgs, req: &Request) -> Result<Response> {
    let reader = Snapshot::open(&a.index)?;
    if let Some(ef) = a.ef_search {
        reader.set_ef_search(ef);
    }
    if reader.is_empty() {
        bail!("{} is empty", a.index.display());
    }
    // A query that is embedded now (not a stored item) at another precision than the index's.
    let embedded = a.text.is_some() || a.query.as_deref().is_some_and(|q| !q.starts_with("id:"));
    if embedded {
        let built = reader.settings().embedding_precision();
        if let Some(w) =
            crate::precision_mismatch(&a.index.display(), built, simcase_models::precision())
        {
            eprintln!("warning: {w}");
        }
    }
    let q = match (&a.text, &a.query) {
        (Some(text), _) => text_query(&reader.settings().model, text)?,
        (None, Some(q)) => resolve(&reader, q, a.window)?,
        (None, None) => bail!("give a query file, id:N or --text"),
    };
    let view = match &a.view {
        Some(name) => Some(simcase_query::View::open(&reader, name)?),
        None => None,
    };
    let req = leave_out_origin(a, &q, req);
    let res = simcase_query::search_with(&reader, view.as_ref(), &q, &req)?;
    if let Some(url) = &a.report_to_pacs {
        report_to_pacs(url, &reader, &q, &res, &a.index)?;
    }
    Ok(res)
}

/// The search of a Milvus collection (`milvus://HOST:PORT/COLLECTION`): the query embedded
/// with the collection's model, ranked by Milvus ([`RemoteIndex::search`]).
fn search_remote(a: &SearchArgs, url: &str, req: &Request) -> Result<Response> {
    let remote = RemoteIndex::open(url, a.ef_search, a.consistency)?;
    if remote.is_empty()? {
        bail!("{} is empty", remote.collection().url());
    }
    let q = match (&a.text, &a.query) {
        (Some(text), _) => text_query(remote.model(), text)?,
        (None, Some(q)) => match q.strip_prefix("id:") {
            Some(id) => {
                let id: u64 = id.parse().with_context(|| format!("bad item id {id:?}"))?;
                remote.query_item(id)?
            }
            None => {
                let model: simcase_models::ModelSet = remote.model().parse()?;
                crate::ensure_models(&model)?;
                let enc = model.load(&default_device())?;
                Query::file(enc.as_ref(), Path::new(q), a.window)?
            }
        },
        (None, None) => bail!("give a query file, id:N or --text"),
    };
    let req = leave_out_origin(a, &q, req);
    Ok(remote.search(&q, &req)?)
}

/// A text query embedded by `model`'s text tower (CLIP-family models).
fn text_query(model: &str, text: &str) -> Result<Query> {
    let set: simcase_models::ModelSet = model.parse()?;
    let Some(model) = set.single() else {
        bail!("text search needs one CLIP-family model; this index fuses {set}");
    };
    let enc = simcase_models::load_text(model, &default_device())
        .with_context(|| format!("text search on an index built with {model}"))?;
    Ok(Query::text(enc.as_ref(), text)?)
}
