/* The map itself: Leaflet with the optional tiles and the bundled city outline, one marker per
   lot (dot, leader line and label: the live count, or the forecast for the arrival time), and
   the placing of labels so that none covers another. */
import { el, safeHref } from "../common.js";
import { cfg, forecastStatus, latLon, lotStale, pr, shownFree, state } from "./data.js";
import { STATUS, badge, forecastBadge, lotBadge, when } from "./pieces.js";

// From this zoom on (a few streets across the screen) every label also names its lot; farther
// out the numbers alone keep the labels small, and a hovered or focused one shows its name.
const NAMES_ZOOM = 15;
// While the driver types in the search field, the labels are placed again only once typing
// pauses for this long: placing is quadratic in the lots shown (see `declutter`).
const DECLUTTER_PAUSE_MS = 250;

const narrow = window.matchMedia("(max-width: 600px)");
const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
export const map = L.map("map", { zoomSnap: 0.5, zoomAnimation: !still, fadeAnimation: !still, markerZoomAnimation: !still });
map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
map.createPane("outline").style.zIndex = 250; // above tiles, below markers and popups
map.createPane("labels").style.zIndex = 260;
export const markers = new Map(); // id -> {marker}
const lotLayer = L.layerGroup().addTo(map);
let hereMarker = null;
let outline = null;

/** Tile attribution is operator-set HTML: keep its text and its http(s) links, nothing else. */
function cleanAttribution(html) {
  const doc = new DOMParser().parseFromString(html, "text/html"); // inert: nothing runs or loads
  const esc = (s) => s.replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
  const walk = (node) => [...node.childNodes].map((n) => {
    if (n.nodeType === 3) return esc(n.textContent);
    if (n.nodeName === "A" && safeHref(n.getAttribute("href"))) return '<a href="' + esc(safeHref(n.getAttribute("href"))) + '">' + esc(n.textContent) + "</a>";
    return n.nodeType === 1 ? walk(n) : "";
  }).join("");
  return walk(doc.body);
}

