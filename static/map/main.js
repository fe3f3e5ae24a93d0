/* The drivers' map: live free spaces per lot, or those expected at the driver's arrival, read
   only from the JSON API (contracts §4 and §6). This module puts the page together: what a
   click, a keystroke or a refresh changes, the phone's list-or-map switch, the notices and the
   location. The parts: data.js (settings, lots, refresh, filters), arriving.js (the arrival
   time), markers.js (the map and its labels), popups.js, list.js, detail.js, outlook.js and
   chart.js (a lot's next hours), and pieces.js for what they share. No framework, no build:
   the browser loads these modules as they are. */
import { el } from "../common.js";
import { renderArriving, startArriving } from "./arriving.js";
import { cfg, loadBays, now, onData, refresh, state, visibleLots } from "./data.js";
import { renderDetail } from "./detail.js";
import { items, renderList } from "./list.js";
import { declutter, fitToLots, map, markers, renderMarkers, showHere, startMap } from "./markers.js";
import { clock, when } from "./pieces.js";
import { popupContent } from "./popups.js";

const body = document.body;
const narrow = window.matchMedia("(max-width: 600px)");
const $ = (id) => document.getElementById(id);

const markerHandlers = {
  popup: (id) => popupContent(id, (lot) => openDetail(lot, true)),
  opened: (id) => select(id, "map"),
  closed: (id) => {
    if (state.selected === id && $("detail").hidden) select(null);
  },
};

// ---- selecting a lot --------------------------------------------------------------------------

function select(id, from) {
  state.selected = id;
  // From the list: the details (and on a wide screen the popup too). From the map: the popup
  // only, so that browsing markers never hides the list.
  if (from === "list") {
    openDetail(id, true);
    if (!narrow.matches) showOnMap(id, false);
  }
  render();
}

function openDetail(id, focus) {
  const first = !$("detail").hidden && state.bays && state.bays.id === id ? false : true;
  state.selected = id;
  if (first) state.bays = null;
  $("list-view").hidden = true;
  $("detail").hidden = false;
  if (narrow.matches) setView("list");
  renderDetail();
  if (first) loadBays(id);
  if (focus) $("detail-name").focus();
}

function closeDetail() {
  const id = state.selected;
  state.selected = null;
  state.bays = null;
  map.closePopup();
  $("detail").hidden = true;
  $("list-view").hidden = false;
  render();
  const li = items.get(id);
  if (li && li.isConnected) li.firstChild.focus();
}

function showOnMap(id, openPopup) {
  const m = markers.get(id);
  if (!m) return;
  if (narrow.matches) setView("map");
  map.setView(m.marker.getLatLng(), Math.max(map.getZoom(), 15));
  if (openPopup || !narrow.matches) m.marker.openPopup();
}

// ---- phone: list or map -----------------------------------------------------------------------

function setView(which) {
  body.classList.toggle("show-map", which === "map");
  body.classList.toggle("show-list", which !== "map");
  $("view-toggle").textContent = which === "map" ? "List" : "Map";
  $("view-toggle").setAttribute("aria-controls", which === "map" ? "side" : "map");
  if (which === "map") {
    map.invalidateSize();
    if (!state.fitted) fitToLots();
    declutter(); // label sizes are only known once the map is displayed
  }
}

// ---- status line and notices ------------------------------------------------------------------

function renderNotice() {
  let newest = 0;
  for (const f of state.lots.values()) newest = Math.max(newest, Date.parse(f.properties.updated_at) || 0);
  let msg = "";
  if (state.error) {
    msg = state.loadedAt
      ? "Cannot reach the server (" + state.error + "). The numbers shown are from " + clock(state.loadedAt) + " and may be out of date. Retrying every " + Math.round(cfg.refreshMs / 1000) + " s."
      : "Cannot load the car parks (" + state.error + "). Retrying every " + Math.round(cfg.refreshMs / 1000) + " s.";
  } else if (newest && now() - newest > cfg.staleMs) {
    msg = "No new sensor readings since " + clock(newest) + ": the numbers may be out of date.";
  }
  body.classList.toggle("is-stale", !!msg);
  const box = $("notice");
  if (box.dataset.msg === msg) return;
  box.dataset.msg = msg;
  box.classList.toggle("on", !!msg);
  if (!msg) return box.replaceChildren();
  const retry = el("button", "btn", "Retry now");
  retry.type = "button";
  retry.addEventListener("click", refresh);
  box.replaceChildren(el("span", null, "⚠ " + msg), " ", state.error ? retry : "");
}

function renderFreshness() {
  const t = $("freshness");
  const what = state.forecastAt == null ? "Live" : "Forecast for " + when(state.forecastAt);
  if (state.error) t.textContent = state.loadedAt ? "Offline · last data " + clock(state.loadedAt) : "Offline";
  else if (state.loadedAt) t.textContent = what + " · checked " + clock(state.loadedAt);
}

/** Draw everything from the state; `typing`: a keystroke in the filters, where the labels are
    placed again only once typing pauses. */
function render(typing) {
  const shown = visibleLots({
    name: $("f-name").value,
    onlyPr: $("f-pr").checked,
    min: Math.max(0, parseInt($("f-min").value, 10) || 0),
  });
  renderMarkers(shown, markerHandlers);
  declutter(typing === true);
  renderList(shown, (id) => select(id, "list"));
  renderNotice();
  renderFreshness();
  renderArriving();
  renderDetail();
  if (!state.fitted && state.lots.size) fitToLots();
}

// ---- geolocation (only on request) ------------------------------------------------------------

function locate() {
  const btn = $("locate");
  const msg = $("geo-msg");
  if (state.byDistance) {
    state.byDistance = false;
    btn.setAttribute("aria-pressed", "false");
    msg.textContent = "";
    return render();
  }
  if (!navigator.geolocation) {
    msg.textContent = "This browser cannot share a location.";
    return;
  }
  msg.textContent = "Finding your location…";
  navigator.geolocation.getCurrentPosition((pos) => {
    state.here = { lat: pos.coords.latitude, lon: pos.coords.longitude };
    state.byDistance = true;
    btn.setAttribute("aria-pressed", "true");
    msg.textContent = "Sorted by distance from you.";
    showHere(state.here);
    render();
  }, (err) => {
    msg.textContent = err.code === 1 ? "Location not shared: still sorted by free spaces." : "Your location could not be found: still sorted by free spaces.";
  }, { enableHighAccuracy: false, timeout: 15000, maximumAge: 60000 });
}

// ---- wiring -----------------------------------------------------------------------------------

onData("lots", () => {
  render();
  if (state.selected && !state.error && !$("detail").hidden) loadBays(state.selected);
});
onData("bays", renderDetail);
onData("curve", () => render()); // a lot's forecast came, for its popup, panel or list item
$("filters").addEventListener("submit", (e) => e.preventDefault());
$("f-name").addEventListener("input", () => render(true));
for (const id of ["f-pr", "f-min"]) $(id).addEventListener("input", () => render());
$("locate").addEventListener("click", locate);
$("refresh").addEventListener("click", refresh);
$("back").addEventListener("click", closeDetail);
$("show-on-map").addEventListener("click", () => showOnMap(state.selected, true));
$("view-toggle").addEventListener("click", () => setView(body.classList.contains("show-map") ? "list" : "map"));
narrow.addEventListener("change", () => {
  map.invalidateSize();
  if (!state.fitted) fitToLots();
});
startMap();
startArriving();
refresh();
