/* The small chart of a lot's next hours: the expected free spaces as a line, the 80 % range
   around it as a band, the arrival time marked (rows of contract §6). Inline SVG built with DOM
   calls, no library; every text in it is a text node or an attribute value, never markup. */
import { svg } from "../common.js";

const W = 260;
const H = 116;
const PAD = { l: 28, r: 8, t: 8, b: 20 };
const HOUR = 3600000;

const r1 = (v) => String(Math.round(v * 10) / 10);
const hhmm = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/** The value of `key` at time `t` on `pts` (sorted by t), linear between them. */
function at(pts, t, key) {
  for (let i = 1; i < pts.length; i++) {
    if (pts[i].t >= t) {
      const a = pts[i - 1];
      const b = pts[i];
      return a[key] + ((t - a.t) / (b.t - a.t || 1)) * (b[key] - a[key]);
    }
  }
  return pts[pts.length - 1][key];
}

/** The chart of `pts` ({t (ms), expected_free, free_low, free_high}, at least two, sorted) of a
    lot with `capacity` spaces from `start` to `end` (ms), `mark` (ms or null) drawn as the
    arrival; `label` is what a screen reader hears instead of the picture. */
export function chart(pts, capacity, { start, end, mark, label }) {
  const cap = Math.max(1, capacity);
  const x = (t) => PAD.l + ((t - start) / (end - start)) * (W - PAD.l - PAD.r);
  const y = (v) => PAD.t + (1 - Math.min(cap, Math.max(0, v)) / cap) * (H - PAD.t - PAD.b);
  const line = (list, key) => list.map((p) => r1(x(p.t)) + "," + r1(y(p[key]))).join("L");
  const box = svg("svg", { class: "fc-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  const grid = svg("g", { class: "grid" });
  for (const v of [0, cap]) {
    grid.append(
      svg("line", { x1: PAD.l, x2: W - PAD.r, y1: r1(y(v)), y2: r1(y(v)) }),
      svg("text", { x: PAD.l - 4, y: r1(y(v) + 4), "text-anchor": "end", text: String(v) }),
    );
  }
  const step = end - start > 8 * HOUR ? 3 * HOUR : HOUR;
  for (let t = Math.ceil(start / HOUR) * HOUR; t <= end; t += step) {
    if (x(t) - PAD.l < 10) continue; // no label crowding the axis
    grid.append(
      svg("line", { class: "tick", x1: r1(x(t)), x2: r1(x(t)), y1: H - PAD.b, y2: H - PAD.b + 3 }),
      svg("text", { x: r1(x(t)), y: H - 5, "text-anchor": "middle", text: hhmm(t) }),
    );
  }
  box.append(grid);
  box.append(svg("path", { class: "band", d: "M" + line(pts, "free_high") + "L" + line(pts.slice().reverse(), "free_low") + "Z" }));
  box.append(svg("path", { class: "line", d: "M" + line(pts, "expected_free") }));
  if (mark != null && mark >= start && mark <= end) {
    const mx = String(Math.round(x(mark))); // whole pixels: a moving arrival redraws the popup less often
    box.append(
      svg("line", { class: "mark", x1: mx, x2: mx, y1: PAD.t, y2: H - PAD.b }),
      svg("circle", { class: "mark-dot", cx: mx, cy: String(Math.round(y(at(pts, mark, "expected_free")))), r: 3.5 }),
    );
  }
  return box;
}

/** What the chart says in words: the forecast at each full hour ("13:00 about 40 free, 25–55"). */
export function chartWords(pts) {
  const said = [];
  for (const p of pts) {
    if (new Date(p.t).getMinutes() !== 0) continue;
    said.push(hhmm(p.t) + " about " + p.expected_free + " free, " + p.free_low + " to " + p.free_high);
  }
  return said.join("; ");
}
