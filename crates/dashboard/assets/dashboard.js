// The dashboard page: fetches the JSON routes and draws them with uPlot (vendored).
// Every chart container gets data-rendered="<points drawn>" once uPlot has drawn it, so a
// headless browser test can check that charts rendered with data. Data strings are always
// inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const text = await r.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch (_) {
    throw new Error(url + ": HTTP " + r.status + ": " + text.slice(0, 200));
  }
  if (!r.ok) throw new Error(url + ": " + (body.error_type || r.status) + ": " + (body.error || text));
  return body;
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (digits === undefined) digits = Math.abs(v) >= 100 || Number.isInteger(v) ? 0 : 3;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

function status(id, text, isError) {
  const s = $(id);
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

function cards(id, items) {
  const box = $(id);
  box.replaceChildren();
  for (const [k, v] of items) {
    box.append(el("div", { class: "card" }, el("div", { class: "v" }, v), el("div", { class: "k" }, k)));
  }
}

function table(id, head, rows, rowClass) {
  const t = $(id);
  t.replaceChildren();
  if (!rows.length) return;
  t.append(el("tr", {}, ...head.map((h) => el("th", {}, h))));
  rows.forEach((r, i) => {
    const tr = el("tr", { class: rowClass ? rowClass(i) : null });
    for (const c of r) {
      const num = typeof c === "number";
      tr.append(el("td", { class: num ? "num" : null }, num ? fmt(c) : c instanceof Node ? c : c === null || c === undefined ? "–" : String(c)));
    }
    t.append(tr);
  });
}

const charts = {};
const GREEN = "#2f7d5b";

function widthOf(box) {
  return Math.max(240, Math.floor(box.getBoundingClientRect().width || box.clientWidth || 480));
}

function mark(box, points) {
  box.setAttribute("data-rendered", String(points));
}

function empty(box, text) {
  if (charts[box.id]) {
    charts[box.id].destroy();
    delete charts[box.id];
  }
  box.replaceChildren(text);
  box.classList.add("empty");
  mark(box, 0);
}

// A bar chart of one series over category labels.
function barChart(id, labels, values, opts) {
  opts = opts || {};
  const box = $(id);
  const points = values.filter((v) => v !== null && v !== undefined && !Number.isNaN(v)).length;
  if (!labels.length || !points) {
    empty(box, opts.emptyText || "no data");
    return;
  }
  box.classList.remove("empty");
  if (charts[id]) charts[id].destroy();
  box.replaceChildren();
  const xs = labels.map((_, i) => i);
  const max = Math.max(...values.filter((v) => v !== null && Number.isFinite(v)), 0);
  const every = Math.max(1, Math.ceil(labels.length / (opts.maxLabels || 40)));
  const long = labels.some((l) => String(l).length > 6) || labels.length > 12;
  const u = new uPlot({
    width: widthOf(box),
    height: opts.height || 220,
    legend: { show: true, live: true },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: {
      x: { time: false, range: [-0.5, labels.length - 0.5] },
      y: { range: [0, opts.yMax || (max > 0 ? max * 1.1 : 1)] },
    },
    axes: [
      {
        splits: () => xs.filter((i) => i % every === 0),
        values: (self, splits) => splits.map((i) => (labels[i] === undefined ? "" : String(labels[i]))),
        rotate: long ? -45 : 0,
        size: long ? 80 : 40,
        gap: 4,
      },
      { size: 60 },
    ],
    series: [
      { label: opts.xLabel || "category", value: (self, i) => (i === null || labels[i] === undefined ? "–" : String(labels[i])) },
      {
        label: opts.label || "count",
        stroke: GREEN,
        fill: "rgba(47,125,91,0.55)",
        width: 1,
        paths: uPlot.paths.bars({ size: [0.7, 60] }),
        points: { show: false },
        value: (self, v) => fmt(v, opts.digits),
      },
    ],
    hooks: { draw: [() => mark(box, points)] },
  }, [xs, values], box);
  charts[id] = u;
}

// A line chart over numbers (time in seconds when opts.time).
function lineChart(id, xs, seriesList, opts) {
  opts = opts || {};
  const box = $(id);
  const points = seriesList.reduce((a, s) => a + s.values.filter((v) => v !== null && v !== undefined).length, 0);
  if (!xs.length || !points) {
    empty(box, opts.emptyText || "no data");
    return;
  }
  box.classList.remove("empty");
  if (charts[id]) charts[id].destroy();
  box.replaceChildren();
  const series = [{ label: opts.xLabel || "x" }];
  for (const s of seriesList) {
    series.push({
      label: s.label,
      stroke: s.color || GREEN,
      width: s.width || 1.5,
      fill: s.fill,
      points: { show: xs.length < 30 },
      spanGaps: false,
      value: (self, v) => fmt(v, opts.digits),
    });
  }
  const u = new uPlot({
    width: widthOf(box),
    height: opts.height || 200,
    legend: { show: opts.legend !== false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: !!opts.time }, y: opts.yRange ? { range: opts.yRange } : {} },
    bands: opts.bands,
    axes: [{}, { size: 60 }],
    series,
    hooks: { draw: [() => mark(box, points)] },
  }, [xs, ...seriesList.map((s) => s.values)], box);
  charts[id] = u;
}

