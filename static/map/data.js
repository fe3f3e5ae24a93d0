/* The map's data: its settings, the lots as last received, the regular refresh from the JSON API
   (contract §4) and the filters and order of the list. With an arrival time chosen (the
   "arriving" control) the refresh asks for the lots as forecast for that time instead
   (`?at=`, contract §6), and a lot's next 24 h are fetched when a popup or panel shows them. No
   drawing here: the page subscribes with `onData` and draws what changed. */
import { getJSON as fetchJSON } from "../common.js";

const body = document.body;
export const cfg = {
  api: body.dataset.api || "/api/lots",
  tileUrl: body.dataset.tileUrl || "",
  tileAttribution: body.dataset.tileAttribution || "",
  refreshMs: Math.max(5, Number(body.dataset.refreshSeconds) || 30) * 1000,
  staleMs: Math.max(60, Number(body.dataset.staleSeconds) || 600) * 1000,
  outlineUrl: body.dataset.outlineUrl || "",
};

export const state = {
  lots: new Map(),      // id -> GeoJSON feature, as last received
  loadedAt: 0,          // client time of the last successful fetch
  triedAt: 0,
  error: null,          // why the last fetch failed, or null
  skew: 0,              // server clock minus client clock (ms), from the Date header
  here: null,           // {lat, lon} once the driver shared a location
  byDistance: false,
  selected: null,       // id of the lot in the popup or the detail panel
  bays: null,           // {id, bays} of the selected lot
  timer: 0,
  busy: false,
  fitted: false,
  arrive: null,         // the arrival chosen: null (now), {minutes} from now, or {at} (server ms)
  again: false,         // the choice changed while a refresh was on its way: fetch once more
  forecastAt: null,     // the instant the lots in `lots` are forecast for; null: live counts
  passed: null,         // a chosen arrival time that has passed (the page went back to live)
  curves: new Map(),    // id -> {t, body} or {t, error}: the lot's forecast (GET …/forecast)
};

// The curves are made every PARKING_FORECAST_INTERVAL (120 s by default): asking more often
// would fetch the same one again.
const CURVE_MS = 120000;
// The API takes an arrival up to 24 h ahead of its own clock: keep a minute clear of that.
export const AHEAD_MS = 24 * 3600 * 1000 - 60000;
const curvesLoading = new Set();
const listeners = { lots: [], bays: [], curve: [] };

/** Call `fn` after every refresh of the lots ("lots"), of the selected lot's bays ("bays") or
    when a lot's forecast arrived ("curve", with the lot's id). */
export function onData(kind, fn) {
  listeners[kind].push(fn);
}

/** The server's time now, whatever the phone's clock says. */
export const now = () => Date.now() + state.skew;

async function getJSON(url) {
  const ctl = new AbortController();
  const timeout = setTimeout(() => ctl.abort(), 10000);
  // "N min ago" must not depend on the phone's clock being right.
  const onResponse = (res) => {
    const date = Date.parse(res.headers.get("Date"));
    if (!isNaN(date)) state.skew = date - Date.now();
  };
  try {
    return await fetchJSON(url, { signal: ctl.signal, cache: "no-store", onResponse });
  } catch (e) {
    if (e.status) throw new Error("it answered " + e.status);
    const why = { AbortError: "no answer within 10 s", TypeError: "no connection", SyntaxError: "an unreadable answer" };
    throw new Error(why[e.name] || e.message);
  } finally {
    clearTimeout(timeout);
  }
}

/** The instant (server clock, ms) the driver means to arrive, or null for now. */
export function arrivalAt() {
  const a = state.arrive;
  if (!a) return null;
  return a.minutes != null ? now() + a.minutes * 60000 : a.at;
}

/** Show the lots as forecast for `choice` ({minutes} or {at}), or live (null); fetched at once. */
export function setArrival(choice) {
  state.arrive = choice;
  state.passed = null;
  if (state.busy) state.again = true;
  else refresh();
}

export async function refresh() {
  if (state.busy) return;
  state.busy = true;
  state.again = false;
  clearTimeout(state.timer);
  state.triedAt = Date.now();
  let at = arrivalAt();
  if (at != null && at < now() - 60000) { // a chosen time of day that has come: live again
    state.passed = at;
    state.arrive = null;
    at = null;
  }
  if (at != null) at = Math.round(at / 1000) * 1000;
  try {
    const fc = await getJSON(cfg.api + (at == null ? "" : "?at=" + encodeURIComponent(new Date(at).toISOString())));
    state.lots = new Map((fc.features || []).filter(latLon).map((f) => [String(f.id), f]));
    state.forecastAt = at;
    state.loadedAt = Date.now();
    state.error = null;
  } catch (e) {
    state.error = e.message;
  }
  state.busy = false;
  if (state.again) return refresh(); // what came is for a choice the driver has left
  for (const fn of listeners.lots) fn();
  schedule();
}

