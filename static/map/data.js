/* The map's data: its settings, the lots as last received, the regular refresh from the JSON API
   (contract §4) and the filters and order of the list. No drawing here: the page subscribes with
   `onData` and draws what changed. */
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
};

const listeners = { lots: [], bays: [] };

/** Call `fn` after every refresh of the lots ("lots") or of the selected lot's bays ("bays"). */
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

export async function refresh() {
  if (state.busy) return;
  state.busy = true;
  clearTimeout(state.timer);
  state.triedAt = Date.now();
  try {
    const fc = await getJSON(cfg.api);
    state.lots = new Map((fc.features || []).filter(latLon).map((f) => [String(f.id), f]));
    state.loadedAt = Date.now();
    state.error = null;
  } catch (e) {
    state.error = e.message;
  }
  state.busy = false;
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
    state.lots.set(id, f);
  } catch (e) {
    if (state.selected !== id) return;
    state.bays = { id, error: e.message };
  }
  for (const fn of listeners.bays) fn();
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
    return (!q || fold(p.name).includes(q)) && (!onlyPr || pr(p)) && usable(p) >= min;
  });
  if (state.byDistance && state.here) {
    for (const f of list) f._km = distanceKm(state.here, latLon(f));
    list.sort((a, b) => a._km - b._km);
  } else {
    const open = (p) => (p.status === "closed" ? 0 : p.status === "unknown" ? 1 : 2);
    list.sort((a, b) => usable(b.properties) - usable(a.properties) || open(b.properties) - open(a.properties) ||
      String(a.properties.name).localeCompare(b.properties.name));
  }
  return list;
}
