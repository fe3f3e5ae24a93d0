/* The planners' page: pick car parks and dates, then draw the weekday × hour heatmap, the daily
   mean/peak chart and the summary table from the reports API. Every figure is the API's; this file
   only formats it (no arithmetic of its own, so the page cannot drift from the CSV and XLSX).
   An ES module; `el` and `getJSON` are shared with the map (common.js). */
import { el, getJSON } from "./common.js";

(function () {
  "use strict";

  const API = document.body.dataset.api;
  // An hour is busy above this occupancy %: the server's figure (parking.reports.BUSY_PCT).
  const THRESHOLD = Number(document.body.dataset.busyPct);
  const DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
  const LOW_COVERAGE = 90;
  // [key, header, decimals or "hour"]: as many decimals as the API gives, so cell and JSON agree.
  const SUMMARY_COLUMNS = [
    ["bays", "Bays", 0],
    ["mean_occupancy_pct", "Mean occupancy %", 1],
    ["peak_hour", "Peak hour", "hour"],
    ["peak_hour_occupancy_pct", "Peak-hour occupancy %", 1],
    ["busy_hours", `Hours above ${THRESHOLD} %`, 0],
    ["arrivals", "Arrivals", 0],
    ["completed_stays", "Stays measured", 0],
    ["mean_dwell_minutes", "Mean dwell (min)", 1],
    ["median_dwell_minutes", "Median dwell (min)", 1],
    ["turnover_per_bay_per_day", "Turnover per bay per day", 2],
    ["coverage_pct", "Coverage %", 1],
  ];

  const $ = (id) => document.getElementById(id);
  let lots = [];
  let chart = null;
  let generation = 0; // only the newest request may draw

  function say(message, isError) {
    $("status").textContent = message;
    $("status").classList.toggle("error", Boolean(isError));
  }

  /* Dates are ISO strings (YYYY-MM-DD) throughout; day arithmetic runs in UTC, where days have no DST. */
  function addDays(iso, n) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  function today(timeZone) {
    const opts = { year: "numeric", month: "2-digit", day: "2-digit" };
    let fmt;
    try { fmt = new Intl.DateTimeFormat("en", { ...opts, timeZone }); } catch (e) { fmt = new Intl.DateTimeFormat("en", opts); }
    const parts = {};
    for (const p of fmt.formatToParts(new Date())) parts[p.type] = p.value;
    return `${parts.year}-${parts.month}-${parts.day}`;
  }

  function longDate(iso, withYear) {
    const opts = { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" };
    if (withYear) opts.year = "numeric";
    return new Date(iso + "T00:00:00Z").toLocaleDateString("en-GB", opts);
  }

  function shortDate(iso) {
    return new Date(iso + "T00:00:00Z").toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  }

  function num(value, decimals) {
    if (value === null || value === undefined) return null;
    return Number(value).toLocaleString("en-GB", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  }

  function peakHour(value) {
    if (value === null || value === undefined) return null;
    const text = String(value);
    // An ISO hour carries the lot's local time: show its own wall-clock, not the browser's.
    if (/^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(text)) return `${longDate(text.slice(0, 10), false)}, ${text.slice(11, 16)}`;
    return text;
  }

  /* The query: lot ids ([] means every lot), from (inclusive) and to (exclusive) as the API takes them. */
  function params(q) {
    const p = new URLSearchParams();
    for (const id of q.lots) p.append("lot", id);
    p.set("from", q.from);
    p.set("to", q.to);
    return p.toString();
  }

  function boxes() {
    return Array.from($("lot-boxes").querySelectorAll("input[type=checkbox]"));
  }

  function syncAll() {
    const checked = boxes().filter((b) => b.checked).length;
    $("lot-all").checked = checked === boxes().length;
    $("lot-all").indeterminate = checked > 0 && checked < boxes().length;
  }

  function drawLots() {
    const list = el("ul", { class: "lot-list" });
    for (const lot of lots) {
      const p = lot.properties || {};
      const box = el("input", { type: "checkbox", value: lot.id, id: `lot-${lot.id}` });
      box.checked = true;
      const meta = el("span", { class: "meta", text: `${lot.id} · ${p.total ?? "?"} bays` });
      const tag = p.park_and_ride ? el("span", { class: "pr-tag", text: "P+R" }) : null;
      const name = el("span", { class: "name", text: p.name || lot.id });
      // Name, tag and id in one block beside the box: a long name wraps inside it, never below the box.
      const text = el("span", { class: "lot-text" }, name, tag ? " " : null, tag, " ", meta);
      list.append(el("li", {}, el("label", { class: "check", for: box.id }, box, text)));
    }
    $("lot-boxes").replaceChildren(lots.length ? list : el("p", { class: "hint", text: "No car parks have been imported yet." }));
    list.addEventListener("change", syncAll);
  }

  function readForm() {
    const chosen = boxes().filter((b) => b.checked).map((b) => b.value);
    const from = $("from").value;
    const last = $("last").value;
    if (!chosen.length) throw new Error("Choose at least one car park.");
    if (!from || !last) throw new Error("Enter a first and a last day.");
    if (from > last) throw new Error("The first day must not be after the last day.");
    return { lots: chosen.length === boxes().length ? [] : chosen, from, to: addDays(last, 1) };
  }

  function fillForm(q) {
    const wanted = new Set(q.lots);
    for (const b of boxes()) b.checked = !wanted.size || wanted.has(b.value);
    syncAll();
    $("from").value = q.from;
    $("last").value = addDays(q.to, -1);
  }

  function defaultQuery() {
    const tz = lots.length && lots[0].properties ? lots[0].properties.timezone : undefined;
    const to = today(tz); // the last 28 full days end at today's local midnight
    return { lots: [], from: addDays(to, -28), to };
  }

  function queryFromURL() {
    const p = new URLSearchParams(location.search);
    const known = new Set(lots.map((l) => String(l.id)));
    const q = defaultQuery();
    const chosen = [...new Set(p.getAll("lot"))].filter((id) => known.has(id));
    if (chosen.length < lots.length) q.lots = chosen; // every lot chosen means all lots
    const iso = /^\d{4}-\d\d-\d\d$/;
    if (iso.test(p.get("from") || "") && iso.test(p.get("to") || "") && p.get("from") < p.get("to")) {
      q.from = p.get("from");
      q.to = p.get("to");
    }
    return q;
  }

  function setDownloads(q) {
    for (const ext of ["csv", "xlsx"]) {
      const a = $(ext);
      if (q) {
        a.href = `${API}/reports/utilization.${ext}?${params(q)}`;
        a.removeAttribute("aria-disabled");
      } else {
        a.setAttribute("aria-disabled", "true");
      }
    }
  }

  function heatColour(pct) {
    // A light-to-dark blue ramp: darker is fuller; readable in greyscale and for colour-blind eyes.
    const t = Math.max(0, Math.min(1, pct / 100));
    const light = [239, 246, 255];
    const dark = [8, 48, 107];
    const c = light.map((v, i) => Math.round(v + (dark[i] - v) * t));
    return `rgb(${c.join(",")})`;
  }

  function drawHeatmap(grid) {
    const table = $("heatmap");
    const caption = table.querySelector("caption");
    const head = el("tr", {}, el("th", { scope: "col", text: "Day" }));
    for (let h = 0; h < 24; h++) {
      head.append(el("th", { scope: "col", title: `${h}:00–${h + 1}:00` }, el("span", { text: String(h).padStart(2, "0") })));
    }
    const body = el("tbody");
    grid.forEach((row, d) => {
      const tr = el("tr", {}, el("th", { scope: "row" }, el("abbr", { title: DAYS[d], text: DAYS[d].slice(0, 3) })));
      row.forEach((pct, h) => {
        const td = el("td");
        if (pct === null || pct === undefined) {
          td.className = "nodata";
          td.append(el("span", { class: "sr", text: "no data" }));
          td.title = `${DAYS[d]} ${h}:00: no data`;
        } else {
          td.textContent = num(pct, 1);
          td.dataset.value = pct;
          td.title = `${DAYS[d]} ${h}:00–${h + 1}:00: ${num(pct, 1)} %`;
          td.style.background = heatColour(pct);
          if (pct > 55) td.classList.add("dark");
          if (pct > THRESHOLD) td.classList.add("hot");
        }
        tr.append(td);
      });
      body.append(tr);
    });
    table.replaceChildren(caption, el("thead", {}, head), body);
  }

  function drawChart(daily) {
    const labels = daily.map((d) => d.date);
    const series = (key) => daily.map((d) => (d[key] === undefined ? null : d[key]));
    const point = labels.length > 60 ? 1.5 : 3;
    // Days with less than half their bay-hours known are drawn hollow and dashed: a figure, but a thin one.
    const thin = daily.map((d) => d.coverage_pct === null || d.coverage_pct < 50);
    const segment = { borderDash: (ctx) => (thin[ctx.p0DataIndex] || thin[ctx.p1DataIndex] ? [4, 4] : undefined) };
    const line = (label, values, colour, borderWidth) => ({
      label, data: values, borderColor: colour, backgroundColor: colour, borderWidth,
      pointBackgroundColor: thin.map((t) => (t ? "#fff" : colour)), pointRadius: point, segment,
    });
    const data = {
      labels,
      datasets: [
        line("Peak hour", series("peak_pct"), "#b3261e", 2),
        line("Daily mean", series("mean_pct"), "#0b3d5c", 2.5),
        { label: `${THRESHOLD} % line`, data: labels.map(() => THRESHOLD), borderColor: "#9a6700", borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0, pointHoverRadius: 0 },
        { label: "Data coverage", data: series("coverage_pct"), fill: "origin", borderWidth: 0, pointRadius: 0, pointHoverRadius: 0,
          backgroundColor: "rgba(140,149,159,.18)", borderColor: "rgba(140,149,159,.18)" },
      ],
    };
    const options = {
      responsive: true, maintainAspectRatio: false, animation: false, spanGaps: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        y: { min: 0, max: 100, title: { display: true, text: "Occupancy %" }, ticks: { stepSize: 20 } },
        x: { ticks: { autoSkip: true, maxRotation: 0, callback(v) { return shortDate(this.getLabelForValue(v)); } } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          filter: (item) => item.datasetIndex !== 2, // the busy line says the same every day
          callbacks: {
            title: (items) => longDate(items[0].label, true),
            label: (ctx) => `${ctx.dataset.label}: ${ctx.parsed.y === null ? "no data" : num(ctx.parsed.y, 1) + " %"}`,
          },
        },
      },
    };
    if (typeof Chart === "undefined") return; // the table below still carries the figures
    if (chart) chart.destroy();
    chart = new Chart($("daily"), { type: "line", data, options });
  }

  function cell(value, decimals) {
    const text = decimals === "hour" ? peakHour(value) : num(value, decimals);
    if (text === null) {
      return el("td", { class: "nodata" }, el("span", { "aria-hidden": "true", text: "—" }), el("span", { class: "sr", text: "no data" }));
    }
    const td = el("td", { text });
    td.dataset.value = value; // the API's own number, unrounded
    return td;
  }

  function drawTable(table, headers, rows) {
    const head = el("tr", {}, ...headers.map((h) => el("th", { scope: "col", text: h })));
    const body = el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells)));
    table.replaceChildren(el("thead", {}, head), body);
  }

  function drawDailyTable(daily) {
    drawTable($("daily-table"), ["Date", "Mean %", "Peak %", "Coverage %"], daily.map((d) => [
      el("th", { scope: "row", text: longDate(d.date, true) }),
      cell(d.mean_pct, 1), cell(d.peak_pct, 1), cell(d.coverage_pct, 1),
    ]));
  }

  function drawSummary(summary) {
    const rows = summary.lots.map((row) => {
      const name = el("th", { scope: "row" }, el("span", { text: row.name || row.lot }), el("span", { class: "meta block", text: row.lot }));
      return [name, ...SUMMARY_COLUMNS.map(([key, header, d]) => {
        const td = cell(row[key], d);
        td.dataset.key = key;
        td.dataset.label = header; // a phone shows each row as a card of "label: value" lines
        return td;
      })];
    });
    drawTable($("summary"), ["Car park", ...SUMMARY_COLUMNS.map((c) => c[1])], rows);
  }

  function drawNote(q, summary) {
    const label = (r) => r.name || r.lot;
    const days = daysBetween(q.from, q.to);
    const parts = [`${q.lots.length ? summary.lots.map(label).join(", ") : "All car parks"} · ${longDate(q.from, true)} to ${longDate(addDays(q.to, -1), true)} (${days} ${days === 1 ? "day" : "days"})`];
    const tz = lots.length && lots[0].properties ? lots[0].properties.timezone : undefined;
    // No bay-hour known at all (null, or 0.0: under 0.05 %): "no data", never "coverage (none)".
    const empty = summary.lots.filter((r) => !r.coverage_pct);
    const thin = summary.lots.filter((r) => r.coverage_pct && r.coverage_pct < LOW_COVERAGE);
    if (q.from > today(tz)) {
      parts.push("This range lies in the future: there are no readings for it yet.");
    } else if (empty.length === summary.lots.length) {
      parts.push("No data in this range: nothing to draw.");
    } else {
      if (thin.length) {
        parts.push(`Data coverage below ${LOW_COVERAGE} % for ${thin.map((r) => `${label(r)} (${num(r.coverage_pct, 1)} %)`).join(", ")}: read those figures with care.`);
      }
      if (empty.length) parts.push(`No data in this range for ${empty.map(label).join(", ")}.`);
    }
    $("range-note").replaceChildren(...parts.map((t, i) => el(i ? "strong" : "span", { class: i ? "warn" : "", text: t })));
  }

  function daysBetween(from, to) {
    return Math.round((Date.parse(to + "T00:00:00Z") - Date.parse(from + "T00:00:00Z")) / 86400000);
  }

  async function run(q) {
    const mine = ++generation;
    say("Loading…");
    $("show").disabled = true;
    $("results").setAttribute("aria-busy", "true");
    try {
      const query = params(q);
      const [pattern, summary] = await Promise.all([
        getJSON(`${API}/reports/pattern?${query}`),
        getJSON(`${API}/reports/summary?${query}`),
      ]);
      if (mine !== generation) return;
      $("results").hidden = false;
      drawNote(q, summary);
      drawHeatmap(pattern.heatmap);
      $("heat-tz").textContent = pattern.timezone ? ` (${pattern.timezone})` : "";
      drawChart(pattern.daily);
      drawDailyTable(pattern.daily);
      drawSummary(summary);
      $("results").dataset.query = query; // what is on screen (tests wait for it)
      setDownloads(q);
      say("");
    } catch (err) {
      if (mine !== generation) return;
      // Figures of an earlier choice must not pass for this one.
      $("results").hidden = true;
      setDownloads(null);
      say(`Could not load the figures: ${err.message}`, true);
    } finally {
      if (mine === generation) {
        $("show").disabled = false;
        $("results").removeAttribute("aria-busy");
      }
    }
  }

  function submit(event) {
    if (event) event.preventDefault();
    let q;
    try { q = readForm(); } catch (err) { say(err.message, true); return; }
    history.replaceState(null, "", `?${params(q)}`);
    run(q);
  }

  async function start() {
    $("lot-all").addEventListener("change", () => {
      for (const b of boxes()) b.checked = $("lot-all").checked;
      syncAll();
    });
    for (const button of document.querySelectorAll(".presets [data-days]")) {
      button.addEventListener("click", () => {
        const q = defaultQuery();
        $("from").value = addDays(q.to, -Number(button.dataset.days));
        $("last").value = addDays(q.to, -1);
        submit();
      });
    }
    for (const a of [$("csv"), $("xlsx")]) {
      a.addEventListener("click", (e) => { if (a.getAttribute("aria-disabled")) e.preventDefault(); });
    }
    $("query").addEventListener("submit", submit);
    try {
      lots = (await getJSON(`${API}/lots`)).features || [];
    } catch (err) {
      $("lot-boxes").replaceChildren();
      say(`Could not load the car parks: ${err.message}`, true);
      return;
    }
    drawLots();
    if (!lots.length) return;
    $("lots").disabled = false;
    $("dates").disabled = false;
    const q = queryFromURL();
    fillForm(q);
    run(q);
  }

  start();
})();
