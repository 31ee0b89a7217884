// The syncsgd dashboard: the jobs table (polled), the submit form (errors shown next to
// their fields), and one job's live charts, fed by its Server-Sent Events stream.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
let selected = null;   // job id shown in the detail panel
let stream = null;     // its EventSource
let lastStep = 0;      // the last step drawn
let received = 0;      // curve points received for it

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const token = localStorage.getItem("syncsgd-token");
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function api(method, path, body) {
  const response = await fetch(path, { method, headers: headers(body !== undefined),
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  return { ok: response.ok, status: response.status, data };
}

const fmt = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

// ---- the jobs table ------------------------------------------------------------------------

async function refreshJobs() {
  const { ok, data } = await api("GET", "/jobs?limit=50");
  if (!ok) return;
  const rows = data.items.map((job) => {
    const total = job.total_steps || 0;
    const share = total ? Math.round((100 * job.step) / total) : 0;
    const cancel = TERMINAL.has(job.state) ? "" :
      `<button class="cancel" data-cancel="${job.id}" type="button">cancel</button>`;
    return `<tr data-job="${job.id}" class="${job.id === selected ? "selected" : ""}">
      <td>${job.id}</td><td>${escapeHtml(job.name)}</td><td>${escapeHtml(job.owner || "")}</td>
      <td class="state ${job.state}" title="${escapeHtml(job.waiting || "")}">${job.state}
          <div class="priority">${job.spec.priority}</div></td>
      <td><div class="bar" title="${job.step}/${total || "?"}"><div style="width:${share}%"></div></div>
          ${job.step}/${total || "?"}</td>
      <td>${fmt(job.loss)}</td><td>${fmt(job.val_accuracy)}</td><td>${job.restarts}</td>
      <td>${cancel}</td></tr>`;
  });
  $("#jobs tbody").innerHTML = rows.join("");
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

$("#jobs tbody").addEventListener("click", async (event) => {
  const cancelId = event.target.dataset.cancel;
  if (cancelId) {
    event.stopPropagation();
    await api("POST", `/jobs/${cancelId}/cancel`);
    refreshJobs();
    return;
  }
  const row = event.target.closest("tr[data-job]");
  if (row) select(row.dataset.job);
});

async function refreshHealth() {
  const { ok, data } = await api("GET", "/healthz");
  $("#health").textContent = ok ?
    `${data.free_cpus} of ${data.cluster_cpus} CPUs free · ${data.running.length} running` :
    "service unreachable";
}

// ---- the submit form -----------------------------------------------------------------------

async function prefillForm() {
  const [{ data: defaults }, { data: datasets }] =
    await Promise.all([api("GET", "/jobs/defaults"), api("GET", "/datasets")]);
  const options = ["digits", "synthetic", ...(datasets || []).map((d) => d.id)];
  const labels = { digits: "digits", synthetic: "synthetic" };
  for (const d of datasets || []) labels[d.id] = `${d.name} (${d.id})`;
  $("select[name='data.dataset']").innerHTML =
    options.map((o) => `<option value="${o}">${escapeHtml(labels[o])}</option>`).join("");
  for (const field of $("#submit-form").querySelectorAll("[name]")) {
    const value = field.name.split(".").reduce((v, key) => (v ? v[key] : undefined), defaults);
    if (value === undefined) continue;
    if (field.dataset.type === "json") field.value = JSON.stringify(value, null, 1);
    else field.value = value === null ? "" : value;
  }
}

function readForm() {
  const spec = {};
  for (const field of $("#submit-form").querySelectorAll("[name]")) {
    let value = field.value;
    const type = field.dataset.type;
    if (type === "number") value = value === "" ? value : Number(value);
    if (type === "optional-number") value = value.trim() === "" ? null : Number(value);
    if (type === "json") {
      try { value = JSON.parse(value); }
      catch (e) { throw { field: field.name, message: `not valid JSON: ${e.message}` }; }
    }
    const keys = field.name.split(".");
    let node = spec;
    for (const key of keys.slice(0, -1)) node = node[key] = node[key] || {};
    node[keys[keys.length - 1]] = value;
  }
  return spec;
}

function clearErrors() {
  for (const label of $("#submit-form").querySelectorAll("label")) {
    label.classList.remove("invalid");
    label.querySelector(".error").textContent = "";
  }
  $("#form-error").textContent = "";
}

function showError(loc, message) {
  // The API names the field as a path ("optimizer.lr", "model.layers.0.units"); show the
  // message next to the longest form field that the path starts with.
  const path = loc.join(".");
  const labels = [...$("#submit-form").querySelectorAll("label[data-field]")]
    .filter((l) => path === l.dataset.field || path.startsWith(`${l.dataset.field}.`))
    .sort((a, b) => b.dataset.field.length - a.dataset.field.length);
  if (labels.length) {
    labels[0].classList.add("invalid");
    const slot = labels[0].querySelector(".error");
    slot.textContent = [slot.textContent, message].filter(Boolean).join("; ");
  } else {
    $("#form-error").textContent = [$("#form-error").textContent, `${path}: ${message}`]
      .filter(Boolean).join("; ");
  }
}

$("#submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  let spec;
  try { spec = readForm(); }
  catch (problem) { showError([problem.field], problem.message); return; }
  const { ok, status, data } = await api("POST", "/jobs", spec);
  if (ok) {
    await refreshJobs();
    select(data.id);
  } else if (status === 422 && Array.isArray(data.detail)) {
    for (const error of data.detail) showError(error.loc.slice(1), error.msg);
  } else {
    $("#form-error").textContent = `HTTP ${status}: ${data ? JSON.stringify(data.detail) : ""}`;
  }
});

// ---- one job: live charts ------------------------------------------------------------------

const TIMING = ["compute", "allreduce", "wait", "update"];
const RANK_STEPS = 200;  // the per-rank views show this many latest steps
let sizes = [];  // [step, workers] at the start and at each resize of the selected job
let rankCount = 0;  // ranks of the selected job, as the rank selector lists them

function select(jobId) {
  if (stream) stream.close();
  selected = jobId;
  received = 0;
  lastStep = 0;
  sizes = [];
  $("#detail").hidden = false;
  $("#detail-title").textContent = jobId;
  $("#point-count").textContent = "0";
  $("#detail-error").textContent = "";
  Plotly.newPlot("loss-chart", [
    { name: "training loss (step)", x: [], y: [], mode: "lines", line: { width: 1 } },
    { name: "validation loss (epoch)", x: [], y: [], mode: "lines+markers" },
    { name: "validation accuracy", x: [], y: [], mode: "lines+markers", yaxis: "y2",
      line: { dash: "dot" } },
  ], { title: { text: "loss" }, margin: { t: 40, r: 60 }, xaxis: { title: { text: "step" } },
       yaxis: { type: "log", title: { text: "loss" } },
       yaxis2: { overlaying: "y", side: "right", range: [0, 1], tickformat: ".0%", dtick: 0.2,
                 title: { text: "accuracy" } },
       legend: { orientation: "h" }, shapes: [], annotations: [] },
     { responsive: true, displaylogo: false });
  Plotly.newPlot("rate-chart", [
    { name: "learning rate", x: [], y: [], mode: "lines" },
    { name: "gradient norm (before clipping)", x: [], y: [], mode: "lines", yaxis: "y2",
      line: { width: 1 } },
  ], { title: { text: "learning rate and gradient norm" }, margin: { t: 40, r: 60 },
       xaxis: { title: { text: "step" } }, yaxis: { title: { text: "learning rate" } },
       yaxis2: { overlaying: "y", side: "right", type: "log", title: { text: "norm" } },
       legend: { orientation: "h" } },
  { responsive: true, displaylogo: false });
  drawSplit("seconds per step (rank 0)");
  rankCount = 0;
  $("#split-rank").innerHTML = '<option value="">rank 0, every step (live)</option>';
  Plotly.newPlot("ranks-chart", [], { title: { text: "each rank's seconds per step" } },
                 { responsive: true, displaylogo: false });
  drawWorkers();
  refreshJobs();
  follow(jobId);
}

function drawSplit(title, steps = [], split = TIMING.map(() => [])) {
  Plotly.newPlot("timing-chart", TIMING.map((name, i) => (
    { name, x: steps, y: split[i], stackgroup: "time", mode: "none" })),
  { title: { text: title }, margin: { t: 40 }, xaxis: { title: { text: "step" } },
    legend: { orientation: "h" } },
  { responsive: true, displaylogo: false });
}

function listRanks(ranks) {
  if (ranks.length === rankCount) return;
  rankCount = ranks.length;
  const options = ['<option value="">rank 0, every step (live)</option>'];
  for (const r of ranks) {
    options.push(`<option value="${r.rank}">rank ${r.rank} on ${escapeHtml(r.node)}, ` +
                 `last ${RANK_STEPS} steps</option>`);
  }
  const chosen = $("#split-rank").value;
  $("#split-rank").innerHTML = options.join("");
  $("#split-rank").value = chosen;
}

// Every rank's timings of the latest steps (GET /jobs/{id}/timeline): the chosen rank's
// split, and each rank's mean split side by side, where a straggler stands out.
async function refreshRanks() {
  const jobId = selected;
  if (!jobId || !lastStep) return;
  const from = Math.max(1, lastStep - RANK_STEPS + 1);
  const { ok, data } = await api("GET", `/jobs/${jobId}/timeline?from_step=${from}`);
  if (!ok || selected !== jobId) return;
  const byRank = new Map();  // rank -> phase -> step -> seconds
  for (const e of data.traceEvents) {
    if (e.ph !== "X") continue;
    if (!byRank.has(e.tid)) byRank.set(e.tid, Object.fromEntries(TIMING.map((k) => [k, new Map()])));
    byRank.get(e.tid)[e.name].set(e.args.step, e.dur / 1e6);
  }
  const ranks = [...byRank.keys()].sort((a, b) => a - b);
  const mean = (m) => [...m.values()].reduce((a, b) => a + b, 0) / Math.max(1, m.size);
  Plotly.react("ranks-chart", TIMING.map((name) => ({
    name, type: "bar", x: ranks.map((r) => `rank ${r}`),
    y: ranks.map((r) => mean(byRank.get(r)[name])) })),
  { title: { text: `each rank's seconds per step (mean of the last ${RANK_STEPS})` },
    barmode: "stack", margin: { t: 40 }, legend: { orientation: "h" } },
  { responsive: true, displaylogo: false });
  const chosen = $("#split-rank").value;
  if (chosen !== "" && byRank.has(Number(chosen))) {
    const phases = byRank.get(Number(chosen));
    const steps = [...phases.compute.keys()].sort((a, b) => a - b);
    drawSplit(`seconds per step (rank ${chosen}, last ${RANK_STEPS} steps)`, steps,
              TIMING.map((k) => steps.map((s) => phases[k].get(s))));
  }
}

$("#split-rank").addEventListener("change", async () => {
  if ($("#split-rank").value === "") {  // back to rank 0's curve, every step
    const { ok, data } = await api("GET", `/jobs/${selected}/curve`);
    if (!ok) return;
    drawSplit("seconds per step (rank 0)", data.points.map((p) => p.step),
              TIMING.map((k) => data.points.map((p) => p[k])));
  } else {
    await refreshRanks();
  }
});

// The world size over the steps: constant for a fixed job, a staircase for an elastic one.
function drawWorkers() {
  const x = sizes.map((s) => s[0]);
  const y = sizes.map((s) => s[1]);
  if (sizes.length) { x.push(Math.max(lastStep, x[x.length - 1])); y.push(y[y.length - 1]); }
  Plotly.react("workers-chart", [
    { name: "workers", x, y, mode: "lines", line: { shape: "hv" }, fill: "tozeroy" },
  ], { title: { text: "workers (world size)" }, margin: { t: 40 },
       xaxis: { title: { text: "step" } }, yaxis: { rangemode: "tozero", dtick: 1 } },
  { responsive: true, displaylogo: false });
}

function markResize(resize) {
  if (!sizes.length) sizes.push([0, resize.from_workers]);
  sizes.push([resize.step, resize.to_workers]);
  drawWorkers();
}

// An EventSource cannot send the token, so the stream opens with a short-lived ticket for
// this job, asked for with the token. A dropped connection reconnects by itself (sending
// Last-Event-ID, so it resumes after the last point); one refused (the ticket expired,
// the service restarted) is opened again with a new ticket, after the last step drawn.
async function follow(jobId) {
  const { ok, data } = await api("POST", `/jobs/${jobId}/events/ticket`);
  if (!ok || selected !== jobId) return;
  const ticket = encodeURIComponent(data.ticket);
  stream = new EventSource(`/jobs/${jobId}/events?ticket=${ticket}&since=${lastStep}`);
  stream.addEventListener("points", (event) => addPoints(JSON.parse(event.data)));
  stream.addEventListener("state", (event) => showState(JSON.parse(event.data)));
  stream.addEventListener("restart", (event) => markRestart(JSON.parse(event.data)));
  stream.addEventListener("resize", (event) => markResize(JSON.parse(event.data)));
  const opened = stream;
  opened.addEventListener("error", () => {
    if (opened.readyState === EventSource.CLOSED && stream === opened && selected === jobId) {
      setTimeout(() => { if (stream === opened) follow(jobId); }, 2000);
    }
  });
}

function addPoints(all) {
  const points = all.filter((p) => p.step > lastStep);  // never draw a step twice
  if (!points.length) return;
  lastStep = points[points.length - 1].step;
  const steps = points.map((p) => p.step);
  const epochEnds = points.filter((p) => p.val_loss !== null);
  Plotly.extendTraces("loss-chart", {
    x: [steps, epochEnds.map((p) => p.step), epochEnds.map((p) => p.step)],
    y: [points.map((p) => p.loss), epochEnds.map((p) => p.val_loss),
        epochEnds.map((p) => p.val_accuracy)],
  }, [0, 1, 2]);
  Plotly.extendTraces("rate-chart", {
    x: [steps, steps], y: [points.map((p) => p.lr), points.map((p) => p.grad_norm)],
  }, [0, 1]);
  if ($("#split-rank").value === "") {
    Plotly.extendTraces("timing-chart", {
      x: TIMING.map(() => steps), y: TIMING.map((key) => points.map((p) => p[key])),
    }, TIMING.map((_, i) => i));
  }
  received += points.length;
  $("#point-count").textContent = String(received);
  if (sizes.length) drawWorkers();
}

function showState(job) {
  const state = $("#detail-state");
  state.textContent = job.state;
  state.className = `state ${job.state}`;
  const early = job.stopped_early_at_epoch === null ? "" :
    ` · stopped early after epoch ${job.stopped_early_at_epoch}, best epoch ${job.best_epoch}`;
  $("#detail-progress").textContent = `step ${job.step}/${job.total_steps || "?"}${early}`;
  $("#detail-error").textContent = job.error || "";
  listRanks(job.ranks);
  if (!sizes.length && job.world_size !== null) {
    sizes.push([0, job.world_size]);
    drawWorkers();
  }
  $("#cancel-selected").hidden = TERMINAL.has(job.state);
  if (TERMINAL.has(job.state) && stream) stream.close();  // or EventSource reconnects
  refreshJobs();
}

function markRestart(restart) {
  const chart = $("#loss-chart");
  const shapes = [...(chart.layout.shapes || []), {
    type: "line", x0: restart.from_step, x1: restart.from_step, yref: "paper", y0: 0, y1: 1,
    line: { color: "#c62828", dash: "dash" } }];
  const annotations = [...(chart.layout.annotations || []), {
    x: restart.from_step, y: 1, yref: "paper", text: `restart ${restart.number}`,
    showarrow: false, font: { color: "#c62828" } }];
  Plotly.relayout(chart, { shapes, annotations });
}

$("#cancel-selected").addEventListener("click", async () => {
  if (selected) await api("POST", `/jobs/${selected}/cancel`);
});

// ---- start ---------------------------------------------------------------------------------

$("#token").value = localStorage.getItem("syncsgd-token") || "";
$("#token").addEventListener("change", (e) => localStorage.setItem("syncsgd-token", e.target.value));
prefillForm();
refreshJobs();
refreshHealth();
setInterval(refreshJobs, 1500);
setInterval(refreshHealth, 5000);
setInterval(refreshRanks, 2000);
