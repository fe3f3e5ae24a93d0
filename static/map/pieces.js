/* The pieces of the map page that marker, popup, list and detail panel share: the words and
   symbols of each status, "updated N min ago", the lot's badge (live or forecast), the words of
   a forecast and the lot's summary. Every string from the data goes into the page through text
   nodes and every link through `link`, because lot files are imported from outside. */
import { el, link, safeHref } from "../common.js";
import { curve, forecastStatus, latLon, lotStale, now, pr, state } from "./data.js";

export const STATUS = {
  spacesAvailable: { word: "Spaces available", sym: "✓", cls: "st-ok" },
  almostFull: { word: "Almost full", sym: "!", cls: "st-almost" },
  full: { word: "Full", sym: "✕", cls: "st-full" },
  closed: { word: "Closed", sym: "–", cls: "st-closed" },
  unknown: { word: "No current data", sym: "?", cls: "st-unknown" },
};
export const BAY_WORD = { free: "free", occupied: "occupied", unknown: "not reporting" };

export function ago(iso) {
  const t = Date.parse(iso);
  if (!iso || isNaN(t)) return "no readings yet";
  const min = Math.floor(Math.max(0, now() - t) / 60000);
  if (min < 1) return "updated just now";
  if (min < 60) return "updated " + min + " min ago";
  if (min < 48 * 60) return "updated " + Math.floor(min / 60) + " h ago";
  return "updated " + new Date(t).toLocaleDateString();
}

/** A time of day, with the date when it is not today. */
export function clock(t) {
  const d = new Date(t);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toDateString() === new Date(now()).toDateString() ? time : d.toLocaleDateString() + " " + time;
}

/** An arrival time as a driver says it: "17:30", "tomorrow 17:30". */
export function when(t) {
  const d = new Date(t);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const today = new Date(now());
  if (d.toDateString() === today.toDateString()) return time;
  today.setDate(today.getDate() + 1);
  return (d.toDateString() === today.toDateString() ? "tomorrow " : d.toLocaleDateString() + " ") + time;
}

/** The badge the lots have now: live, or the forecast for the arrival time. */
export const lotBadge = (p) => (state.forecastAt == null ? badge(p) : forecastBadge(p));

/** A forecast's badge: "≈" and the expected free spaces, drawn apart from a live count (a
    tint and a dashed edge instead of a solid fill); "?" without a forecast. */
export function forecastBadge(p) {
  const s = STATUS[forecastStatus(p)];
  const b = el("span", "badge fc " + s.cls, el("span", "sym", "≈"), el("span", "num", p.forecast ? String(p.forecast.expected_free) : "?"));
  b.firstChild.setAttribute("aria-hidden", "true");
  if (!p.forecast) b.lastChild.setAttribute("aria-hidden", "true");
  return b;
}

/** "about 40 free, 25–55" for a forecast (the 80 % range after the comma). */
export function forecastWords(f) {
  const range = f.free_low === f.free_high ? "" : ", " + f.free_low + "–" + f.free_high;
  return "about " + f.expected_free + " free" + range;
}

/** Why lot `id` has no forecast, as the API says it (fetched on first use), else a plain "none". */
export function noForecast(id) {
  const c = curve(id);
  const why = c && c.body && !(c.body.rows || []).length && String(c.body.reason || "");
  if (!why) return "No forecast for this time";
  return /^no forecast/i.test(why) ? why[0].toUpperCase() + why.slice(1) : "No forecast: " + why;
}

/** The lot's badge, the same on map and list: symbol and free count, or "closed" or "?".
    Only the count is read out; the words next to it say the rest. */
export function badge(p) {
  const s = STATUS[p.status] || STATUS.unknown;
  const b = el("span", "badge " + s.cls + (lotStale(p) ? " stale" : ""));
  const shut = p.status === "closed" || p.status === "unknown";
  const num = el("span", "num", p.status === "closed" ? "closed" : shut ? "?" : String(p.free));
  if (!shut) b.append(el("span", "sym", s.sym));
  b.append(num);
  (shut ? num : b.firstChild).setAttribute("aria-hidden", "true");
  return b;
}

/** Name-less summary of a lot: numbers, status, freshness, P+R, links (popup and panel).
    `brief`: the numbers and the status only (a popup beside the panel that has the rest). */
export function summary(id, f, brief) {
  const p = f.properties;
  const s = STATUS[p.status] || STATUS.unknown;
  const box = el("div", "lot-summary" + (lotStale(p) ? " stale" : ""));
  box.dataset.lotId = id;
  const free = el("strong", "free", String(p.free));
  free.dataset.field = "free";
  const total = el("span", null, String(p.total));
  total.dataset.field = "total";
  // Beside a forecast, the live numbers say they are the present ones.
  box.append(el("p", "big", state.forecastAt == null ? null : "Now: ", free, " free of ", total));
  const st = el("p", "status " + s.cls, el("span", "sym", s.sym), " ", s.word);
  st.dataset.field = "status";
  st.firstChild.setAttribute("aria-hidden", "true");
  box.append(st);
  if (p.unknown > 0) {
    const u = el("span", null, String(p.unknown));
    u.dataset.field = "unknown";
    box.append(el("p", "warn", u, p.unknown === 1 ? " sensor not reporting" : " sensors not reporting"));
  }
  if (brief) return box;
  const when = el("time", null, ago(p.updated_at));
  if (p.updated_at) {
    when.dateTime = p.updated_at;
    when.title = new Date(Date.parse(p.updated_at)).toLocaleString();
  }
  box.append(el("p", "when", when, lotStale(p) ? el("span", "tag", "old data") : null));
  if (p.address) box.append(el("p", "addr", p.address));
  if (p.opening_hours) box.append(el("p", "hours", "Open: " + p.opening_hours));
  const ride = pr(p);
  if (ride) box.append(rideBlock(ride));
  const links = el("p", "links");
  const ll = latLon(f);
  links.append(link("https://www.openstreetmap.org/directions?to=" + ll.lat.toFixed(5) + "%2C" + ll.lon.toFixed(5), "Directions"));
  if (safeHref(p.url)) links.append(" · ", link(p.url, "Car park website"));
  box.append(links);
  return box;
}

function rideBlock(ride) {
  const box = el("div", "ride");
  const head = el("p", "ride-head", el("span", "pr-tag", "P+R"), " Park and ride");
  if (Number.isFinite(ride.minutes_to_centre)) head.append(" · " + ride.minutes_to_centre + " min to the centre");
  box.append(head);
  const stops = el("ul", "stops");
  for (const stop of Array.isArray(ride.stops) ? ride.stops : []) {
    const li = el("li", null, link(stop.url, String(stop.name)));
    const lines = Array.isArray(stop.lines) ? stop.lines.map(String) : [];
    if (lines.length) li.append(" – line" + (lines.length > 1 ? "s " : " ") + lines.join(", "));
    stops.append(li);
  }
  if (stops.children.length) box.append(stops);
  if (safeHref(ride.url)) box.append(el("p", null, link(ride.url, "Park and ride information")));
  return box;
}

/** Replace a container's children only when they changed: replacing them drops keyboard focus. */
export function put(box, ...kids) {
  const old = box.childNodes;
  if (kids.length !== old.length || kids.some((k, i) => !k.isEqualNode(old[i]))) box.replaceChildren(...kids);
}
