/* The list of car parks beside the map (the main view on a phone): one button per lot that the
   filters let through, kept across refreshes so that keyboard focus stays put. Each says the
   live count, or the forecast for the arrival time with its range and the live count beside. */
import { el } from "../common.js";
import { lotStale, pr, state } from "./data.js";
import { STATUS, ago, forecastWords, lotBadge, noForecast, when } from "./pieces.js";

export const items = new Map(); // id -> <li>

function listItem(id, f, pick) {
  let li = items.get(id);
  if (!li) {
    li = el("li");
    const btn = el("button", "lot-item");
    btn.type = "button";
    btn.dataset.lotId = id;
    btn.addEventListener("click", () => pick(id));
    li.append(btn);
    items.set(id, li);
  }
  const p = f.properties;
  const s = STATUS[p.status] || STATUS.unknown;
  const btn = li.firstChild;
  const ahead = state.forecastAt != null;
  btn.className = "lot-item" + (ahead ? " forecast" : lotStale(p) ? " stale" : "") + (id === state.selected ? " selected" : "");
  const live = p.status === "unknown" || p.status === "closed"
    ? s.word + " · " + p.total + " spaces"
    : "free of " + p.total + " · " + s.word;
  let meta = live;
  let extra = el("span", "li-extra", ago(p.updated_at));
  if (lotStale(p)) extra.append(" ", el("span", "tag", "old data"));
  if (p.unknown > 0) extra.append(" · " + p.unknown + " not reporting");
  if (ahead) {
    meta = p.forecast ? forecastWords(p.forecast) + " · at " + when(state.forecastAt) : noForecast(id);
    extra = el("span", "li-extra", "Now: " + (p.status === "unknown" || p.status === "closed" ? s.word : p.free + " free of " + p.total) + " · " + ago(p.updated_at));
  }
  const kids = [el("span", "li-name", String(p.name)), lotBadge(p), el("span", "li-meta", meta), extra];
  const ride = pr(p);
  if (ride) {
    const t = el("span", "li-pr", el("span", "pr-tag", "P+R"));
    if (Number.isFinite(ride.minutes_to_centre)) t.append(" " + ride.minutes_to_centre + " min to the centre");
    kids.push(t);
  }
  if (state.byDistance && f._km != null) kids.push(el("span", "li-dist", f._km < 1 ? Math.round(f._km * 1000) + " m away" : f._km.toFixed(1) + " km away"));
  btn.replaceChildren(...kids);
  return li;
}

/** The list of the lots `shown`, in their order; `pick(id)` is what a click on one does. */
export function renderList(shown, pick) {
  const ul = document.getElementById("lot-list");
  for (const id of items.keys()) if (!state.lots.has(id)) items.delete(id);
  const want = shown.map((f) => listItem(String(f.id), f, pick));
  const same = want.length === ul.children.length && want.every((li, i) => ul.children[i] === li);
  if (!same) {
    const focused = document.activeElement;
    ul.replaceChildren(...want);
    if (focused && focused.classList.contains("lot-item") && focused.isConnected) focused.focus();
  }
  ul.setAttribute("aria-label", "Car parks, " + order());
  let text;
  if (!state.lots.size) text = state.error ? "Car parks could not be loaded." : "Loading car parks…";
  else if (!shown.length) text = "No car park matches the filters.";
  else text = (shown.length === state.lots.size ? shown.length : shown.length + " of " + state.lots.size) + " car parks, " + order();
  const summary = document.getElementById("list-summary");
  if (summary.textContent !== text) summary.textContent = text;
}

function order() {
  if (state.byDistance) return "nearest first";
  return state.forecastAt == null ? "most free spaces first" : "most free spaces at " + when(state.forecastAt) + " first";
}
