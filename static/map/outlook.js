/* What a lot's popup and detail panel say of the time ahead: the forecast for the arrival time
   (when one is chosen) and the next hours as a chart with its band, from the lot's stored
   forecast (contract §6; fetched by data.js on first use), or why there is none. */
import { el } from "../common.js";
import { curve, now, state } from "./data.js";
import { chart, chartWords } from "./chart.js";
import { forecastWords, noForecast, when } from "./pieces.js";

const STEP = 900000; // the forecast's 15-minute steps
const HOURS = 6; // the chart's usual span; longer when the arrival is farther ahead

/** "Arriving 17:30: about 40 free, 25–55", or why there is none; null while the lots are live. */
export function arrivalLine(id, p) {
  if (state.forecastAt == null) return null;
  const line = el("p", "fc-line", "Arriving " + when(state.forecastAt) + ": ");
  line.dataset.field = "forecast";
  line.append(p.forecast ? el("strong", null, forecastWords(p.forecast)) : noForecast(id));
  return line;
}

/** The chart of the next hours of lot `id` (named `name`), or a line saying why there is none. */
export function nextHours(id, name) {
  const box = el("section", "outlook");
  box.dataset.lotId = id;
  const c = curve(id);
  const rows = (c && c.body && c.body.rows) || [];
  // The window moves in the forecast's steps, so that the same forecast draws the same chart.
  const start = Math.floor(now() / STEP) * STEP;
  const ahead = state.forecastAt == null ? 0 : state.forecastAt - start;
  const hours = Math.min(24, Math.max(HOURS, Math.ceil(ahead / 3600000) + 1));
  const end = start + hours * 3600000;
  const pts = rows.map((r) => ({ ...r, t: Date.parse(r.at) })).filter((r) => r.t >= start && r.t <= end);
  // Without a chart, one line: a popup that grows pans the map under the driver's pointer.
  if (!c) return fill(box, el("p", "hint", "Loading the forecast…"));
  if (c.error) return fill(box, el("p", "hint", "The forecast could not be loaded: " + c.error));
  if (!rows.length) return fill(box, el("p", "hint fc-none", noForecast(id)));
  if (pts.length < 2) return fill(box, el("p", "hint fc-none", "No forecast for the next hours"));
  const head = el("h3", "outlook-head", "Expected free, next " + hours + " h");
  const label = "Expected free spaces at " + name + " over the next " + hours + " hours: " + chartWords(pts);
  const key = el("p", "outlook-key", el("span", "key-line"), " expected ", el("span", "key-band"), " 8 in 10 times within");
  key.setAttribute("aria-hidden", "true"); // the chart's own label says the numbers
  return fill(box, head, chart(pts, c.body.capacity, { start, end, mark: state.forecastAt, label }), key);
}

function fill(box, ...kids) {
  box.append(...kids);
  return box;
}