// ---------------------------------------------------------------- dataset

function renderDataset(d) {
  status("dataset-status", d.root + ": " + fmt(d.n_recordings) + " usable recordings of " + fmt(d.n_species) + " species");
  const du = d.durations;
  cards("dataset-cards", [
    ["species in taxonomy", fmt(d.n_species)],
    ["recordings", fmt(d.n_recordings)],
    ["soundscapes", fmt(d.soundscapes)],
    ["hours of audio" + (du.complete ? "" : " (so far)"), fmt(du.total_hours, 2)],
    ["median clip (s)", fmt(du.median_s, 1)],
    ["malformed / skipped rows", fmt(d.malformed_rows) + " / " + fmt(d.skipped_rows)],
  ]);
  barChart("chart-class-species", d.classes.map((c) => c.class_name), d.classes.map((c) => c.species), { label: "species", xLabel: "class" });
  barChart("chart-class-recordings", d.classes.map((c) => c.class_name), d.classes.map((c) => c.recordings), { label: "recordings", xLabel: "class" });
  barChart("chart-collections", d.collections.map((c) => c.collection), d.collections.map((c) => c.recordings), { label: "recordings", xLabel: "collection" });
  barChart("chart-ratings", d.ratings.bins.map((b) => fmt(b.rating, 1)), d.ratings.bins.map((b) => b.recordings), { label: "recordings", xLabel: "rating" });
  renderDurations(du);
  const s = d.splits;
  $("split-options").textContent = "valid " + s.options.valid_fraction + ", initial " + s.options.initial_fraction + ", seed " + s.options.seed;
  barChart("chart-splits", ["train", "valid", "initial", "retrain"], [s.train, s.valid, s.initial, s.retrain], { label: "recordings", xLabel: "part" });
  const sp = d.species.slice().sort((a, b) => b.recordings - a.recordings || a.code.localeCompare(b.code));
  barChart("chart-species", sp.map((x) => x.code), sp.map((x) => x.recordings), { label: "recordings", xLabel: "species", height: 240, maxLabels: 60 });
  table("split-cells", ["split", "period", "recordings"], s.cells.map((c) => [c.split, c.period, c.recordings]));
  table("split-collections", ["collection", "train", "valid", "initial", "retrain"], s.collections.map((c) => [c.collection, c.train, c.valid, c.initial, c.retrain]));
}

function durationLabel(b) {
  return b.hi_s === null ? "≥" + b.lo_s + " s" : b.lo_s + "–" + b.hi_s + " s";
}

function renderDurations(du) {
  $("durations-progress").textContent = du.complete
    ? "(" + fmt(du.scanned) + " clips" + (du.failed ? ", " + du.failed + " unreadable" : "") + ")"
    : "(scanning: " + fmt(du.scanned) + " of " + fmt(du.total) + ")";
  barChart("chart-durations", du.bins.map(durationLabel), du.bins.map((b) => b.recordings), {
    label: "recordings",
    xLabel: "duration",
    emptyText: du.complete ? "no readable clips" : "scanning durations…",
  });
}

async function loadDataset() {
  try {
    const d = await getJSON("/api/dataset");
    renderDataset(d);
    // Durations arrive in the background: poll until the scan is complete.
    let du = d.durations;
    while (!du.complete) {
      await new Promise((r) => setTimeout(r, 2000));
      du = (await getJSON("/api/dataset")).durations;
      renderDurations(du);
    }
  } catch (e) {
    status("dataset-status", String(e.message || e), true);
  }
}

