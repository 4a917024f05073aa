"""The status page the coordinator serves beside its API (``GET /status``): the plan's
monitoring dashboard, read-only, refreshing itself from ``GET /status.json``
(``shared.ledger.overview``: ids, counts, phases and reason codes, no personal data).

One static document with no outside resource; every value is put in with ``textContent``,
never as markup, so nothing a message carried can run in the page.
"""

from __future__ import annotations

REFRESH_S = 5

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>schoolmig: migration status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2430; background: #f6f7f9; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; } h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
  .muted { color: #667085; } .cards { display: flex; gap: .8rem; flex-wrap: wrap; }
  .card { background: #fff; border: 1px solid #d0d5dd; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
  .card b { display: block; font-size: 1.5rem; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { border: 1px solid #d0d5dd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
  th { background: #eef0f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
  .bar { background: #e4e7ec; height: .6rem; width: 8rem; border-radius: 3px; display: inline-block; }
  .bar i { background: #12b76a; height: 100%; display: block; border-radius: 3px; }
  .refused { color: #b42318; font-weight: 600; } code { font-size: 12px; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
</style>
</head>
<body>
<h1>schoolmig: migration status</h1>
<div class="muted">read-only; refreshes every __REFRESH__ s; last read <span id="updated">never</span>
  <span id="error" class="refused"></span></div>
<h2>Overview</h2>
<div class="cards">
  <div class="card">records<b id="total">–</b></div>
  <div class="card">migrated<b id="migrated">–</b></div>
  <div class="card">quarantined<b id="failed">–</b></div>
  <div class="card">progress<b id="progress">–</b></div>
  <div class="card">schools<b id="schools-count">–</b></div>
</div>
<h2>Schools</h2>
<table id="schools"><thead><tr><th>school</th><th>phase</th><th>mode</th><th>progress</th><th>records</th>
  <th>waits for</th><th>next</th></tr></thead><tbody></tbody></table>
<h2>By domain</h2>
<table id="domains"><thead><tr><th>domain</th><th>records</th><th>migrated</th><th>quarantined</th><th>in flight</th>
  </tr></thead><tbody></tbody></table>
<div class="grid">
<div><h2>Errors by category</h2>
<table id="errors"><thead><tr><th>category</th><th>count</th></tr></thead><tbody></tbody></table></div>
<div><h2>Quarantine by reason</h2>
<table id="quarantine"><thead><tr><th>reason</th><th>records</th></tr></thead><tbody></tbody></table></div>
</div>
<h2>Recent operator commands</h2>
<table id="commands"><thead><tr><th>at</th><th>school</th><th>action</th><th>by</th><th>outcome</th></tr></thead>
  <tbody></tbody></table>
<h2>Recent dead letters</h2>
<table id="letters"><thead><tr><th>at</th><th>stage</th><th>reason</th><th>school</th><th>topic</th></tr></thead>
  <tbody></tbody></table>
<script>
"use strict";
const num = (n) => Number(n).toLocaleString("en");
function cell(row, value, cls) {
  const td = row.insertCell(); td.textContent = value == null ? "" : String(value);
  if (cls) td.className = cls; return td;
}
function fill(id, rows, make) {
  const body = document.querySelector("#" + id + " tbody"); body.replaceChildren();
  for (const r of rows) make(body.insertRow(), r);
  if (!rows.length) { const tr = body.insertRow(); const td = cell(tr, "none"); td.colSpan = 9; td.className = "muted"; }
}
function bar(row, pct) {
  const td = row.insertCell(); const b = document.createElement("span"); b.className = "bar";
  const i = document.createElement("i"); i.style.width = Math.min(100, pct) + "%"; b.appendChild(i);
  td.appendChild(b); td.appendChild(document.createTextNode(" " + pct + "%"));
}
function show(s) {
  const o = s.overview;
  document.getElementById("total").textContent = num(o.total_records);
  document.getElementById("migrated").textContent = num(o.migrated_records);
  document.getElementById("failed").textContent = num(o.failed_records);
  document.getElementById("progress").textContent = o.migration_progress + "%";
  document.getElementById("schools-count").textContent = num(s.schools.length);
  fill("schools", s.schools, (tr, x) => {
    cell(tr, x.school_id); cell(tr, x.phase); cell(tr, x.mode); bar(tr, x.progress);
    cell(tr, num(x.accounted) + " / " + num(x.source), "n"); cell(tr, x.waits_for);
    const td = cell(tr, ""); if (x.next) { const c = document.createElement("code"); c.textContent = x.next; td.appendChild(c); }
  });
  fill("domains", Object.entries(s.by_domain), (tr, [d, c]) => {
    cell(tr, d); cell(tr, num(c.total), "n"); cell(tr, num(c.migrated), "n"); cell(tr, num(c.failed), "n");
    cell(tr, num(c.in_flight), "n");
  });
  fill("errors", Object.entries(s.error_summary), (tr, [k, n]) => { cell(tr, k.replace(/_/g, " ")); cell(tr, num(n), "n"); });
  fill("quarantine", Object.entries(s.quarantine_by_reason), (tr, [k, n]) => { cell(tr, k); cell(tr, num(n), "n"); });
  fill("commands", s.recent_commands, (tr, c) => {
    cell(tr, c.at); cell(tr, c.school_id); cell(tr, c.action); cell(tr, c.actor);
    cell(tr, c.outcome, c.refused ? "refused" : "");
  });
  fill("letters", s.recent_dead_letters, (tr, d) => {
    cell(tr, d.at); cell(tr, d.stage); cell(tr, d.reason); cell(tr, d.school_id); cell(tr, d.topic);
  });
}
async function refresh() {
  try {
    const answer = await fetch("status.json", { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    show(await answer.json());
    document.getElementById("updated").textContent = new Date().toISOString().replace(/\\.\\d+Z$/, "Z");
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "could not read the status: " + e.message;
  }
}
refresh(); setInterval(refresh, __REFRESH__ * 1000);
</script>
</body>
</html>
""".replace("__REFRESH__", str(REFRESH_S))
