/* The detail panel of the selected lot: the forecast for the arrival time (when one is chosen),
   its summary, the chart of its next hours and the grid of its bays. */
import { el } from "../common.js";
import { state } from "./data.js";
import { arrivalLine, nextHours } from "./outlook.js";
import { BAY_WORD, clock, put, summary } from "./pieces.js";

const $ = (id) => document.getElementById(id);

export function renderDetail() {
  const id = state.selected;
  const f = id && state.lots.get(id);
  if (!f || $("detail").hidden) return;
  $("detail-name").textContent = String(f.properties.name);
  const ahead = arrivalLine(id, f.properties);
  put($("detail-body"), ...(ahead ? [ahead] : []), summary(id, f), nextHours(id, String(f.properties.name)));
  const box = $("bays");
  if (!state.bays || state.bays.id !== id) return put(box, el("p", "hint", "Loading bays…"));
  if (state.bays.error) return put(box, el("p", "hint", "Bays could not be loaded: " + state.bays.error));
  const bays = state.bays.bays.slice().sort((a, b) => String(a.id).localeCompare(String(b.id), undefined, { numeric: true }));
  const count = { free: 0, occupied: 0, unknown: 0 };
  const grid = el("ul", "bay-grid");
  grid.setAttribute("aria-label", "Bays of " + f.properties.name);
  for (const bay of bays) {
    const st = BAY_WORD[bay.status] ? bay.status : "unknown";
    count[st]++;
    let title = bay.id + ": " + BAY_WORD[st];
    if (bay.since && st !== "unknown") title += " since " + clock(Date.parse(bay.since));
    if (bay.battery != null) title += ", battery " + bay.battery + " %";
    const cell = el("li", "bay b-" + st, el("span", "sr", title));
    cell.title = title;
    cell.dataset.bay = String(bay.id);
    cell.dataset.status = st;
    grid.append(cell);
  }
  const legend = el("p", "legend");
  for (const st of ["free", "occupied", "unknown"]) {
    legend.append(el("span", "key", el("span", "bay b-" + st), " " + count[st] + " " + BAY_WORD[st]));
  }
  put(box, legend, bays.length ? grid : el("p", "hint", "No bays are provisioned for this car park."));
}
