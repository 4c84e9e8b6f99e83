// simcase page: query by image (drop / paste / pick, optional crop), by text, or by a result
// ("more like this"); filters as chips; label vote; side-by-side compare. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: null, stats: null, filters: [], lastQuery: null, offset: 0,
  image: null, imageUrl: null, crop: null, queryFile: null,
};

// The token comes as #token=... in the URL `simcase serve` prints (a fragment never reaches
// the server or its logs). It is kept in this tab's sessionStorage and removed from the
// address bar and history; every API call sends it as a bearer header. No cookies: nothing
// ambient that another site's request could carry.
(function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("simcase-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("simcase-token");
})();

function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  return fetch(path, Object.assign({}, opts, { headers, credentials: "omit" }));
}

async function apiJson(path, opts) {
  const r = await api(path, opts);
  let body = null;
  // Ids of a Milvus index are 63-bit hashes, past what a JS number holds exactly (2^53):
  // read every "id" of 16 digits or more as a string, so links and thumbnails keep it whole.
  try { body = JSON.parse((await r.text()).replace(/("id"\s*:\s*)(\d{16,})/g, '$1"$2"')); } catch (_) { /* not JSON */ }
  if (r.status === 401) throw new Error("this page needs the server's token: open the URL `simcase serve` printed (…/#token=…)");
  if (!r.ok) throw new Error((body && body.error) || `HTTP ${r.status}`);
  return body;
}

function setStatus(kind, text) {
  const s = $("status");
  s.className = kind;
  s.textContent = text;
}

async function loadStats() {
  try {
    const s = await apiJson("/api/stats");
    state.stats = s;
    $("stats").textContent = `${s.items} items · model ${s.model} (${s.dim}-d)`;
    $("text-form").hidden = !s.text_search;
    const views = s.views || [];
    $("view-label").hidden = !views.length;
    for (const v of views) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = v;
      $("view").appendChild(o);
    }
    const sel = $("filter-add");
    for (const field of ["modality", "anatomy", "pathology", "source"]) {
      const counts = (s.counts || {})[field] || {};
      const keys = Object.keys(counts);
      if (!keys.length) continue;
      const group = document.createElement("optgroup");
      group.label = field;
      for (const v of keys) {
        const o = document.createElement("option");
        o.value = `${field}=${v}`;
        o.textContent = `${v} (${counts[v]})`;
        group.appendChild(o);
      }
      sel.appendChild(group);
    }
  } catch (e) {
    $("stats").textContent = "index unavailable: " + e.message;
  }
}

function params() {
  const p = new URLSearchParams();
  p.set("k", $("k").value || "20");
  if (state.offset) p.set("offset", String(state.offset));
  if ($("group-by").value) p.set("group_by", $("group-by").value);
  if ($("view").value) p.set("view", $("view").value);
  if ($("rerank").value) p.set("rerank", $("rerank").value);
  for (const [f, v] of state.filters) p.append(f, v);
  return p;
}

function renderChips() {
  const box = $("chips");
  box.replaceChildren();
  for (const [i, [f, v]] of state.filters.entries()) {
    const b = document.createElement("button");
    b.className = "chip";
    b.textContent = `${f}: ${v}`;
    b.title = "Remove this filter";
    b.setAttribute("aria-label", `Remove filter ${f} ${v}`);
    b.onclick = () => { state.filters.splice(i, 1); renderChips(); rerun(); };
    box.appendChild(b);
  }
}

function addFilter(f, v) {
  if (!state.filters.some(([a, b]) => a === f && b === v)) state.filters.push([f, v]);
  renderChips();
  rerun();
}

function rerun() {
  state.offset = 0;
  if (state.lastQuery) run(state.lastQuery);
}