// ---------------------------------------------------------------- clips

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
}

function drawMel(canvas, mel) {
  const bytes = Uint8Array.from(atob(mel.data_b64), (c) => c.charCodeAt(0));
  canvas.width = mel.n_frames;
  canvas.height = mel.n_mels;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(mel.n_frames, mel.n_mels);
  const lut = Array.from({ length: 256 }, (_, v) => colour(v / 255));
  for (let m = 0; m < mel.n_mels; m++) {
    // Row 0 is the lowest band: draw it at the bottom.
    const y = mel.n_mels - 1 - m;
    for (let t = 0; t < mel.n_frames; t++) {
      const [r, g, b] = lut[bytes[m * mel.n_frames + t]];
      const o = 4 * (y * mel.n_frames + t);
      img.data[o] = r;
      img.data[o + 1] = g;
      img.data[o + 2] = b;
      img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.setAttribute("data-rendered", String(bytes.length));
}

function renderClips(c) {
  const f = c.features;
  status("clips-status", "Log-mel as the model sees it: " + f.recipe + " recipe, " + f.sample_rate + " Hz, n_fft " + f.n_fft +
    ", hop " + f.hop_length + ", " + f.n_mels + " mels (" + f.f_min + "–" + f.f_max + " Hz) — from " + c.features_source +
    ". Each clip shows its loudest " + f.window.length_s + " s window.");
  const list = $("clips-list");
  list.replaceChildren();
  let lastClass = null;
  c.clips.forEach((clip, i) => {
    if (clip.class_name !== lastClass) {
      list.append(el("h3", { class: "clip-class" }, clip.class_name));
      lastClass = clip.class_name;
    }
    const wave = el("div", { class: "chart", id: "chart-wave-" + i });
    const canvas = el("canvas", { class: "mel", id: "mel-" + i, title: "log-mel, low bands at the bottom" });
    const meta = el("div", { class: "meta" },
      el("div", { class: "name" }, clip.common_name + " (" + clip.species + ")"),
      el("div", {}, clip.filename),
      el("div", {}, clip.collection + " · rating " + fmt(clip.rating, 1) + " · " + fmt(clip.duration_s, 1) + " s"),
      el("div", {}, "window " + fmt(clip.window_start_s, 1) + "–" + fmt(clip.window_end_s, 1) + " s"),
      el("audio", { controls: "", preload: "none", src: clip.audio_url }));
    if (clip.error) meta.append(el("div", { class: "status error" }, clip.error));
    list.append(el("div", { class: "clip" }, meta, wave, canvas));
    if (clip.waveform) {
      lineChart(wave.id, clip.waveform.t, [
        { label: "min", values: clip.waveform.min, color: GREEN },
        { label: "max", values: clip.waveform.max, color: GREEN },
      ], { height: 170, legend: false, bands: [{ series: [2, 1], fill: "rgba(47,125,91,0.35)" }], digits: 3 });
    } else {
      empty(wave, "no waveform");
    }
    if (clip.mel) drawMel(canvas, clip.mel);
    else canvas.setAttribute("data-rendered", "0");
  });
  if (!c.clips.length) status("clips-status", "no clips in train.csv", true);
}

async function loadClips() {
  try {
    renderClips(await getJSON("/api/clips"));
  } catch (e) {
    status("clips-status", String(e.message || e), true);
  }
}

// ---------------------------------------------------------------- report

function renderSet(latest, set) {
  const r = set.report;
  $("report-set-name").textContent = set.name + ": " + r.title;
  const o = r.overall;
  cards("report-cards", [
    ["macro ROC-AUC", fmt(o.macro_auc, 4)],
    ["macro AP", fmt(o.macro_ap, 4)],
    ["species scored (AUC / AP)", o.n_auc_scored + " / " + o.n_ap_scored],
    ["windows", fmt(r.n_rows)],
    ["species", fmt(r.n_species)],
  ]);
  const withAp = r.per_class.filter((c) => c.ap !== null).sort((a, b) => b.ap - a.ap || a.species.localeCompare(b.species));
  barChart("chart-ap", withAp.map((c) => c.species), withAp.map((c) => c.ap), {
    label: "AP", xLabel: "species", yMax: 1, digits: 3, height: 240, maxLabels: 60,
    emptyText: "no species with a positive window",
  });
  const sl = r.slices.filter((s) => s.macro_auc !== null);
  barChart("chart-slices", sl.map((s) => s.dimension + "=" + s.value), sl.map((s) => s.macro_auc), {
    label: "macro AUC", xLabel: "slice", yMax: 1, digits: 3, height: 240,
    emptyText: "no slice has a scorable species",
  });
  table("slice-table", ["dimension", "value", "windows", "species scored", "macro ROC-AUC", "macro AP"],
    r.slices.map((s) => [s.dimension, s.value, s.n_rows, s.n_species_scored, s.macro_auc === null ? null : +s.macro_auc.toFixed(4), s.macro_ap === null ? null : +s.macro_ap.toFixed(4)]));
  const tabs = $("report-sets");
  for (const b of tabs.querySelectorAll("button")) b.classList.toggle("on", b.dataset.set === set.name);
}

function renderReport(r) {
  if (!r.available) {
    status("report-status", r.reason || "no report", true);
    empty($("chart-ap"), "no evaluation report");
    empty($("chart-slices"), "no evaluation report");
  } else {
    const l = r.latest;
    const st = $("report-status");
    st.classList.remove("error");
    st.replaceChildren("Run " + l.experiment + "/" + l.run + " (" + new Date(l.modified_ms).toISOString().slice(0, 19).replace("T", " ") + " UTC) — " + l.path + " ");
    const tabs = $("report-sets");
    tabs.replaceChildren();
    for (const set of l.sets) {
      const b = el("button", { type: "button", "data-set": set.name }, set.name);
      b.addEventListener("click", () => renderSet(l, set));
      tabs.append(b);
      if (set.html_url) tabs.append(el("a", { href: set.html_url, target: "_blank" }, "HTML report (" + set.name + ")"), " ");
    }
    renderSet(l, l.sets[0]);
  }
  table("recent-runs", ["experiment", "run", "report time (UTC)", "macro ROC-AUC", "macro AP", "error"],
    r.recent.map((h) => [h.experiment, h.run, new Date(h.modified_ms).toISOString().slice(0, 19).replace("T", " "),
      h.macro_auc === null ? null : +h.macro_auc.toFixed(4), h.macro_ap === null ? null : +h.macro_ap.toFixed(4), h.error]));
}

async function loadReport() {
  try {
    renderReport(await getJSON("/api/report"));
  } catch (e) {
    status("report-status", String(e.message || e), true);
  }
}

// ---------------------------------------------------------------- models

function renderModels(m) {
  if (!m.available) {
    status("models-status", m.reason || "no registry", true);
    return;
  }
  const cur = m.current ? "in use without --model: version " + m.current[0] + " (" + m.current[1] + ")" : "no production or staging alias: nothing is used by default";
  status("models-status", "Registry " + m.root + ": model " + (m.name || "(unnamed)") + ", " + m.versions.length + " version(s); " + cur);
  const date = (ms) => (ms ? new Date(ms).toISOString().slice(0, 19).replace("T", " ") : null);
  table("models-table",
    ["version", "aliases", "registered (UTC)", "architecture", "classes", "recipe", "trained", "weights (MB)", "run", "description"],
    m.versions.map((v) => {
      const b = v.bundle || {};
      return [v.version, v.aliases.join(", "), date(v.creation_timestamp), b.architecture || v.bundle_error, b.num_classes,
        b.recipe, b.trained === undefined || b.trained === null ? null : String(b.trained),
        b.weights_bytes ? +(b.weights_bytes / 1048576).toFixed(2) : null, v.run_id, v.description];
    }),
    (i) => (m.current && m.versions[i].version === m.current[0] ? "current" : null));
}

async function loadModels() {
  try {
    renderModels(await getJSON("/api/models"));
  } catch (e) {
    status("models-status", String(e.message || e), true);
  }
}

// ---------------------------------------------------------------- serving

// One column per field of the backend's ServedModel row (serving.rs), in this order.
const SERVED_MODEL_COLUMNS = [
  ["model version", (m) => m.version],
  ["role", (m) => m.role],
  ["traffic share (%)", (m) => m.share_pct],
  ["loaded at", (m) => m.loaded_at],
  ["requests", (m) => m.requests],
  ["windows", (m) => m.windows],
  ["clients gone", (m) => m.client_gone],
  ["queued windows", (m) => m.queued],
  ["replicas", (m) => m.replicas],
  ["max batch", (m) => m.max_batch],
  ["architecture", (m) => m.architecture],
  ["trained", (m) => (m.trained ? "yes" : "no (random weights)")],
  ["members", (m) => m.members.join(", ")],
  ["blend", (m) => m.blend],
  ["licences", (m) => m.licences.join("; ")],
  ["licence status", (m) => m.licence_status],
];

function serverModels(rows) {
  // No rows (none loaded, or /v1/models unreadable: the status line says why) clears the table.
  table("serving-models", SERVED_MODEL_COLUMNS.map((c) => c[0]), (rows || []).map((m) => SERVED_MODEL_COLUMNS.map((c) => c[1](m))));
}

function renderServing(s) {
  const ids = ["chart-serving-rate", "chart-serving-latency", "chart-serving-batches", "chart-serving-predictions"];
  if (!s.configured) {
    status("serving-status", "No serving process configured: start the dashboard with --server http://127.0.0.1:8080 to see live figures.");
    for (const id of ids) empty($(id), "not configured");
    return false;
  }
  if (!s.up) {
    status("serving-status", "Server " + s.server + " is not answering (" + s.error + "); figures resume when it is back.", true);
    cards("serving-cards", [["server", "down"]]);
    return true;
  }
  status("serving-status", "Server " + s.server + " is up; scraped " + new Date(s.scraped_at_ms).toISOString().slice(11, 19) + " UTC" + (s.models_error ? " (" + s.models_error + ")" : ""));
  const lat = s.latency || {};
  const ms = (x) => (x === null || x === undefined ? "–" : fmt(x * 1000, 1));
  cards("serving-cards", [
    ["requests (all routes)", fmt(s.requests_total)],
    ["5xx answers", fmt(s.errors_5xx)],
    ["API latency p50 / p95 / p99 (ms)", ms(lat.p50_s) + " / " + ms(lat.p95_s) + " / " + ms(lat.p99_s)],
    ["queue depth", fmt(s.queue_depth)],
    ["mean batch (windows)", s.batches ? fmt(s.batches.mean, 2) : "–"],
    ...s.inference.map((i) => ["inference ms/batch, " + i.model_version, ms(i.mean_s)]),
    ...Object.entries(s.rejected).map(([k, v]) => ["rejected: " + k, fmt(v)]),
  ]);
  const h = s.history;
  const ts = h.map((p) => p.t_ms / 1000);
  lineChart("chart-serving-rate", ts, [{ label: "req/s", values: h.map((p) => p.requests_per_s) }], { time: true, digits: 2, emptyText: "waiting for a second scrape…" });
  lineChart("chart-serving-latency", ts, [{ label: "p95 ms", values: h.map((p) => (p.p95_s === null ? null : p.p95_s * 1000)) }], { time: true, digits: 1, emptyText: "no API requests between scrapes yet" });
  const b = s.batches && s.batches.buckets.length ? s.batches.buckets : [];
  barChart("chart-serving-batches", b.map((x) => "≤" + x.le), b.map((x) => x.count), { label: "batches", xLabel: "size", emptyText: "no batches yet" });
  barChart("chart-serving-predictions", s.predictions.map((p) => p[0]), s.predictions.map((p) => p[1]), { label: "windows", xLabel: "species", emptyText: "no predictions yet" });
  table("serving-routes", ["route", "status", "requests"], s.requests.map((r) => [r.route, r.status, r.count]));
  serverModels(s.models);
  return true;
}

async function loadServing() {
  let again = true;
  try {
    again = renderServing(await getJSON("/api/serving"));
  } catch (e) {
    status("serving-status", String(e.message || e), true);
  }
  document.documentElement.setAttribute("data-serving-rendered", "1");
  // Live figures: poll while a server is configured.
  if (again) setTimeout(loadServing, 2000);
}

// ---------------------------------------------------------------- start

Promise.all([loadDataset(), loadClips(), loadReport(), loadModels()]).then(() => {
  document.documentElement.setAttribute("data-ready", "1");
});
loadServing();
