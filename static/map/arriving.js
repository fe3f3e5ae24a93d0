/* The "arriving" control: now (the live counts, the default), +15 min, +30 min, +1 h, or a time
   of day within the next 24 h (one earlier than now is tomorrow's), for which the map shows the
   expected free spaces instead; and the line under it that says which of the two is shown. */
import { el } from "../common.js";
import { AHEAD_MS, now, setArrival, state } from "./data.js";
import { when } from "./pieces.js";

const $ = (id) => document.getElementById(id);
const form = $("arriving");
const timeInput = $("arrive-time");

/** The instant of a time of day ("HH:MM", the device's clock): today, or tomorrow when it has
    passed; never more than the API takes ahead. Null for an empty or invalid value. */
export function instantOf(value) {
  const m = /^(\d{2}):(\d{2})/.exec(value || "");
  if (!m) return null;
  const t = new Date(now());
  t.setHours(+m[1], +m[2], 0, 0);
  if (t.getTime() <= now()) t.setDate(t.getDate() + 1);
  return Math.min(t.getTime(), now() + AHEAD_MS);
}

/** "in 1 h 5 min" from now. */
function fromNow(t) {
  const min = Math.max(0, Math.round((t - now()) / 60000));
  const h = Math.floor(min / 60);
  const m = min % 60;
  return "in " + (h ? h + " h" : "") + (h && m ? " " : "") + (m || !h ? m + " min" : "");
}

function choose() {
  const picked = form.elements.arrive.value;
  if (picked === "now") setArrival(null);
  else if (picked === "at") chooseTime();
  else setArrival({ minutes: Number(picked) });
  renderArriving(); // "Loading…" at once; the rest when the lots for the choice came
}

function chooseTime() {
  if (!timeInput.value) {
    // A first guess the driver then corrects: the next full hour at least half an hour away.
    const t = new Date(now() + 30 * 60000);
    t.setMinutes(0, 0, 0);
    t.setHours(t.getHours() + 1);
    timeInput.value = String(t.getHours()).padStart(2, "0") + ":00";
  }
  const at = instantOf(timeInput.value);
  if (at != null) setArrival({ at });
}

/** Wire the control; the page redraws from `state` when the lots for the choice arrive. */
export function startArriving() {
  form.addEventListener("submit", (e) => e.preventDefault());
  for (const radio of form.elements.arrive) radio.addEventListener("change", choose);
  timeInput.addEventListener("input", () => {
    if (!timeInput.value) return;
    form.elements.arrive.value = "at";
    choose();
  });
}

/** The control as the state has it, and the line saying what the map shows. */
export function renderArriving() {
  const a = state.arrive;
  const picked = !a ? "now" : a.minutes != null ? String(a.minutes) : "at";
  if (form.elements.arrive.value !== picked) form.elements.arrive.value = picked;
  const at = state.forecastAt;
  document.body.classList.toggle("is-forecast", at != null);
  form.dataset.at = at == null ? "" : new Date(at).toISOString();
  let msg = "";
  let more = "";
  if (a && state.busy) msg = "Loading the forecast…";
  else if (a && state.error) msg = "The forecast could not be loaded (" + state.error + ").";
  else if (at != null) {
    msg = "Forecast for " + when(at) + " (" + fromNow(at) + ")";
    more = ": ≈ expected free spaces; the range after them holds 8 times in 10.";
  } else if (state.passed) msg = when(state.passed) + " has come: live counts again.";
  const box = $("arrive-msg");
  if (box.textContent !== msg + more) box.replaceChildren(...(msg ? [msg] : []), ...(more ? [el("span", "more", more)] : []));
}