// A query is {kind: "upload", blob, name} | {kind: "item", id} | {kind: "text", text} |
// {kind: "instance", sop_uid} (an archived instance; the page opened as /?sop_uid=UID, as a
// viewer's link would open it).
async function run(q) {
  state.lastQuery = q;
  setStatus("loading", "Searching…");
  const p = params();
  try {
    let res;
    if (q.kind === "upload") {
      const fd = new FormData();
      fd.append("file", q.blob, q.name);
      res = await apiJson("/api/search?" + p, { method: "POST", body: fd });
    } else if (q.kind === "item") {
      p.set("id", String(q.id));
      res = await apiJson("/api/search?" + p);
    } else if (q.kind === "instance") {
      p.set("sop_uid", q.sop_uid);
      res = await apiJson("/api/search?" + p);
    } else {
      p.set("text", q.text);
      res = await apiJson("/api/search?" + p);
    }
    render(res);
  } catch (e) {
    $("results").replaceChildren();
    $("pager").hidden = true;
    $("report").hidden = true;
    setStatus("error", "Search failed: " + e.message);
  }
}

// "File in PACS": the search shown, filed in the query's study as a DICOM SR by the server
// (POST /api/report, the same parameters). Offered when the server has a PACS to file in
// and the query is an archived instance or an indexed item.
async function fileReport() {
  const q = state.lastQuery;
  const p = params();
  if (q.kind === "item") p.set("id", String(q.id));
  else p.set("sop_uid", q.sop_uid);
  const b = $("report");
  b.disabled = true;
  try {
    const r = await apiJson("/api/report?" + p, { method: "POST" });
    $("report-status").textContent = `Filed in the PACS: SR ${r.sr_uid}, ${r.results} results` +
      (r.left_out ? ` (${r.left_out} without DICOM UIDs left out)` : "");
  } catch (e) {
    $("report-status").textContent = "Not filed: " + e.message;
  } finally {
    b.disabled = false;
  }
}

// Thumbnails are fetched with the token and shown as blob: URLs (an <img src> could carry no
// header, and a token in a URL would leak into history); a new result page frees the last.
const thumbUrls = new Set();
async function thumbUrl(id, size) {
  const r = await api(`/api/items/${id}/thumbnail?size=${size}`);
  if (!r.ok) throw new Error(`thumbnail ${id}: HTTP ${r.status}`);
  const u = URL.createObjectURL(await r.blob());
  thumbUrls.add(u);
  return u;
}

function render(res) {
  const box = $("results");
  box.replaceChildren();
  if (!$("compare").hidden) closeCompare();
  for (const u of thumbUrls) URL.revokeObjectURL(u);
  thumbUrls.clear();
  const what = res.query.kind === "item" ? `more like item ${res.query.id}`
    : res.query.kind === "instance" ? `more like instance ${res.query.sop_uid}`
    : res.query.kind === "text" ? `text “${res.query.text}”` : `upload ${res.query.name}`;
  $("report").hidden = !(state.stats && state.stats.report_to_pacs
    && (res.query.kind === "item" || res.query.kind === "instance"));
  $("report-status").textContent = "";
  if (!res.hits.length) {
    setStatus("empty", res.empty_reason ? `No results for ${what}: ${res.empty_reason}.`
      : `No results for ${what} (${res.candidates} items pass the filters).`);
  } else {
    const unit = res.groups ? `${$("group-by").value} groups` : "images";
    setStatus("done", `${res.hits.length} ${unit} for ${what} · ${res.candidates} candidates · ${res.took_ms.toFixed(1)} ms`);
  }
  const groups = res.groups || [];
  for (const [i, h] of res.hits.entries()) {
    const card = document.createElement("div");
    card.className = "card";
    card.tabIndex = 0;
    card.setAttribute("role", "button");
    card.dataset.id = h.id;
    card.setAttribute("aria-label", `Result ${h.rank}: ${h.label || h.modality || "unlabelled"}, score ${h.score.toFixed(3)}. Enter: more like this`);
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = h.label || `item ${h.id}`;
    thumbUrl(h.id, 256).then((u) => { img.src = u; }).catch(() => { img.alt = "no thumbnail"; });
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `#${h.rank} · ${h.score.toFixed(3)}`;
    const meta = document.createElement("div");
    meta.className = "meta";
    const g = groups[i];
    meta.textContent = [h.label || h.modality || "unlabelled",
      g ? `group ${g.key.slice(0, 10)} · ${g.matched} matched` : (h.patient_key ? `patient ${h.patient_key.slice(0, 8)}` : null),
      h.slice != null ? `slice ${h.slice}/${h.slices}` : (h.frame != null ? `frame ${h.frame}/${h.frames}` : null),
      h.duplicates ? `also stored ${h.duplicates}×` : null]
      .filter(Boolean).join(" · ");
    const actions = document.createElement("div");
    actions.className = "actions";
    const cmp = document.createElement("button");
    cmp.textContent = "Compare";
    cmp.onclick = (ev) => { ev.stopPropagation(); compare(h); };
    actions.appendChild(cmp);
    if (h.viewer && /^https?:\/\//.test(h.viewer)) {
      const v = document.createElement("a");
      v.className = "viewer";
      v.href = h.viewer;
      v.target = "_blank";
      v.rel = "noopener noreferrer";
      v.textContent = "Open in viewer";
      v.title = "This study in the hospital's viewer";
      v.onclick = (ev) => ev.stopPropagation();
      actions.appendChild(v);
    }
    if (h.modality) {
      const f = document.createElement("button");
      f.textContent = `only ${h.modality}`;
      f.title = "Filter on this modality";
      f.onclick = (ev) => { ev.stopPropagation(); addFilter("modality", h.modality); };
      actions.appendChild(f);
    }
    card.append(img, score, meta, actions);
    card.onclick = () => { state.offset = 0; run({ kind: "item", id: h.id }); };
    card.onkeydown = (ev) => { if (ev.key === "Enter" && ev.target === card) card.onclick(); };
    box.appendChild(card);
  }
  renderVote(res.vote);
  const k = Number($("k").value || 20);
  $("pager").hidden = !(res.offset > 0 || res.hits.length === k);
  $("page-info").textContent = `results ${res.offset + 1}–${res.offset + res.hits.length}`;
  $("prev").disabled = res.offset === 0;
  $("next").disabled = res.hits.length < k;
}

