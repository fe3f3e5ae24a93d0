/* A marker's popup: the lot's name and summary, and a button to its bays and details. */
import { el } from "../common.js";
import { state } from "./data.js";
import { summary } from "./pieces.js";

const narrow = window.matchMedia("(max-width: 600px)");

/** The popup of lot `id`: the whole summary, or, while the panel beside the map shows this lot
    (a wide screen), only its name and numbers, so the two never say the same things twice.
    `openDetail(id)` is what its "Bays and details" button does. */
export function popupContent(id, openDetail) {
  const f = state.lots.get(id);
  const box = el("div", "popup");
  if (!f) return box;
  const inPanel = !narrow.matches && state.selected === id && !document.getElementById("detail").hidden;
  box.append(el("h2", "popup-name", String(f.properties.name)), summary(id, f, inPanel));
  if (!inPanel) {
    const more = el("button", "btn", "Bays and details");
    more.type = "button";
    more.addEventListener("click", () => openDetail(id));
    box.append(more);
  }
  return box;
}
