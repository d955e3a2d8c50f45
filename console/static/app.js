// The Sluice console: reads the HTTP API's JSON endpoints every few seconds
// and renders them. Every value from the API is set as text, never as HTML.
"use strict";

const POLL_MS = 2000;
let token = sessionStorage.getItem("sluice-token") || "";
let timer = null;

// api calls the HTTP API with the token; a 401 shows the sign-in form.
async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, { ...opts, headers });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) {
    showLogin(token ? "The token was refused." : "");
    throw new Error("signed out");
  }
  if (!resp.ok) throw new Error(body.error || resp.status + " " + resp.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(tableID, rows, empty) {
  const body = document.querySelector("#" + tableID + " tbody");
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = document.querySelectorAll("#" + tableID + " thead th").length;
    body.append(el("tr", { class: "empty" }, el("td", { colspan: cols }, empty)));
  }
}

const num = (n) => (n ?? 0).toLocaleString("en-US");
function bytes(n) {
  n = n || 0;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function when(t) {
  if (!t || t.startsWith("0001-")) return "";
  const d = new Date(t);
  const p = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
function dur(ms) {
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}
const nsToMs = (ns) => (ns || 0) / 1e6;
const badge = (state) => el("span", { class: "badge " + state }, state);

// bar draws done and failed parts of a total.
function bar(done, failed, total) {
  const pct = (n) => (total ? (100 * n) / total : 0) + "%";
  const part = (cls, n) => {
    const e = el("div", { class: cls });
    e.style.width = pct(n); // through the CSSOM: the CSP refuses style attributes
    return e;
  };
  return el("div", { class: "bar", title: `${done} done, ${failed} failed of ${total}` }, part("done", done), part("failed", failed));
}

function view() {
  const [name, arg] = (location.hash.slice(1) || "overview").split("/");
  return { name, arg: arg && decodeURIComponent(arg) };
}

async function renderStatus(st) {
  document.getElementById("cluster").textContent =
    `leader ${st.leader || "none"} · ${st.workers.length} workers · ${st.pipelines.length} pipelines`;
  fill("nodes", (st.nodes || []).map((n) => el("tr", { data: { node: n.id } },
    el("td", {}, n.id), el("td", {}, n.address), el("td", {}, n.suffrage),
    el("td", {}, n.leader ? badge("leader") : "follower"))), "no Raft configuration");
  const now = Date.now();
  fill("workers", st.workers.map((w) => el("tr", { data: { worker: w.worker, slots: w.slots, busy: w.busy } },
    el("td", {}, w.worker), el("td", {}, w.host || ""),
    el("td", { class: "slots" }, Array.from({ length: w.slots }, (_, i) => el("span", { class: i < w.busy ? "slot busy" : "slot" })), " " + w.slots),
    el("td", {}, w.busy), el("td", {}, num(w.done)), el("td", {}, num(w.failed)),
    el("td", {}, when(w.started)), el("td", {}, dur(Math.max(0, now - new Date(w.time))) + " ago"))), "no worker heard from");
  fill("pipelines", st.pipelines.map((p) => el("tr", { data: { pipeline: p.name, version: p.version } },
    el("td", {}, p.name), el("td", {}, p.pattern), el("td", {}, p.version),
    el("td", {}, p.last_run ? el("a", { href: "#runs/" + encodeURIComponent(p.last_run) }, p.last_run) : ""),
    el("td", {}, p.watermark || ""), el("td", {}, p.schedule || (p.after ? "after " + p.after : "")),
    el("td", {}, p.lag !== undefined ? num(p.lag) : p.lag_error || ""))), "no pipelines: sluice apply -f pipeline.yaml");
  fill("runlist", st.runs.map((r) => {
    const end = r.finished && !r.finished.startsWith("0001-") ? new Date(r.finished) : new Date();
    return el("tr", { class: "link", data: { run: r.run, pipeline: r.pipeline, state: r.state, rows: r.rows, tasks: r.tasks, done: r.tasks_done, failed: r.tasks_failed },
      onclick: () => { location.hash = "#runs/" + encodeURIComponent(r.run); } },
    el("td", {}, r.run), el("td", {}, r.pipeline), el("td", {}, badge(r.state)),
    el("td", {}, bar(r.tasks_done, r.tasks_failed, r.tasks), ` ${r.tasks_done}/${r.tasks}` + (r.tasks_failed ? `, ${r.tasks_failed} failed` : "")),
    el("td", {}, num(r.rows) + (r.unit ? " " + r.unit : "")), el("td", {}, bytes(r.bytes)), el("td", {}, when(r.created)),
    el("td", {}, dur(end - new Date(r.created))));
  }), "no runs yet");
}

async function renderRun(id) {
  const box = document.getElementById("run");
  if (!id) { box.hidden = true; return; }
  const r = await api("/v1/runs/" + encodeURIComponent(id));
  box.hidden = false;
  box.dataset.run = r.run;
  box.dataset.state = r.state;
  document.getElementById("run-id").textContent = r.run;
  const facts = [["pipeline", r.pipeline], ["state", badge(r.state)], ["tasks", `${r.tasks_done} done, ${r.tasks_failed} failed of ${r.tasks}`],
    [r.unit || "rows", num(r.rows)], ["bytes", bytes(r.bytes)], ["version", r.version || ""], ["checksum", r.checksum || ""],
    ["location", r.location || ""], ["trace", r.trace_id || ""], ["attempt", r.attempt || ""],
    ["trigger", r.trigger ? `${r.trigger.source || ""} ${r.trigger.subject || ""} ${r.trigger.msg_id || ""}`.trim() : ""]];
  document.getElementById("run-facts").replaceChildren(...facts.filter(([, v]) => v !== "").flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  document.getElementById("run-error").textContent = r.error || "";
  fill("tasks", (r.task_list || []).map((t) => el("tr", { data: { task: t.task, state: t.state, rows: t.rows } },
    el("td", {}, t.task), el("td", {}, t.partition), el("td", {}, badge(t.state)), el("td", {}, t.attempts),
    el("td", {}, t.worker || ""), el("td", {}, num(t.rows)), el("td", {}, bytes(t.bytes)), el("td", { class: "error" }, t.error || ""))), "no tasks (not planned yet)");
}

// spark draws samples of one value as an SVG line, labelled with its newest
// value.
function spark(samples, key, label, fmt) {
  const w = 160, h = 32, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "spark");
  svg.dataset.samples = samples.length;
  const top = Math.max(0, ...samples.map((s) => s[key]));
  const max = top || 1;
  const x = (i) => (samples.length > 1 ? (i * w) / (samples.length - 1) : w - 2);
  const y = (v) => h - 2 - ((h - 14) * v) / max;
  const line = document.createElementNS(ns, samples.length > 1 ? "polyline" : "circle");
  if (samples.length > 1) line.setAttribute("points", samples.map((s, i) => `${x(i)},${y(s[key])}`).join(" "));
  else if (samples.length) { line.setAttribute("cx", x(0)); line.setAttribute("cy", y(samples[0][key])); line.setAttribute("r", 2); }
  svg.append(line);
  const text = document.createElementNS(ns, "text");
  text.setAttribute("x", 3);
  text.setAttribute("y", 10);
  text.textContent = samples.length ? `${label} ${fmt(samples[samples.length - 1][key])} (max ${fmt(top)})` : `${label}: no samples yet`;
  svg.append(text);
  return svg;
}

async function renderCDC() {
  const [st, hist] = await Promise.all([api("/v1/cdc"), api("/v1/cdc/history")]);
  fill("streams", st.streams.map((s) => {
    const samples = (hist.streams || {})[s.pipeline] || [];
    return el("tr", { data: { pipeline: s.pipeline, phase: s.phase, lag: s.status.lag_bytes, worker: s.worker || "" } },
      el("td", {}, s.pipeline), el("td", {}, s.pattern), el("td", {}, s.phase), el("td", {}, badge(s.status.state || "unassigned")),
      el("td", {}, s.worker || ""), el("td", {}, bytes(s.status.lag_bytes)), el("td", {}, dur(nsToMs(s.status.lag_time))),
      el("td", {}, num(s.status.events)), el("td", {}, when(s.status.last_commit)),
      el("td", {}, spark(samples, "lag_bytes", "bytes", bytes), spark(samples, "lag_seconds", "seconds", (v) => v.toFixed(1)),
        s.status.error ? el("div", { class: "error" }, s.status.error) : null));
  }), "no cdc or cdc_apply pipelines");
}

async function renderBackfills() {
  const st = await api("/v1/backfills");
  fill("backfilllist", st.backfills.map((b) => el("tr", { data: { backfill: b.id, pipeline: b.pipeline, state: b.state, total: b.total, committed: b.committed, rows: b.rows } },
    el("td", {}, b.id), el("td", {}, b.pipeline),
    el("td", {}, b.range ? `[${b.range.lo}, ${b.range.hi})` : `${when(b.from)} → ${when(b.to)}`), el("td", {}, badge(b.state)),
    el("td", {}, bar(b.committed + b.skipped, b.failed, b.total),
      ` ${b.committed}/${b.total}` + (b.running ? `, ${b.running} running` : "") + (b.failed ? `, ${b.failed} failed` : "") + (b.skipped ? `, ${b.skipped} skipped` : "")),
    el("td", {}, num(b.rows)), el("td", {}, when(b.created)), el("td", {}, when(b.finished)))), "no backfills");
}

async function renderDLQ() {
  const st = await api("/v1/dlq");
  document.getElementById("dlq-total").textContent = `(${st.total})`;
  fill("deadletters", st.dead_letters.map((d) => el("tr", { data: { seq: d.seq, kind: d.kind, pipeline: d.pipeline } },
    el("td", {}, d.seq), el("td", {}, d.kind), el("td", {}, d.pipeline), el("td", {}, d.attempts), el("td", {}, when(d.time)),
    el("td", {}, el("details", {}, el("summary", { class: "error" }, d.reason), el("pre", {}, JSON.stringify(d.payload, null, 2)))),
    el("td", { class: "actions" },
      el("button", { class: "replay", onclick: () => act("POST", d.seq, "replay") }, "Replay"),
      el("button", { class: "purge", onclick: () => act("DELETE", d.seq, "purge") }, "Purge")))), "no dead letters");
}

async function act(method, seq, what) {
  if (what === "purge" && !confirm(`Delete dead letter ${seq}?`)) return;
  const out = document.getElementById("dlq-result");
  try {
    const r = await api(`/v1/dlq/${seq}` + (what === "replay" ? "/replay" : ""), { method });
    out.dataset.seq = seq;
    out.dataset.run = r.run || "";
    out.textContent = what === "purge" ? `dead letter ${seq} purged` :
      r.subject ? `dead letter ${seq} re-published on ${r.subject} (msg id ${r.msg_id})` : `dead letter ${seq} replayed as run ${r.run} (${r.tasks} tasks)`;
  } catch (e) {
    out.textContent = `${what} of ${seq}: ${e.message}`;
  }
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  const v = view();
  document.querySelectorAll("[data-view]").forEach((e) => {
    if (e.tagName === "SECTION") e.hidden = e.dataset.view !== v.name;
    else e.classList.toggle("active", e.dataset.view === v.name);
  });
  const errBox = document.getElementById("error");
  try {
    const st = await api("/v1/status?limit=50");
    await renderStatus(st);
    if (v.name === "runs") await renderRun(v.arg);
    if (v.name === "cdc") await renderCDC();
    if (v.name === "backfills") await renderBackfills();
    if (v.name === "dlq") await renderDLQ();
    errBox.hidden = true;
    document.getElementById("updated").textContent = "updated " + when(new Date().toISOString());
    document.body.dataset.loaded = v.name;
  } catch (e) {
    if (e.message === "signed out") return;
    errBox.hidden = false;
    errBox.textContent = e.message;
  }
  timer = setTimeout(refresh, POLL_MS);
}

function showLogin(msg) {
  clearTimeout(timer);
  document.querySelector("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = msg;
  document.getElementById("token").focus();
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("sluice-token", token);
  document.getElementById("login").hidden = true;
  document.querySelector("main").hidden = false;
  refresh();
});
window.addEventListener("hashchange", refresh);
refresh();
