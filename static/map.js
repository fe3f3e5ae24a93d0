/* The drivers' map: live free spaces per lot, read only from the JSON API (contract §4).
   Every string from the data goes into the page through textContent and every link from the
   data through safeHref, because lot files are imported from outside. No framework, no build. */
(function () {
  "use strict";

  const body = document.body;
  const cfg = {
    api: body.dataset.api || "/api/lots",
    tileUrl: body.dataset.tileUrl || "",
    tileAttribution: body.dataset.tileAttribution || "",
    refreshMs: Math.max(5, Number(body.dataset.refreshSeconds) || 30) * 1000,
    staleMs: Math.max(60, Number(body.dataset.staleSeconds) || 600) * 1000,
    outlineUrl: body.dataset.outlineUrl || "",
  };
  const STATUS = {
    spacesAvailable: { word: "Spaces available", sym: "✓", cls: "st-ok" },
    almostFull: { word: "Almost full", sym: "!", cls: "st-almost" },
    full: { word: "Full", sym: "✕", cls: "st-full" },
    closed: { word: "Closed", sym: "–", cls: "st-closed" },
    unknown: { word: "No current data", sym: "?", cls: "st-unknown" },
  };
  const BAY_WORD = { free: "free", occupied: "occupied", unknown: "not reporting" };
  const narrow = window.matchMedia("(max-width: 600px)");
  const $ = (id) => document.getElementById(id);

  const state = {
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

  // ---- small helpers ------------------------------------------------------------------------

  /** An element with a class and children (strings become text nodes, never HTML). */
  function el(tag, cls, ...kids) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const kid of kids) if (kid != null && kid !== false) node.append(kid);
    return node;
  }

  /** The href if it is an absolute http(s) URL, else null (javascript:, data:, garbage). */
  function safeHref(href) {
    try {
      const url = new URL(href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  /** A link that opens elsewhere, or plain text when the href is not a safe one. */
  function link(href, text) {
    const ok = safeHref(href);
    if (!ok) return el("span", null, text);
    const a = el("a", null, text);
    a.href = ok;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    return a;
  }

  const now = () => Date.now() + state.skew;

  function ago(iso) {
    const t = Date.parse(iso);
    if (!iso || isNaN(t)) return "no readings yet";
    const min = Math.floor(Math.max(0, now() - t) / 60000);
    if (min < 1) return "updated just now";
    if (min < 60) return "updated " + min + " min ago";
    if (min < 48 * 60) return "updated " + Math.floor(min / 60) + " h ago";
    return "updated " + new Date(t).toLocaleDateString();
  }

  /** A time of day, with the date when it is not today. */
  function clock(t) {
    const d = new Date(t);
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toDateString() === new Date(now()).toDateString() ? time : d.toLocaleDateString() + " " + time;
  }

  function lotStale(p) {
    const t = Date.parse(p.updated_at);
    return !isNaN(t) && now() - t > cfg.staleMs;
  }

  function fold(s) {
    return String(s).normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }

  function distanceKm(a, b) {
    const r = Math.PI / 180;
    const x = (b.lon - a.lon) * r * Math.cos(((a.lat + b.lat) / 2) * r);
    const y = (b.lat - a.lat) * r;
    return 6371 * Math.hypot(x, y);
  }

  function latLon(f) {
    const c = f.geometry && f.geometry.coordinates;
    return c ? { lat: c[1], lon: c[0] } : null;
  }

  function pr(p) {
    return p.park_and_ride && typeof p.park_and_ride === "object" ? p.park_and_ride : null;
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

  // ---- data ---------------------------------------------------------------------------------

  async function getJSON(url) {
    const ctl = new AbortController();
    const timeout = setTimeout(() => ctl.abort(), 10000);
    try {
      const res = await fetch(url, { signal: ctl.signal, cache: "no-store", headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("it answered " + res.status);
      // "N min ago" must not depend on the phone's clock being right.
      const date = Date.parse(res.headers.get("Date"));
      if (!isNaN(date)) state.skew = date - Date.now();
      return await res.json();
    } catch (e) {
      const why = { AbortError: "no answer within 10 s", TypeError: "no connection", SyntaxError: "an unreadable answer" };
      throw new Error(why[e.name] || e.message);
    } finally {
      clearTimeout(timeout);
    }
  }

  async function refresh() {
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
    render();
    if (state.selected && !state.error && !$("detail").hidden) loadBays(state.selected);
    schedule();
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    if (!document.hidden) state.timer = setTimeout(refresh, delay == null ? cfg.refreshMs : delay);
  }

  // A hidden tab does not poll; coming back it refreshes at once if the data is due.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(state.timer);
    else schedule(Math.max(0, cfg.refreshMs - (Date.now() - state.triedAt)));
  });
  window.addEventListener("online", () => refresh());

  async function loadBays(id) {
    try {
      const f = await getJSON(cfg.api + "/" + encodeURIComponent(id));
      if (state.selected !== id) return;
      state.bays = { id, bays: (f.properties && f.properties.bays) || [] };
      state.lots.set(id, f);
    } catch (e) {
      if (state.selected !== id) return;
      state.bays = { id, error: e.message };
    }
    renderDetail();
  }

  // ---- filters and order --------------------------------------------------------------------

  /** Spaces a driver can use now: none in a closed lot or one with no current data. */
  function usable(p) {
    return p.status === "closed" || p.status === "unknown" ? 0 : p.free || 0;
  }

  function visibleLots() {
    const q = fold($("f-name").value.trim());
    const onlyPr = $("f-pr").checked;
    const min = Math.max(0, parseInt($("f-min").value, 10) || 0);
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

  // ---- rendering: shared pieces -------------------------------------------------------------

  /** The lot's badge, the same on map and list: symbol and free count, or "closed" or "?".
      Only the count is read out; the words next to it say the rest. */
  function badge(p) {
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
  function summary(id, f, brief) {
    const p = f.properties;
    const s = STATUS[p.status] || STATUS.unknown;
    const box = el("div", "lot-summary" + (lotStale(p) ? " stale" : ""));
    box.dataset.lotId = id;
    const free = el("strong", "free", String(p.free));
    free.dataset.field = "free";
    const total = el("span", null, String(p.total));
    total.dataset.field = "total";
    box.append(el("p", "big", free, " free of ", total));
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

  // ---- the map ------------------------------------------------------------------------------

  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  const map = L.map("map", { zoomSnap: 0.5, zoomAnimation: !still, fadeAnimation: !still, markerZoomAnimation: !still });
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  map.createPane("outline").style.zIndex = 250; // above tiles, below markers and popups
  map.createPane("labels").style.zIndex = 260;
  // From this zoom on (a few streets across the screen) every label also names its lot; farther
  // out the numbers alone keep the labels small, and a hovered or focused one shows its name.
  const NAMES_ZOOM = 15;
  const markers = new Map(); // id -> {marker}
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
    body.classList.add("has-tiles");
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

  /** The pin: a dot on the lot, a leader line, and the label (moved by declutter when crowded). */
  function markerContent(id, p) {
    const s = STATUS[p.status] || STATUS.unknown;
    const node = el("div", "lot-marker " + s.cls + (lotStale(p) ? " stale" : "") + (pr(p) ? " pr" : ""));
    node.dataset.lotId = id;
    node.dataset.free = String(p.free);
    node.dataset.status = String(p.status);
    // What is seen is hidden from screen readers, which hear one sentence instead.
    const seen = el("span", "seen", badge(p), pr(p) ? el("span", "pr-tag", "P+R") : null, el("span", "short", shortName(p.name)));
    seen.setAttribute("aria-hidden", "true");
    const said = p.status === "closed" || p.status === "unknown" ? s.word : p.free + " free of " + p.total + ", " + s.word.toLowerCase();
    node.append(seen, el("span", "sr", String(p.name) + ": " + said + (pr(p) ? ", park and ride" : "")));
    return el("div", "pin", el("span", "leader"), el("span", "dot"), node);
  }

  function renderMarkers(shown) {
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
        marker.bindPopup(() => popupContent(id), { maxWidth: 280, minWidth: 220, autoPanPadding: [16, 56] });
        marker.on("popupopen", () => select(id, "map")); // click, tap or Enter on a focused marker
        marker.on("popupclose", () => {
          marker.setPopupContent(() => popupContent(id)); // built afresh when opened again
          if (state.selected === id && $("detail").hidden) select(null);
        });
        m = { marker };
        markers.set(id, m);
      }
      m.marker.setLatLng([ll.lat, ll.lon]);
      m.marker.setZIndexOffset(id === state.selected ? 1000 : Math.min(900, p.free || 0));
      if (ids.has(id)) lotLayer.addLayer(m.marker);
      else lotLayer.removeLayer(m.marker);
      // Update the icon in place: replacing it would drop keyboard focus every refresh.
      const iconEl = m.marker.getElement();
      if (iconEl) iconEl.replaceChildren(markerContent(id, p));
      else m.marker.setIcon(L.divIcon({ className: "lot-icon", html: markerContent(id, p), iconSize: [0, 0] }));
      if (m.marker.isPopupOpen()) swap(m.marker.getPopup(), popupContent(id));
    }
  }

  /** New popup content only when it differs: replacing it drops keyboard focus inside. */
  function swap(popup, fresh) {
    const old = popup.getContent();
    if (!(old instanceof Element && old.isEqualNode(fresh))) popup.setContent(fresh);
  }

  /** Replace a container's children only when they changed, for the same reason. */
  function put(box, ...kids) {
    const old = box.childNodes;
    if (kids.length !== old.length || kids.some((k, i) => !k.isEqualNode(old[i]))) box.replaceChildren(...kids);
  }

  /** Say the zoom on the map element (class "names" from NAMES_ZOOM on; data-zoom for tests). */
  function showZoom() {
    const box = map.getContainer();
    box.dataset.zoom = String(map.getZoom());
    box.dataset.namesZoom = String(NAMES_ZOOM);
    box.classList.toggle("names", map.getZoom() >= NAMES_ZOOM);
  }

  /** Place each label near its lot without covering another label or lot: the nearest free
      spot of a few candidates around the dot, joined to it by a leader line. */
  function declutter() {
    const items = [];
    for (const m of markers.values()) {
      const icon = lotLayer.hasLayer(m.marker) && m.marker.getElement();
      const label = icon && icon.querySelector(".lot-marker");
      if (label) items.push({ icon, label, pt: map.latLngToLayerPoint(m.marker.getLatLng()), w: label.offsetWidth, h: label.offsetHeight });
    }
    if (!items.length || !items[0].w) return; // a hidden map has no sizes yet
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
      const pin = it.label.parentNode.style;
      pin.setProperty("--x", Math.round(x) + "px");
      pin.setProperty("--y", Math.round(y) + "px");
      pin.setProperty("--len", Math.round(Math.hypot(nx, ny)) + "px");
      pin.setProperty("--ang", Math.atan2(ny, nx) + "rad");
    }
  }

  /** The popup: the whole summary, or, while the panel beside the map shows this lot (a wide
      screen), only its name and numbers, so the two never say the same things twice. */
  function popupContent(id) {
    const f = state.lots.get(id);
    const box = el("div", "popup");
    if (!f) return box;
    const inPanel = !narrow.matches && state.selected === id && !$("detail").hidden;
    box.append(el("h2", "popup-name", String(f.properties.name)), summary(id, f, inPanel));
    if (!inPanel) {
      const more = el("button", "btn", "Bays and details");
      more.type = "button";
      more.addEventListener("click", () => openDetail(id, true));
      box.append(more);
    }
    return box;
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

  function fitToLots() {
    const pts = [...state.lots.values()].map(latLon).map((c) => [c.lat, c.lon]);
    if (!pts.length || !$("map").offsetWidth) return;
    map.fitBounds(pts, { padding: [40, 40], maxZoom: 16 });
    state.fitted = true;
  }

  // ---- the list -----------------------------------------------------------------------------

  const items = new Map(); // id -> <li>, kept across refreshes so focus stays put

  function listItem(id, f) {
    let li = items.get(id);
    if (!li) {
      li = el("li");
      const btn = el("button", "lot-item");
      btn.type = "button";
      btn.dataset.lotId = id;
      btn.addEventListener("click", () => select(id, "list"));
      li.append(btn);
      items.set(id, li);
    }
    const p = f.properties;
    const s = STATUS[p.status] || STATUS.unknown;
    const btn = li.firstChild;
    btn.className = "lot-item" + (lotStale(p) ? " stale" : "") + (id === state.selected ? " selected" : "");
    const meta = p.status === "unknown" || p.status === "closed"
      ? s.word + " · " + p.total + " spaces"
      : "free of " + p.total + " · " + s.word;
    const extra = el("span", "li-extra", ago(p.updated_at));
    if (lotStale(p)) extra.append(" ", el("span", "tag", "old data"));
    if (p.unknown > 0) extra.append(" · " + p.unknown + " not reporting");
    const kids = [el("span", "li-name", String(p.name)), badge(p), el("span", "li-meta", meta), extra];
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

  function renderList(shown) {
    const ul = $("lot-list");
    for (const id of items.keys()) if (!state.lots.has(id)) items.delete(id);
    const want = shown.map((f) => listItem(String(f.id), f));
    const same = want.length === ul.children.length && want.every((li, i) => ul.children[i] === li);
    if (!same) {
      const focused = document.activeElement;
      ul.replaceChildren(...want);
      if (focused && focused.classList.contains("lot-item") && focused.isConnected) focused.focus();
    }
    ul.setAttribute("aria-label", "Car parks, " + (state.byDistance ? "nearest first" : "most free spaces first"));
    let text;
    if (!state.lots.size) text = state.error ? "Car parks could not be loaded." : "Loading car parks…";
    else if (!shown.length) text = "No car park matches the filters.";
    else text = (shown.length === state.lots.size ? shown.length : shown.length + " of " + state.lots.size) + " car parks, " + (state.byDistance ? "nearest first" : "most free spaces first");
    if ($("list-summary").textContent !== text) $("list-summary").textContent = text;
  }

  // ---- the detail panel and the bay grid ----------------------------------------------------

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

  function renderDetail() {
    const id = state.selected;
    const f = id && state.lots.get(id);
    if (!f || $("detail").hidden) return;
    $("detail-name").textContent = String(f.properties.name);
    put($("detail-body"), summary(id, f));
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

  function showOnMap(id, openPopup) {
    const m = markers.get(id);
    if (!m) return;
    if (narrow.matches) setView("map");
    map.setView(m.marker.getLatLng(), Math.max(map.getZoom(), 15));
    if (openPopup || !narrow.matches) m.marker.openPopup();
  }

  // ---- phone: list or map -------------------------------------------------------------------

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

  // ---- status line and notices --------------------------------------------------------------

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
    if (state.error) t.textContent = state.loadedAt ? "Offline · last data " + clock(state.loadedAt) : "Offline";
    else if (state.loadedAt) t.textContent = "Live · checked " + clock(state.loadedAt);
  }

  function render() {
    const shown = visibleLots();
    renderMarkers(shown);
    declutter();
    renderList(shown);
    renderNotice();
    renderFreshness();
    renderDetail();
    if (!state.fitted && state.lots.size) fitToLots();
  }

  // ---- geolocation (only on request) --------------------------------------------------------

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
      if (hereMarker) hereMarker.setLatLng([state.here.lat, state.here.lon]);
      else hereMarker = L.circleMarker([state.here.lat, state.here.lon], { radius: 7, color: "#fff", weight: 3, fillColor: "#1a56db", fillOpacity: 1, interactive: false }).addTo(map);
      render();
    }, (err) => {
      msg.textContent = err.code === 1 ? "Location not shared: still sorted by free spaces." : "Your location could not be found: still sorted by free spaces.";
    }, { enableHighAccuracy: false, timeout: 15000, maximumAge: 60000 });
  }

  // ---- wiring -------------------------------------------------------------------------------

  $("filters").addEventListener("submit", (e) => e.preventDefault());
  for (const id of ["f-name", "f-pr", "f-min"]) $(id).addEventListener("input", render);
  $("locate").addEventListener("click", locate);
  $("refresh").addEventListener("click", refresh);
  $("back").addEventListener("click", closeDetail);
  $("show-on-map").addEventListener("click", () => showOnMap(state.selected, true));
  $("view-toggle").addEventListener("click", () => setView(body.classList.contains("show-map") ? "list" : "map"));
  narrow.addEventListener("change", () => {
    map.invalidateSize();
    if (!state.fitted) fitToLots();
  });
  map.on("zoomend", () => {
    showZoom();
    declutter();
  });
  map.setView([0, 0], 2); // placeholder until the lots (or the outline) give the real extent
  if (cfg.tileUrl) addTiles();
  addLegend();
  showZoom();
  addOutline();
  refresh();
})();
