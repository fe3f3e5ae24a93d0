// The operators' page: sensors, lots, refused attempts and the gateway, from /api/operators.
// Everything is drawn with textContent (never innerHTML): sensor ids and addresses are untrusted.
// Sorting and searching run over the whole list in memory; only one page of rows is in the DOM,
// so 10,000 sensors stay quick.
(function () {
  "use strict";
  var TOKEN_KEY = "parking-admin-token";
  var PAGE = 100;
  var STATUS_TEXT = { ok: "ok", silent: "silent", never_seen: "never seen", low_battery: "low battery" };
  var api = document.body.dataset.api;
  var data = null;
  var sensorSort = { key: "status", dir: 1 };
  var lotSort = { key: "share", dir: 1 };
  var page = 0;
  var $ = function (id) { return document.getElementById(id); };

  function token() { try { return localStorage.getItem(TOKEN_KEY); } catch (e) { return null; } }

  function showLogin(message) {
    $("content").hidden = true;
    $("login").hidden = false;
    $("sign-out").hidden = true;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function load() {
    var t = token();
    if (!t) { showLogin(""); return; }
    $("generated").textContent = "Loading…";
    fetch(api, { headers: { Authorization: "Bearer " + t } }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        return response.json().then(function (body) {
          try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
          showLogin(body.message || "The token was refused.");
        });
      }
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json().then(function (body) { data = body; render(); });
    }).catch(function (error) { $("generated").textContent = "Could not load: " + error.message; });
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text == null ? "–" : String(text);
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function compare(key, dir) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (x == null && y == null) { return 0; }
      if (x == null) { return 1; }   // unknowns last, whichever the direction
      if (y == null) { return -1; }
      if (typeof x === "string") { return dir * x.localeCompare(y); }
      return dir * (x - y);
    };
  }

  function statusRank(row) { return { silent: 0, never_seen: 1, low_battery: 2, ok: 3 }[row.status]; }

  function ago(seconds) {
    if (seconds == null) { return "never"; }
    if (seconds < 120) { return seconds + " s ago"; }
    if (seconds < 7200) { return Math.round(seconds / 60) + " min ago"; }
    if (seconds < 172800) { return Math.round(seconds / 3600) + " h ago"; }
    return Math.round(seconds / 86400) + " days ago";
  }

  function matchingSensors() {
    var q = $("q").value.trim().toLowerCase();
    var status = $("status").value;
    return data.sensors.filter(function (s) {
      if (status === "problems" && s.status === "ok" && !s.refused) { return false; }
      if (status === "refused" && !s.refused) { return false; }
      if (status && status !== "problems" && status !== "refused" && s.status !== status) { return false; }
      return !q || s.bay.toLowerCase().indexOf(q) >= 0 || s.lot.toLowerCase().indexOf(q) >= 0 ||
        (s.sensor || "").toLowerCase().indexOf(q) >= 0;
    });
  }

  function renderSensors() {
    var rows = matchingSensors();
    var key = sensorSort.key;
    rows.forEach(function (s) { s.status_rank = statusRank(s); });
    rows.sort(compare(key === "status" ? "status_rank" : key, sensorSort.dir));
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    page = Math.min(page, pages - 1);
    var body = document.createElement("tbody");
    rows.slice(page * PAGE, page * PAGE + PAGE).forEach(function (s) {
      var tr = document.createElement("tr");
      cell(tr, s.bay);
      cell(tr, s.lot);
      cell(tr, s.sensor || "no credential", s.sensor ? "" : "muted");
      cell(tr, STATUS_TEXT[s.status], "state " + s.status);
      var seen = cell(tr, ago(s.silent_for_s));
      if (s.last_seen) { seen.title = s.last_seen; }
      cell(tr, s.battery == null ? null : s.battery + " %", "num");
      cell(tr, s.refused, "num" + (s.refused ? " warn" : ""));
      body.appendChild(tr);
    });
    $("sensors").replaceChild(body, $("sensors").tBodies[0]);
    $("sensor-summary").textContent = rows.length + " of " + data.sensors.length + " sensors";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
    markSorted("sensors", sensorSort);
  }

  function renderLots() {
    var rows = data.lots.slice().sort(compare(lotSort.key, lotSort.dir));
    var body = document.createElement("tbody");
    rows.forEach(function (lot) {
      var tr = document.createElement("tr");
      cell(tr, lot.name).title = lot.lot;
      cell(tr, lot.bays, "num");
      cell(tr, lot.reporting, "num");
      cell(tr, lot.share == null ? null : Math.round(lot.share * 100) + " %", "num" + (lot.share != null && lot.share < 0.8 ? " warn" : ""));
      body.appendChild(tr);
    });
    $("lots").replaceChild(body, $("lots").tBodies[0]);
    markSorted("lots", lotSort);
  }

  function renderRefused(id, rows) {
    var body = document.createElement("tbody");
    if (!rows.length) {
      var tr = document.createElement("tr");
      cell(tr, "none").colSpan = 4;
      body.appendChild(tr);
    }
    rows.slice(0, 200).forEach(function (r) {
      var tr = document.createElement("tr");
      cell(tr, r.name);
      cell(tr, r.codes["4.01"] || 0, "num");
      cell(tr, r.codes["4.03"] || 0, "num");
      cell(tr, r.total, "num");
      body.appendChild(tr);
    });
    $(id).replaceChild(body, $(id).tBodies[0]);
  }

  function renderGateway() {
    var g = data.gateway;
    $("db-state").textContent = g.database === "ok" ? "reachable" : "unreachable";
    $("db-state").className = "big " + (g.database === "ok" ? "good" : "bad");
    if (!g.running) {
      $("gw-state").textContent = "not in this process";
      $("gw-auth").textContent = "";
      $("gw-queue").textContent = "–";
      $("gw-commit").textContent = "–";
      $("gw-commit-max").textContent = "";
    } else {
      $("gw-state").textContent = g.storing === "ok" ? "storing" : "storage unavailable";
      $("gw-state").className = "big " + (g.storing === "ok" ? "good" : "bad");
      $("gw-auth").textContent = g.sensor_auth === "oscore" ? "OSCORE required" : "unprotected readings accepted";
      $("gw-queue").textContent = String(g.queue);
      $("gw-commit").textContent = g.commit_ms_mean == null ? "–" : g.commit_ms_mean + " ms mean";
      $("gw-commit-max").textContent = "max " + g.commit_ms_max + " ms";
    }
    var counts = { silent: 0, never_seen: 0, low_battery: 0, ok: 0 };
    data.sensors.forEach(function (s) { counts[s.status] += 1; });
    $("counts").textContent = data.sensors.length + " bays";
    $("counts-detail").textContent = counts.silent + " silent, " + counts.never_seen + " never seen, " +
      counts.low_battery + " low battery";
  }

  function markSorted(tableId, sort) {
    var heads = $(tableId).tHead.querySelectorAll("th");
    heads.forEach(function (th) {
      var button = th.querySelector("button");
      th.removeAttribute("aria-sort");
      if (button && button.dataset.sort === sort.key) {
        th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      }
    });
  }

  function render() {
    $("login").hidden = true;
    $("content").hidden = false;
    $("sign-out").hidden = false;
    $("generated").textContent = "as of " + new Date(data.generated_at).toLocaleTimeString() +
      " · silent = no reading for " + Math.round(data.stale_after / 60) + " min";
    renderGateway();
    renderSensors();
    renderLots();
    renderRefused("refused-sensor", data.refused.by_sensor);
    renderRefused("refused-source", data.refused.by_source);
  }

  function sortable(tableId, sort, draw) {
    $(tableId).tHead.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-sort]");
      if (!button || !data) { return; }
      var key = button.dataset.sort;
      sort.dir = sort.key === key ? -sort.dir : 1;
      sort.key = key;
      page = 0;
      draw();
    });
  }

  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    try { localStorage.setItem(TOKEN_KEY, $("token").value); } catch (e) { /* private mode */ }
    $("token").value = "";
    load();
  });
  $("sign-out").addEventListener("click", function () {
    try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
    data = null;
    showLogin("");
  });
  $("reload").addEventListener("click", load);
  $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  $("q").addEventListener("input", function () { page = 0; if (data) { renderSensors(); } });
  $("status").addEventListener("change", function () { page = 0; if (data) { renderSensors(); } });
  $("prev").addEventListener("click", function () { page -= 1; renderSensors(); });
  $("next").addEventListener("click", function () { page += 1; renderSensors(); });
  sortable("sensors", sensorSort, renderSensors);
  sortable("lots", lotSort, renderLots);
  load();
}());