export function schedule(delay) {
  clearTimeout(state.timer);
  if (!document.hidden) state.timer = setTimeout(refresh, delay == null ? cfg.refreshMs : delay);
}

// A hidden tab does not poll; coming back it refreshes at once if the data is due.
document.addEventListener("visibilitychange", () => {
  if (document.hidden) clearTimeout(state.timer);
  else schedule(Math.max(0, cfg.refreshMs - (Date.now() - state.triedAt)));
});
window.addEventListener("online", () => refresh());

export async function loadBays(id) {
  try {
    const f = await getJSON(cfg.api + "/" + encodeURIComponent(id));
    if (state.selected !== id) return;
    state.bays = { id, bays: (f.properties && f.properties.bays) || [] };
    // The lot alone comes without a forecast: it keeps the one of the list it belongs to.
    const old = state.lots.get(id);
    if (old && "forecast" in old.properties && f.properties) f.properties.forecast = old.properties.forecast;
    state.lots.set(id, f);
  } catch (e) {
    if (state.selected !== id) return;
    state.bays = { id, error: e.message };
  }
  for (const fn of listeners.bays) fn();
}

/** The lot's stored forecast as last fetched ({t, body} or {t, error}), or null before the
    first answer; fetched (again) when missing or older than a forecast run. */
export function curve(id) {
  const c = state.curves.get(id);
  if ((!c || Date.now() - c.t > CURVE_MS) && !curvesLoading.has(id)) loadCurve(id);
  return c || null;
}

async function loadCurve(id) {
  curvesLoading.add(id);
  let entry;
  try {
    entry = { t: Date.now(), body: await getJSON(cfg.api + "/" + encodeURIComponent(id) + "/forecast?hours=24") };
  } catch (e) {
    entry = { t: Date.now(), error: e.message };
  }
  curvesLoading.delete(id);
  state.curves.set(id, entry);
  for (const fn of listeners.curve) fn(id);
}

// ---- what a lot is ---------------------------------------------------------------------------

export function latLon(f) {
  const c = f.geometry && f.geometry.coordinates;
  return c ? { lat: c[1], lon: c[0] } : null;
}

/** The lot's park-and-ride block, when it has one. */
export function pr(p) {
  return p.park_and_ride && typeof p.park_and_ride === "object" ? p.park_and_ride : null;
}

export function lotStale(p) {
  const t = Date.parse(p.updated_at);
  return !isNaN(t) && now() - t > cfg.staleMs;
}

/** Spaces a driver can use now: none in a closed lot or one with no current data. */
export function usable(p) {
  return p.status === "closed" || p.status === "unknown" ? 0 : p.free || 0;
}

/** The free spaces the map shows: those expected at the arrival time when the lots are a
    forecast (none for a lot without one), else those a driver can use now. */
export function shownFree(p) {
  if (state.forecastAt == null) return usable(p);
  return p.forecast ? p.forecast.expected_free : 0;
}

/** A forecast's status, worded as the live ones (parking/current.py: full at 0 free, almost
    full from 90 % occupied); "unknown" without a forecast. */
export function forecastStatus(p) {
  const f = p.forecast;
  if (!f) return "unknown";
  if (f.expected_free <= 0) return "full";
  return p.total && (p.total - f.expected_free) / p.total >= 0.9 ? "almostFull" : "spacesAvailable";
}

// ---- filters and order -----------------------------------------------------------------------

function fold(s) {
  return String(s).normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
}

function distanceKm(a, b) {
  const r = Math.PI / 180;
  const x = (b.lon - a.lon) * r * Math.cos(((a.lat + b.lat) / 2) * r);
  const y = (b.lat - a.lat) * r;
  return 6371 * Math.hypot(x, y);
}

/** The lots the filters let through ({name, onlyPr, min}), in the list's order. */
export function visibleLots({ name, onlyPr, min }) {
  const q = fold(name.trim());
  const list = [...state.lots.values()].filter((f) => {
    const p = f.properties;
    return (!q || fold(p.name).includes(q)) && (!onlyPr || pr(p)) && shownFree(p) >= min;
  });
  if (state.byDistance && state.here) {
    for (const f of list) f._km = distanceKm(state.here, latLon(f));
    list.sort((a, b) => a._km - b._km);
  } else {
    const forecast = state.forecastAt != null;
    const open = (p) => (forecast ? (p.forecast ? 2 : 0) : p.status === "closed" ? 0 : p.status === "unknown" ? 1 : 2);
    list.sort((a, b) => shownFree(b.properties) - shownFree(a.properties) || open(b.properties) - open(a.properties) ||
      String(a.properties.name).localeCompare(b.properties.name));
  }
  return list;
}