function addTiles() {
  let url;
  try {
    url = new URL(cfg.tileUrl, location.href);
  } catch (e) {
    return;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return;
  const attribution = cleanAttribution(cfg.tileAttribution) || "Map tiles: " + url.host.replace(/[^\w.:-]/g, "");
  const tiles = L.tileLayer(cfg.tileUrl, { maxZoom: 19, attribution });
  let loaded = 0;
  let failed = 0;
  tiles.on("tileload", () => loaded++);
  // A broken tile is hidden: the bundled outline underneath keeps the map readable.
  tiles.on("tileerror", (e) => {
    e.tile.style.visibility = "hidden";
    if (++failed === 4 && !loaded) map.attributionControl.addAttribution("map tiles unavailable");
  });
  tiles.addTo(map);
  document.body.classList.add("has-tiles");
}

const OUTLINE_STYLE = {
  oldtown: { color: "#b59a6a", weight: 1.5, dashArray: "4 4", fillColor: "#f4ead5", fillOpacity: 0.9 },
  district: { color: "#c9c2b3", weight: 1, fillColor: "#ece8df", fillOpacity: 0.9 },
  island: { color: "#9bbf8f", weight: 1, fillColor: "#dcebd3", fillOpacity: 1 },
  park: { color: "#9bbf8f", weight: 0, fillColor: "#d3e8c9", fillOpacity: 1 },
  water: { color: "#a9cbe8", weight: 8, lineCap: "round", lineJoin: "round" },
  main: { color: "#ffffff", weight: 4, opacity: 1 },
  bridge: { color: "#8a8f98", weight: 4, opacity: 1 },
  rail: { color: "#8a8f98", weight: 2, dashArray: "6 5" },
};

/** Rivers at their real width in metres whatever the zoom; small places' names only close up. */
function styleOutline() {
  if (!outline) return;
  const zoom = map.getZoom();
  const mpp = (40075016.686 * Math.cos((map.getCenter().lat * Math.PI) / 180)) / Math.pow(2, zoom + 8);
  outline.eachLayer((l) => {
    const props = l.feature.properties;
    if (props.width_m) l.setStyle({ weight: Math.max(3, props.width_m / mpp) });
    if (props.minzoom && l.getElement()) l.getElement().hidden = zoom < props.minzoom;
  });
}

async function addOutline() {
  if (!cfg.outlineUrl) return;
  try {
    const res = await fetch(cfg.outlineUrl);
    if (!res.ok) return;
    const data = await res.json();
    outline = L.geoJSON(data, {
      pane: "outline",
      interactive: false,
      attribution: "City outline: approximate sample",
      style: (f) => OUTLINE_STYLE[f.properties.kind] || { color: "#999", weight: 1 },
      pointToLayer: (f, ll) => L.marker(ll, {
        pane: "labels", interactive: false, keyboard: false,
        icon: L.divIcon({ className: "place", html: el("span", null, String(f.properties.name || "")), iconSize: null }),
      }),
    }).addTo(map);
    map.on("zoomend", styleOutline);
    if (!state.fitted && !state.lots.size) map.fitBounds(outline.getBounds());
    styleOutline();
  } catch (e) {
    /* the outline is decoration: markers and list work without it */
  }
}

/** The map before any lot is known: a placeholder view, the tiles if set, the legend, the outline. */
export function startMap() {
  map.on("zoomend", () => {
    showZoom();
    declutter();
  });
  map.setView([0, 0], 2); // placeholder until the lots (or the outline) give the real extent
  if (cfg.tileUrl) addTiles();
  addLegend();
  showZoom();
  addOutline();
}

/** Say the zoom on the map element (class "names" from NAMES_ZOOM on; data-zoom for tests). */
function showZoom() {
  const box = map.getContainer();
  box.dataset.zoom = String(map.getZoom());
  box.dataset.namesZoom = String(NAMES_ZOOM);
  box.classList.toggle("names", map.getZoom() >= NAMES_ZOOM);
}

/** The legend: each marker symbol with what it means, drawn by the code that draws the markers. */
function addLegend() {
  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = () => {
    const list = el("ul", "legend-list");
    const sample = (status, free) => badge({ status, free, updated_at: null });
    list.append(el("li", null, sample("spacesAvailable", 12), " " + STATUS.spacesAvailable.word + " (the number: free spaces)"));
    for (const [status, free] of [["almostFull", 2], ["full", 0], ["closed", 0], ["unknown", 0]]) {
      list.append(el("li", null, sample(status, free), " " + STATUS[status].word));
    }
    const old = sample("spacesAvailable", 12);
    old.classList.add("stale");
    list.append(el("li", null, old, " old data (no reading for a while)"));
    list.append(el("li", null, el("span", "pr-tag", "P+R"), " Park and ride"));
    const ahead = forecastBadge({ forecast: { expected_free: 12 }, total: 40 });
    list.append(el("li", "legend-fc", ahead, " forecast: about 12 free when you arrive"));
    const details = el("details", "map-legend", el("summary", null, "Legend"), list);
    details.open = !narrow.matches;
    const box = el("section", "leaflet-bar legend-box", details);
    box.setAttribute("aria-label", "Legend");
    L.DomEvent.disableClickPropagation(box);
    L.DomEvent.disableScrollPropagation(box);
    return box;
  };
  legend.addTo(map);
}

// The kind of car park a name starts with: the marker says it with its own symbols instead.
const KIND = /^(parkhaus|tiefgarage|parkplatz|parkdeck|parkgarage|garage|car park|parking|p\s*\+\s*r)\s+/i;

/** What a map label calls a lot: its name without the kind ("Parkhaus", "P+R" …) and without
    what follows " / ", "(" or ",", at most 18 characters. "Tiefgarage Hauptbahnhof / Castra-
    Regina-Center" is "Hauptbahnhof"; the full name is in the popup and the list. */
function shortName(name) {
  const full = String(name).trim();
  const bare = full.replace(KIND, "") || full;
  const head = bare.split(/\s+\/\s*|\s*[(,]/)[0].trim() || bare;
  return head.length > 18 ? head.slice(0, 17).trimEnd() + "…" : head;
}

/** The pin: a dot on the lot, a leader line, and the label (moved by declutter when crowded). */
function markerContent(id, p) {
  const ahead = state.forecastAt != null;
  const s = STATUS[ahead ? forecastStatus(p) : p.status] || STATUS.unknown;
  const node = el("div", "lot-marker " + s.cls + (ahead ? " forecast" : lotStale(p) ? " stale" : "") + (pr(p) ? " pr" : ""));
  node.dataset.lotId = id;
  node.dataset.free = String(p.free);
  node.dataset.status = String(p.status);
  if (ahead) forecastData(node, p.forecast);
  // What is seen is hidden from screen readers, which hear one sentence instead.
  const seen = el("span", "seen", lotBadge(p), pr(p) ? el("span", "pr-tag", "P+R") : null, el("span", "short", shortName(p.name)));
  seen.setAttribute("aria-hidden", "true");
  let said = p.status === "closed" || p.status === "unknown" ? s.word : p.free + " free of " + p.total + ", " + s.word.toLowerCase();
  const f = p.forecast;
  if (ahead) said = "forecast for " + when(state.forecastAt) + ": " + (f ? "about " + f.expected_free + " free of " + p.total + " (" + f.free_low + " to " + f.free_high + ")" : "none");
  node.append(seen, el("span", "sr", String(p.name) + ": " + said + (pr(p) ? ", park and ride" : "")));
  return el("div", "pin", el("span", "leader"), el("span", "dot"), node);
}

/** The forecast a marker shows, as data- attributes (for whoever reads the page, and the tests). */
function forecastData(node, f) {
  node.dataset.forecast = f ? "yes" : "none";
  if (!f) return;
  node.dataset.expectedFree = String(f.expected_free);
  node.dataset.freeLow = String(f.free_low);
  node.dataset.freeHigh = String(f.free_high);
}

/** Markers for every lot, on the map for those `shown`; `popup(id)` builds a popup's content,
    `opened(id)` / `closed(id)` hear of a popup opening and closing. */
export function renderMarkers(shown, { popup, opened, closed }) {
  const ids = new Set(shown.map((f) => String(f.id)));
  for (const [id, m] of markers) {
    if (!state.lots.has(id)) {
      lotLayer.removeLayer(m.marker);
      markers.delete(id);
    }
  }
  for (const [id, f] of state.lots) {
    const p = f.properties;
    const ll = latLon(f);
    let m = markers.get(id);
    if (!m) {
      const marker = L.marker([ll.lat, ll.lon], {
        icon: L.divIcon({ className: "lot-icon", html: el("div"), iconSize: [0, 0] }),
        riseOnHover: true,
      });
      marker.bindPopup(() => popup(id), { maxWidth: 280, minWidth: 220, autoPanPadding: [16, 56] });
      marker.on("popupopen", () => opened(id)); // click, tap or Enter on a focused marker
      marker.on("popupclose", () => {
        marker.setPopupContent(() => popup(id)); // built afresh when opened again
        closed(id);
      });
      m = { marker };
      markers.set(id, m);
    }
    m.marker.setLatLng([ll.lat, ll.lon]);
    m.marker.setZIndexOffset(id === state.selected ? 1000 : Math.min(900, shownFree(p)));
    if (ids.has(id)) lotLayer.addLayer(m.marker);
    else lotLayer.removeLayer(m.marker);
    // Update the icon in place: replacing it would drop keyboard focus every refresh.
    const iconEl = m.marker.getElement();
    if (iconEl) iconEl.replaceChildren(markerContent(id, p));
    else m.marker.setIcon(L.divIcon({ className: "lot-icon", html: markerContent(id, p), iconSize: [0, 0] }));
    if (m.marker.isPopupOpen()) swap(m.marker.getPopup(), popup(id));
  }
}

/** New popup content only when it differs: replacing it drops keyboard focus inside. */
function swap(popup, fresh) {
  const old = popup.getContent();
  if (!(old instanceof Element && old.isEqualNode(fresh))) popup.setContent(fresh);
}

// Where `declutter` last put each label (id -> CSS values of its pin), and for which labels,
// sizes and positions: the same input gives the same places, so they are put back, not sought.
const placed = { key: "", pins: new Map() };
let placing = 0;

/** Place each label near its lot without covering another label or lot: the nearest free
    spot of a few candidates around the dot, joined to it by a leader line. With `later` (a
    keystroke in the search field) the labels keep their last places until typing pauses. */
export function declutter(later) {
  clearTimeout(placing);
  const items = [];
  for (const [id, m] of markers) {
    const icon = lotLayer.hasLayer(m.marker) && m.marker.getElement();
    const label = icon && icon.querySelector(".lot-marker");
    if (label) items.push({ id, label, pt: map.latLngToLayerPoint(m.marker.getLatLng()), w: label.offsetWidth, h: label.offsetHeight });
  }
  if (!items.length || !items[0].w) return; // a hidden map has no sizes yet
  const key = items.map((it) => [it.id, it.w, it.h, it.pt.x, it.pt.y].join(" ")).join("|");
  if (later || key === placed.key) {
    for (const it of items) setPin(it.label, placed.pins.get(it.id));
    if (later && key !== placed.key) placing = setTimeout(() => declutter(), DECLUTTER_PAUSE_MS);
    return;
  }
  placed.key = key;
  placed.pins.clear();
  const taken = items.map((it) => ({ l: it.pt.x - 6, r: it.pt.x + 6, t: it.pt.y - 6, b: it.pt.y + 6 }));
  const free = (b) => !taken.some((o) => b.l < o.r && o.l < b.r && b.t < o.b && o.t < b.b);
  items.sort((a, b) => b.pt.y - a.pt.y || a.pt.x - b.pt.x); // stable across refreshes
  for (const it of items) {
    const w = it.w + 4;
    const h = it.h + 4;
    const spots = [];
    for (const dx of [0, -w / 2, w / 2, -w, w]) {
      for (const top of [-9 - h, -9 - 2 * h, 9, -9 - 3 * h, 9 + h, -h / 2]) {
        if (top === -h / 2 && Math.abs(dx) < w) continue; // beside the dot only when clear of it
        spots.push({ x: dx - w / 2, y: top, cost: Math.hypot(dx, top + 9 + h / 2) });
      }
    }
    spots.sort((a, b) => a.cost - b.cost);
    const box = (s) => ({ l: it.pt.x + s.x, r: it.pt.x + s.x + w, t: it.pt.y + s.y, b: it.pt.y + s.y + h });
    const spot = spots.find((s) => free(box(s))) || spots[0];
    taken.push(box(spot));
    const x = spot.x + 2;
    const y = spot.y + 2;
    // the leader runs from the dot to the nearest point of the label
    const nx = Math.min(Math.max(0, x), x + it.w);
    const ny = Math.min(Math.max(0, y), y + it.h);
    const pin = [Math.round(x) + "px", Math.round(y) + "px", Math.round(Math.hypot(nx, ny)) + "px", Math.atan2(ny, nx) + "rad"];
    placed.pins.set(it.id, pin);
    setPin(it.label, pin);
  }
  // For whoever watches the map: the browser tests count how often labels are placed.
  map.getContainer().dispatchEvent(new Event("labelsplaced"));
}

/** Put a label's pin where `declutter` placed it (a label it has not placed yet stays as drawn). */
function setPin(label, values) {
  if (!values) return;
  const pin = label.parentNode.style;
  pin.setProperty("--x", values[0]);
  pin.setProperty("--y", values[1]);
  pin.setProperty("--len", values[2]);
  pin.setProperty("--ang", values[3]);
}

export function fitToLots() {
  const pts = [...state.lots.values()].map(latLon).map((c) => [c.lat, c.lon]);
  if (!pts.length || !document.getElementById("map").offsetWidth) return;
  map.fitBounds(pts, { padding: [40, 40], maxZoom: 16 });
  state.fitted = true;
}

/** The driver's own position on the map, once shared. */
export function showHere(here) {
  if (hereMarker) hereMarker.setLatLng([here.lat, here.lon]);
  else hereMarker = L.circleMarker([here.lat, here.lon], { radius: 7, color: "#fff", weight: 3, fillColor: "#1a56db", fillOpacity: 1, interactive: false }).addTo(map);
}
