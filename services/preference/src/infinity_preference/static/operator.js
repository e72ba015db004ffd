// The operator's page: studies and their progress (refreshed every few seconds), new studies, invitations,
// results (win/tie/loss with 95% bootstrap CIs per model pair and criterion, per category, rater agreement).
"use strict";

const $ = (id) => document.getElementById(id);
const tokenKey = "infinity-preference:admin";
let selected = null;
let timer = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function call(path, options = {}) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(tokenKey) || ""}`, ...(options.headers || {}) };
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
  return body;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function pct(value) { return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`; }
function num(value) { return value === null || value === undefined ? "–" : value.toFixed(3); }
function rate(entry) { return entry.rate === null ? "–" : pct(entry.rate) + (entry.ci ? ` [${pct(entry.ci[0])}, ${pct(entry.ci[1])}]` : ""); }

async function refresh() {
  const studies = await call("/api/admin/studies");
  const body = $("studies");
  body.replaceChildren();
  for (const study of studies) {
    const row = document.createElement("tr");
    row.dataset.study = study.id;
    const p = study.progress;
    for (const text of [study.id, study.name, study.benchmark, study.models.map((m) => m.label).join(" vs "),
      `${p.pairs_complete} / ${p.pairs}`, p.ratings, p.third_ratings_asked,
      study.raters.map((r) => `${r.name} (${r.rated})`).join(", ")]) cell(row, String(text));
    const open = document.createElement("button");
    open.textContent = "open";
    open.dataset.testid = `open-${study.id}`;
    open.onclick = () => select(study);
    cell(row, "").append(open);
    body.append(row);
  }
}

function select(study) {
  selected = study.id;
  $("detail").hidden = false;
  $("detail-title").textContent = `Study ${study.id}: ${study.name}`;
  $("links").replaceChildren();
  $("results").replaceChildren();
}

function table(headers, rows, testid) {
  const t = document.createElement("table");
  if (testid) t.dataset.testid = testid;
  const head = document.createElement("tr");
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
  t.append(head);
  for (const r of rows) { const tr = document.createElement("tr"); r.forEach((v) => cell(tr, String(v))); t.append(tr); }
  return t;
}

function showResults(results) {
  const out = $("results");
  out.replaceChildren();
  for (const cmp of results.comparisons) {
    const h = document.createElement("h2");
    h.textContent = `${cmp.model_a} vs ${cmp.model_b} (win = ${cmp.model_a} preferred)`;
    out.append(h);
    const rows = Object.entries(cmp.criteria).map(([c, e]) => [c, e.n, rate(e.win), rate(e.tie), rate(e.loss)]);
    out.append(table(["criterion", "pairs decided", "win [95% CI]", "tie", "loss"], rows, "comparison"));
    const byCategory = [];
    for (const [c, e] of Object.entries(cmp.criteria)) {
      for (const [cat, s] of Object.entries(e.categories)) byCategory.push([c, cat, s.n, pct(s.win.rate), pct(s.tie.rate), pct(s.loss.rate)]);
    }
    out.append(table(["criterion", "category", "n", "win", "tie", "loss"], byCategory, "categories"));
  }
  const h = document.createElement("h2");
  h.textContent = "Rater agreement (first two ratings of each pair)";
  out.append(h);
  const rows = Object.entries(results.agreement).map(([c, a]) => [c, a.items, pct(a.percent_agreement), num(a.cohen_kappa), num(a.fleiss_kappa)]);
  out.append(table(["criterion", "pairs", "percent agreement", "Cohen's κ", "Fleiss' κ"], rows, "agreement"));
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(tokenKey, $("token").value.trim());
  await start();
});

$("create").addEventListener("submit", async (event) => {
  event.preventDefault();
  const runs = $("runs").value.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const at = line.indexOf("=");
    return at > 0 ? { label: line.slice(0, at), path: line.slice(at + 1) } : { path: line };
  });
  const body = { name: $("name").value, runs };
  if ($("benchmark").value.trim()) body.benchmark = $("benchmark").value.trim();
  try {
    const study = await call("/api/admin/studies", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    status(`created study ${study.id} with ${study.progress.pairs} pairs`);
    $("create").reset();
    await refresh();
    select(study);
  } catch (error) { status(error.message, true); }
});

$("invite").addEventListener("submit", async (event) => {
  event.preventDefault();
  const names = $("raters").value.split(",").map((n) => n.trim()).filter(Boolean);
  try {
    const raters = await call(`/api/admin/studies/${selected}/raters`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ names }) });
    for (const r of raters) {
      const li = document.createElement("li");
      li.textContent = `${r.name}: ${location.origin}${r.link}`;
      $("links").append(li);
    }
    status(`invited ${raters.length} rater(s); send each their own link (shown once)`);
    await refresh();
  } catch (error) { status(error.message, true); }
});

$("show-results").addEventListener("click", async () => {
  try { showResults(await call(`/api/admin/studies/${selected}/results`)); status("results computed"); }
  catch (error) { status(error.message, true); }
});

$("mlflow").addEventListener("click", async () => {
  try { const r = await call(`/api/admin/studies/${selected}/mlflow`, { method: "POST" }); status(`logged to MLflow run ${r.run_id}`); }
  catch (error) { status(error.message, true); }
});

async function start() {
  try {
    await refresh();
    $("login").hidden = true;
    $("signed-in").hidden = false;
    status("");
    clearInterval(timer);
    timer = setInterval(() => refresh().catch((e) => status(e.message, true)), 3000);
  } catch (error) { status(error.message, true); }
}

if (sessionStorage.getItem(tokenKey)) start();
