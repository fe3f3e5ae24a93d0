/* The planners' page, forecast part: for the chosen car parks, the next 24 hours as forecast
   (expected occupancy with its 80 % band) beside the observed pattern of the chosen dates at the
   same weekday and hour, and how good the stored forecasts were (contract §6). It redraws
   whenever planner.js has drawn a new choice (#results[data-query]); figures are the API's. */

const API = document.body.dataset.api;
const MAX_CHARTS = 8;
const $ = (id) => document.getElementById(id);
const charts = [];
let generation = 0;
let allLots = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error((body && body.message) || `${response.status} ${response.statusText}`);
  return body;
}

const pct = (capacity, free) => (capacity ? (100 * (capacity - free)) / capacity : null);
const fmt = (v, d) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));

/* The local weekday (0 = Monday) and hour of an ISO time with offset, as the lot's clock shows it. */
function localSlot(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})/.exec(iso);
  const day = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])).getUTCDay();
  return [(day + 6) % 7, +m[4]];
}

function drawForecast(box, name, forecast, pattern) {
  const head = el("h3", { text: name });
  if (!forecast.rows.length) {
    box.replaceChildren(head, el("p", { class: "hint forecast-reason", text: `No forecast: ${forecast.reason}` }));
    return;
  }
  const cap = forecast.capacity;
  const rows = forecast.rows;
  const labels = rows.map((r) => r.at.slice(11, 16));
  const expected = rows.map((r) => pct(cap, r.expected_free));
  const low = rows.map((r) => pct(cap, r.free_high));
  const high = rows.map((r) => pct(cap, r.free_low));
  const observed = rows.map((r) => {
    const [d, h] = localSlot(r.at);
    const v = pattern.heatmap && pattern.heatmap[d] ? pattern.heatmap[d][h] : null;
    return v === undefined ? null : v;
  });
  const canvas = el("canvas", { role: "img", "aria-label": `Forecast occupancy of ${name} for the next 24 hours with its band, and the observed pattern` });
  const inAnHour = rows[Math.min(4, rows.length - 1)];
  const summary = el("p", { class: "hint", text: `In an hour: about ${inAnHour.expected_free} free of ${cap} (${inAnHour.free_low}–${inAnHour.free_high}).` });
  box.replaceChildren(head, summary, el("div", { class: "chart forecast-chart" }, canvas));
  if (typeof Chart === "undefined") return;
  charts.push(new Chart(canvas, {
    type: "line",
    data: {
      labels,
      datasets: [
        { label: "band low", data: low, borderWidth: 0, pointRadius: 0, fill: false },
        { label: "80 % band", data: high, borderWidth: 0, pointRadius: 0, fill: "-1", backgroundColor: "rgba(11,61,92,.18)" },
        { label: "Forecast", data: expected, borderColor: "#0b3d5c", backgroundColor: "#0b3d5c", borderWidth: 2.5, pointRadius: 0 },
        { label: "Observed pattern (chosen dates)", data: observed, borderColor: "#9a6700", backgroundColor: "#9a6700", borderDash: [5, 4], borderWidth: 1.5, pointRadius: 0, spanGaps: false },
      ],
    },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      scales: { y: { min: 0, max: 100, title: { display: true, text: "Occupancy %" } }, x: { ticks: { autoSkip: true, maxTicksLimit: 9, maxRotation: 0 } } },
      plugins: {
        legend: { position: "bottom", labels: { filter: (item) => item.text !== "band low" } },
        tooltip: { filter: (item) => item.datasetIndex !== 0, callbacks: { label: (ctx) => `${ctx.dataset.label}: ${fmt(ctx.parsed.y, 0)} %` } },
      },
    },
  }));
}

function drawAccuracy(items) {
  const table = $("forecast-accuracy");
  const head = el("tr", {}, ...["Car park", "Ahead", "Forecasts compared", "Mean error (bays)", "Mean error (% of capacity)", "Inside the 80 % band"].map((t) => el("th", { scope: "col", text: t })));
  const body = el("tbody");
  for (const { name, accuracy } of items) {
    for (const h of accuracy.horizons) {
      body.append(el("tr", {},
        el("th", { scope: "row", text: name }), el("td", { text: `${h.horizon_hours} h` }), el("td", { text: String(h.n) }),
        el("td", { text: fmt(h.mae_bays, 1) }), el("td", { text: fmt(h.mae_pct, 1) }),
        el("td", { text: h.inside_band_pct === null ? "—" : `${fmt(h.inside_band_pct, 0)} %` })));
    }
  }
  table.replaceChildren(el("caption", { class: "sr", text: "How far the stored forecasts were from what then happened, per car park and horizon" }), el("thead", {}, head), body);
}

async function redraw(query) {
  const mine = ++generation;
  const q = new URLSearchParams(query);
  if (!allLots) allLots = (await getJSON(`${API}/lots`)).features || [];
  const names = Object.fromEntries(allLots.map((f) => [f.id, (f.properties && f.properties.name) || f.id]));
  const chosen = q.getAll("lot").length ? q.getAll("lot") : allLots.map((f) => f.id);
  const shown = chosen.slice(0, MAX_CHARTS);
  const range = `from=${encodeURIComponent(q.get("from"))}&to=${encodeURIComponent(q.get("to"))}`;
  const got = await Promise.all(shown.map(async (id) => {
    const lot = encodeURIComponent(id);
    const [forecast, accuracy, pattern] = await Promise.all([
      getJSON(`${API}/lots/${lot}/forecast?hours=24`),
      getJSON(`${API}/lots/${lot}/forecast/accuracy?days=28`),
      getJSON(`${API}/reports/pattern?lot=${lot}&${range}`),
    ]);
    return { id, name: names[id] || id, forecast, accuracy, pattern };
  }));
  if (mine !== generation) return;
  while (charts.length) charts.pop().destroy();
  const list = $("forecast-charts");
  list.replaceChildren(...got.map((g) => {
    const box = el("div", { class: "forecast-lot", "data-lot": g.id });
    drawForecast(box, g.name, g.forecast, g.pattern);
    return box;
  }));
  $("forecast-more").textContent = chosen.length > shown.length ? `The first ${MAX_CHARTS} of ${chosen.length} chosen car parks are shown.` : "";
  drawAccuracy(got);
  $("forecast-section").dataset.drawn = query;
}

function watch() {
  const results = $("results");
  const run = () => {
    const query = results.dataset.query;
    if (query && query !== $("forecast-section").dataset.drawn) {
      redraw(query).catch((err) => { $("forecast-more").textContent = `Could not load the forecasts: ${err.message}`; });
    }
  };
  new MutationObserver(run).observe(results, { attributes: true, attributeFilter: ["data-query"] });
  run();
}

watch();