function renderVote(vote) {
  const box = $("vote");
  box.replaceChildren();
  for (const [level, title] of [["label", "Similar cases say (label)"], ["modality", "Modality"]]) {
    const rows = (vote[level] || []).slice(0, 5);
    if (!rows.length) continue;
    const h = document.createElement("h3");
    h.textContent = title;
    box.appendChild(h);
    for (const [name, share] of rows) {
      const row = document.createElement("div");
      row.className = "bar";
      const label = document.createElement("span");
      label.textContent = name;
      label.title = name;
      const track = document.createElement("div");
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${Math.round(share * 100)}%`;
      track.appendChild(fill);
      const pct = document.createElement("span");
      pct.textContent = `${Math.round(share * 100)}%`;
      row.append(label, track, pct);
      box.appendChild(row);
    }
  }
}

async function compare(h) {
  const dlg = $("compare");
  $("cmp-caption").textContent = `#${h.rank} · ${h.score.toFixed(3)} · ${h.label || h.modality || ""}`;
  const q = state.lastQuery;
  if (q && q.kind === "upload" && state.imageUrl) $("cmp-query").src = state.imageUrl;
  else if (q && q.kind === "item") $("cmp-query").src = await thumbUrl(q.id, 768);
  else $("cmp-query").removeAttribute("src");
  $("cmp-result").src = await thumbUrl(h.id, 768);
  dlg.hidden = false;
  $("cmp-close").focus();
}

function closeCompare() { $("compare").hidden = true; }

// --- Query image: load, draw, crop ---------------------------------------------------------

function useFile(file) {
  if (!file) return;
  state.crop = null;
  state.queryFile = file;
  const isRaster = /^image\/(png|jpeg)$/.test(file.type) || /\.(png|jpe?g)$/i.test(file.name);
  if (isRaster) {
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => { state.image = img; draw(); };
    img.src = state.imageUrl;
  } else {
    state.image = null;
    state.imageUrl = null;
    $("query-canvas").hidden = true;
    $("drop-hint").textContent = `${file.name} (DICOM: searched as a whole image)`;
  }
  updateCropButtons();
  run({ kind: "upload", blob: file, name: file.name });
}

function draw() {
  const c = $("query-canvas");
  const img = state.image;
  if (!img) return;
  const scale = Math.min(360 / img.width, 360 / img.height);
  c.width = Math.round(img.width * scale);
  c.height = Math.round(img.height * scale);
  c.dataset.scale = String(scale);
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0, c.width, c.height);
  if (state.crop) {
    const r = state.crop;
    g.fillStyle = "rgba(0,0,0,.5)";
    g.fillRect(0, 0, c.width, r.y); g.fillRect(0, r.y + r.h, c.width, c.height - r.y - r.h);
    g.fillRect(0, r.y, r.x, r.h); g.fillRect(r.x + r.w, r.y, c.width - r.x - r.w, r.h);
    g.strokeStyle = "#4fa3ff"; g.lineWidth = 2; g.strokeRect(r.x, r.y, r.w, r.h);
  }
  c.hidden = false;
  $("drop-hint").hidden = true;
}

function updateCropButtons() {
  const ok = !!(state.image && state.crop && state.crop.w > 4 && state.crop.h > 4);
  $("crop-search").disabled = !ok;
  $("crop-clear").disabled = !state.crop;
}

/// Select a crop in canvas pixels (also used by tests and keyboard users via the console).
function setCrop(x, y, w, h) {
  state.crop = { x, y, w, h };
  draw();
  updateCropButtons();
}

function searchCrop() {
  const img = state.image, r = state.crop, c = $("query-canvas");
  if (!img || !r) return;
  const s = Number(c.dataset.scale);
  const out = document.createElement("canvas");
  out.width = Math.max(1, Math.round(r.w / s));
  out.height = Math.max(1, Math.round(r.h / s));
  out.getContext("2d").drawImage(img, r.x / s, r.y / s, r.w / s, r.h / s, 0, 0, out.width, out.height);
  out.toBlob((blob) => {
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = URL.createObjectURL(blob);
    run({ kind: "upload", blob, name: "region.png" });
  }, "image/png");
}

function wire() {
  const drop = $("drop"), file = $("file"), c = $("query-canvas");
  drop.onclick = (ev) => { if (ev.target !== c) file.click(); };
  drop.onkeydown = (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); file.click(); } };
  file.onchange = () => useFile(file.files[0]);
  drop.ondragover = (ev) => { ev.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (ev) => { ev.preventDefault(); drop.classList.remove("over"); useFile(ev.dataTransfer.files[0]); };
  document.onpaste = (ev) => {
    const f = [...(ev.clipboardData || {}).files || []][0];
    if (f) useFile(f);
  };
  let start = null;
  c.onmousedown = (ev) => { start = [ev.offsetX, ev.offsetY]; };
  c.onmousemove = (ev) => {
    if (!start) return;
    const [x0, y0] = start;
    setCrop(Math.min(x0, ev.offsetX), Math.min(y0, ev.offsetY), Math.abs(ev.offsetX - x0), Math.abs(ev.offsetY - y0));
  };
  c.onmouseup = () => { start = null; };
  $("crop-search").onclick = searchCrop;
  $("crop-clear").onclick = () => { state.crop = null; draw(); updateCropButtons(); };
  $("text-form").onsubmit = (ev) => {
    ev.preventDefault();
    const t = $("text").value.trim();
    if (t) { state.offset = 0; run({ kind: "text", text: t }); }
  };
  $("group-by").onchange = rerun;
  $("view").onchange = rerun;
  $("rerank").onchange = rerun;
  $("k").onchange = rerun;
  $("filter-add").onchange = (ev) => {
    const v = ev.target.value;
    ev.target.value = "";
    if (!v) return;
    const i = v.indexOf("=");
    addFilter(v.slice(0, i), v.slice(i + 1));
  };
  $("prev").onclick = () => {
    state.offset = Math.max(0, state.offset - Number($("k").value || 20));
    run(state.lastQuery);
  };
  $("next").onclick = () => { state.offset += Number($("k").value || 20); run(state.lastQuery); };
  $("cmp-close").onclick = closeCompare;
  $("report").onclick = fileReport;
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeCompare(); });
}

window.simcase = { setCrop, searchCrop, addFilter, state };
wire();
loadStats().then(() => {
  const uid = new URLSearchParams(location.search).get("sop_uid");
  if (uid) run({ kind: "instance", sop_uid: uid });
});
