/* A marker's popup: the lot's name, the forecast for the arrival time (when one is chosen), its
   summary, the chart of its next hours, and a button to its bays and details. */
import { el } from "../common.js";
import { state } from "./data.js";
import { arrivalLine, nextHours } from "./outlook.js";
import { summary } from "./pieces.js";

const narrow = window.matchMedia("(max-width: 600px)");

/** The popup of lot `id`: the whole summary, or, while the panel beside the map shows this lot
    (a wide screen), only its name and numbers, so the two never say the same things twice
    (the panel has the chart then).
    `openDetail(id)` is what its "Bays and details" button does. */
export function popupContent(id, openDetail) {
  const f = state.lots.get(id);
  const box = el("div", "popup");
  if (!f) return box;
  const inPanel = !narrow.matches && state.selected === id && !document.getElementById("detail").hidden;
  const ahead = arrivalLine(id, f.properties);
  box.append(el("h2", "popup-name", String(f.properties.name)), ...(ahead ? [ahead] : []), summary(id, f, inPanel));
  if (!inPanel) {
    box.append(nextHours(id, String(f.properties.name)));
    const more = el("button", "btn", "Bays and details");
    more.type = "button";
    more.addEventListener("click", () => openDetail(id));
    box.append(more);
  }
  return box;
}
