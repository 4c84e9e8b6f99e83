//! The API's bodies as types, and the OpenAPI document generated from them (utoipa) instead of
//! kept by hand: a field added to a response appears in `/api/openapi.json` by construction.
//! The handlers in `lib.rs` return these types; the `#[utoipa::path]` stubs below describe the
//! routes (their parameters and status codes) next to the types they answer with.

#![allow(dead_code)] // the path stubs exist for the OpenAPI derive only

use serde::Serialize;
use simcase_index::{Item, ItemMeta};
use simcase_query::{Also, Duplicates, Group, GroupBy, Hit, Response, Vote};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Every error: a one-line reason (naming the file or parameter at fault).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// What was searched for.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum QueryInfo {
    /// More like an indexed item.
    Item {
        /// The item's id.
        id: u64,
    },
    /// Free text through the model's text tower.
    Text {
        /// The text.
        text: String,
    },
    /// An uploaded image.
    Upload {
        /// The upload's file name.
        name: String,
    },
    /// An indexed archived instance, by SOP Instance UID.
    Instance {
        /// The SOP Instance UID asked for.
        sop_uid: String,
        /// The item that holds it (its first frame, for a multi-frame object).
        id: u64,
    },
}

/// `GET|POST /api/search`: a page of ranked results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// Hits, groups, the vote and the paging.
    #[serde(flatten)]
    pub result: Response,
    /// What was searched for.
    pub query: QueryInfo,
    /// The index's model.
    pub model: String,
    /// The view searched in (`view=`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// Items in the index.
    pub items: usize,
    /// Time spent ranking, in milliseconds.
    pub took_ms: f64,
}

/// `POST /api/report`: the search, and the DICOM SR it was filed as.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResponse {
    /// The new SR's SOP Instance UID.
    pub sr_uid: String,
    /// The study it was filed in: the query's.
    pub study_uid: String,
    /// Results the SR references.
    pub results: usize,
    /// Results left out of it: no DICOM UIDs (a PNG, a NIfTI slice) or no SOP class.
    pub left_out: usize,
    /// The search, as `GET /api/search` answers it.
    pub search: SearchResponse,
}

/// How well concurrent uploads were batched.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCounts {
    /// Batches run.
    pub batches: usize,
    /// Images embedded.
    pub images: usize,
    /// The largest batch.
    pub largest_batch: usize,
}

/// `GET /api/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// Items in the index.
    pub items: usize,
    /// The index's model.
    pub model: String,
    /// Embedding dimension.
    pub dim: usize,
    /// Whether `text=` search works (CLIP-family models).
    pub text_search: bool,
    /// Per filter column, how many items carry each value.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Other metadata keys found on items (filterable as `meta.KEY`).
    pub extra_fields: BTreeSet<String>,
    /// Views stored with the index by `simcase adapt` (searchable with `view=NAME`).
    pub views: Vec<String>,
    /// Upload batching counters.
    pub embedding: BatchCounts,
    /// Whether `POST /api/report` files searches in the PACS (`serve --report-to-pacs`).
    pub report_to_pacs: bool,
    /// Files that could not be indexed (`simcase errors --index DIR` lists them with their
    /// paths; the API never does).
    pub errors: usize,
    /// The same files counted by kind of failure (`not an image`, `unsupported transfer
    /// syntax UID`, …).
    pub errors_by_kind: BTreeMap<String, usize>,
}

/// Query parameters of every search (at most 64 in all; each single-valued one at most once).
/// Every bad value is a 400 whose message names the parameter.
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Results per page (1..=max_k, default 20).
    pub k: Option<usize>,
    /// Pagination: results (or groups) to skip. Any whole number; at or past the candidates,
    /// the page is empty.
    pub offset: Option<usize>,
    /// Top-k distinct groups, each scored by its best item, with how many of its items matched.
    pub group_by: Option<GroupBy>,
    /// `collapse` (default): copies of one image (the same decoded pixels in other files or
    /// transfer syntaxes) are one hit, listing the others in `also`, and `k` counts distinct
    /// images; `all`: every stored item.
    pub duplicates: Option<Duplicates>,
    /// Search in this view of the index (`simcase adapt` stores them; `/api/stats` lists
    /// them): the query and the rows are mapped through its adapter. Local indexes only.
    pub view: Option<String>,
    /// Re-rank the candidates: `none` (default), `aqe` (α-query expansion, n = 3, α = 3; scores
    /// are cosines to the expanded query) or `kr` (k-reciprocal re-ranking of the best 100;
    /// hits keep their cosine scores). Local indexes only.
    pub rerank: Option<String>,
    /// Filter (repeatable; OR within a field, AND across fields, case-insensitive). Filter
    /// values are non-empty, at most 256 bytes, at most 32 in one search.
    pub modality: Option<Vec<String>>,
    /// Filter.
    pub anatomy: Option<Vec<String>>,
    /// Filter.
    pub pathology: Option<Vec<String>>,
    /// Filter on the full `modality/anatomy/pathology` label.
    pub label: Option<Vec<String>>,
    /// Filter.
    pub source: Option<Vec<String>>,
    /// Filter.
    pub split: Option<Vec<String>>,
    /// Filter (DICOM BodyPartExamined).
    pub body_part: Option<Vec<String>>,
    /// Filter on any other manifest column, e.g. `meta.view=PA`.
    #[serde(rename = "meta.COLUMN")]
    pub meta: Option<Vec<String>>,
    /// Study date range start, `YYYY-MM-DD` or `YYYYMMDD` (a real date), on `meta.study_date`;
    /// items without a study date are left out.
    pub date_from: Option<String>,
    /// Study date range end, inclusive, in the same forms; not before `date_from`.
    pub date_to: Option<String>,
}

/// The query of `GET /api/search`: exactly one of the three.
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// More like this indexed item (the item itself is left out).
    pub id: Option<u64>,
    /// Text search (CLIP-family models); not blank, at most 1024 bytes.
    pub text: Option<String>,
    /// More like this archived instance, by its SOP Instance UID (an indexed item; local
    /// indexes). Its own study is left out unless `include_same_study=true`.
    pub sop_uid: Option<String>,
    /// With `sop_uid`: keep results of the query's own study.
    pub include_same_study: Option<bool>,
    /// Leave out results of the query's own patient (`id` or `sop_uid`).
    pub exclude_same_patient: Option<bool>,
}

/// The upload of `POST /api/search`.
#[derive(Debug, ToSchema)]
pub struct Upload {
    /// A PNG, JPEG or DICOM file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Thumbnail options.
#[derive(Debug, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThumbParams {
    /// Longest side in pixels, 16..=1024 (default 256).
    pub size: Option<usize>,
    /// DICOM window: lung, mediastinum, abdomen, bone, brain, or C,W (finite numbers).
    pub window: Option<String>,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok", body = String)))]
fn healthz() {}

#[utoipa::path(get, path = "/api/openapi.json",
    responses((status = 200, description = "this document (OpenAPI 3.1)")))]
fn openapi_json() {}

#[utoipa::path(get, path = "/api/stats",
    responses((status = 200, description = "index size, model, label counts, batching counters, failed files by kind", body = StatsResponse),
              (status = 401, description = "missing or wrong token", body = ErrorBody)))]
fn stats() {}

#[utoipa::path(get, path = "/api/search", params(GetQuery, SearchParams),
    responses((status = 200, description = "ranked results", body = SearchResponse),
              (status = 400, description = "a bad parameter, named", body = ErrorBody),
              (status = 401, description = "missing or wrong token", body = ErrorBody),
              (status = 404, description = "no such item", body = ErrorBody)))]
fn search_get() {}

#[utoipa::path(post, path = "/api/search", params(SearchParams,
        ("window" = Option<String>, Query, description = "DICOM window for the upload: lung, mediastinum, abdomen, bone, brain, or C,W")),
    request_body(content = Upload, content_type = "multipart/form-data"),
    responses((status = 200, description = "ranked results", body = SearchResponse),
              (status = 400, description = "a bad parameter (id= and text= included: the upload is the query) or an undecodable upload, named", body = ErrorBody),
              (status = 401, description = "missing or wrong token", body = ErrorBody),
              (status = 413, description = "upload too large", body = ErrorBody)))]
fn search_upload() {}

#[utoipa::path(get, path = "/api/items/{id}", params(("id" = u64, Path, description = "item id")),
    responses((status = 200, description = "the item's metadata (no raw patient identifiers; no path unless --show-paths)", body = Item),
              (status = 400, description = "not an id", body = ErrorBody),
              (status = 404, description = "no such item", body = ErrorBody)))]
fn item() {}

#[utoipa::path(get, path = "/api/items/{id}/thumbnail",
    params(("id" = u64, Path, description = "item id"), ThumbParams),
    responses((status = 200, description = "a PNG rendered on the server (DICOM windowed)", content_type = "image/png"),
              (status = 400, description = "a bad id, size or window, or an unknown parameter, named", body = ErrorBody),
              (status = 404, description = "no such item, or its file is gone", body = ErrorBody)))]
fn thumbnail() {}

#[utoipa::path(post, path = "/api/report", params(GetQuery, SearchParams),
    responses((status = 200, description = "the search (as GET /api/search) filed in the query's study as a DICOM Comprehensive SR, stored by STOW-RS", body = ReportResponse),
              (status = 400, description = "a bad parameter, named; or a query that is not an archived instance (id= of a DICOM item, or sop_uid=)", body = ErrorBody),
              (status = 401, description = "missing or wrong token", body = ErrorBody),
              (status = 404, description = "no such item, or reports are off (serve without --report-to-pacs)", body = ErrorBody),
              (status = 502, description = "the PACS refused the report or could not be reached", body = ErrorBody)))]
fn report() {}

/// The OpenAPI document of the routes above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "simcase",
        description = "Similar-case search for radiology. Off loopback every /api call needs \
                       `Authorization: Bearer TOKEN`. Responses never carry PatientName, PatientID \
                       or birth date; patients appear only as a salted key."
    ),
    paths(
        healthz,
        openapi_json,
        stats,
        search_get,
        search_upload,
        report,
        item,
        thumbnail
    ),
    components(schemas(
        ErrorBody,
        QueryInfo,
        SearchResponse,
        ReportResponse,
        StatsResponse,
        BatchCounts,
        Hit,
        Also,
        Duplicates,
        Group,
        Vote,
        Response,
        Item,
        ItemMeta,
        GroupBy,
        Upload
    ))
)]
pub struct ApiDoc;

/// `/api/openapi.json`, serialised once.
pub fn openapi_json_text() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"openapi: {e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Property names a schema declares, following `$ref` and `allOf`.
    fn declared(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap();
            declared(doc, &doc["components"]["schemas"][name], out);
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            declared(doc, part, out);
        }
        if let Some(props) = schema["properties"].as_object() {
            out.extend(props.keys().cloned());
        }
    }

    fn keys_declared_for(
        schema: &str,
        body: &impl Serialize,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let doc: Value = serde_json::from_str(&openapi_json_text()).unwrap();
        let mut names = BTreeSet::new();
        declared(&doc, &doc["components"]["schemas"][schema], &mut names);
        let sent: BTreeSet<String> = serde_json::to_value(body)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        (sent, names)
    }

    #[test]
    fn the_document_describes_what_the_handlers_send() {
        let doc: Value = serde_json::from_str(&openapi_json_text()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for p in [
            "/api/search",
            "/api/stats",
            "/api/items/{id}",
            "/api/items/{id}/thumbnail",
            "/healthz",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing");
        }
        let search = SearchResponse {
            result: Response {
                hits: vec![],
                groups: Some(vec![]),
                vote: Vote::default(),
                candidates: 0,
                offset: 0,
                k: 1,
                empty_reason: Some("no item has modality=US".into()),
                query_duplicates: 1,
                query_also: vec![Also {
                    id: 2,
                    path: None,
                    frame: Some(1),
                    slice: None,
                }],
            },
            query: QueryInfo::Item { id: 3 },
            model: "m".into(),
            view: Some("whiten".into()),
            items: 0,
            took_ms: 0.0,
        };
        let (sent, names) = keys_declared_for("SearchResponse", &search);
        assert!(sent.is_subset(&names), "sent {sent:?}, declared {names:?}");
        assert!(names.contains("hits") && names.contains("took_ms"));
        assert!(names.contains("empty_reason") && names.contains("query_also"));
        let mut hit_names = BTreeSet::new();
        declared(&doc, &doc["components"]["schemas"]["Hit"], &mut hit_names);
        for f in ["slice", "frame", "volume", "duplicates", "also"] {
            assert!(hit_names.contains(f), "Hit lacks {f}: {hit_names:?}");
        }
        let stats = StatsResponse {
            items: 0,
            model: "m".into(),
            dim: 1,
            text_search: false,
            counts: Default::default(),
            extra_fields: Default::default(),
            views: vec!["whiten".into()],
            embedding: BatchCounts {
                batches: 0,
                images: 0,
                largest_batch: 0,
            },
            report_to_pacs: true,
            errors: 1,
            errors_by_kind: [("not an image".to_string(), 1)].into(),
        };
        let (sent, names) = keys_declared_for("StatsResponse", &stats);
        assert_eq!(sent, names);
        let report = ReportResponse {
            sr_uid: "1.2".into(),
            study_uid: "1.3".into(),
            results: 0,
            left_out: 0,
            search,
        };
        let (sent, names) = keys_declared_for("ReportResponse", &report);
        assert_eq!(sent, names);
        // `POST /api/report` takes the parameters of `GET /api/search`.
        let names = |path: &str, method: &str| -> Vec<String> {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("/api/report", "post"), names("/api/search", "get"));
        // The search parameters a client can send are all documented.
        let params: BTreeSet<&str> = doc["paths"]["/api/search"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in [
            "id",
            "text",
            "sop_uid",
            "include_same_study",
            "exclude_same_patient",
            "k",
            "offset",
            "group_by",
            "view",
            "rerank",
            "duplicates",
            "modality",
            "meta.COLUMN",
            "date_to",
        ] {
            assert!(params.contains(p), "{p} not documented: {params:?}");
        }
    }
}
