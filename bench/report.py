"""The figure / target / ratio table every benchmark reports into.

A figure is one measured number with its unit. A target is optional: ``("<=", 20)`` means the
figure passes when it is at most 20. The ratio column is value / target for "<=" targets and
target / value for ">=" targets, so below 1.0 is always inside the target and above 1.0 is how
far outside. Figures without a target are printed as "info" (context for the ones that have one).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field


@dataclass
class Figure:
    """One measured number."""

    name: str
    value: float | None
    unit: str = ""
    op: str | None = None  # "<=" or ">=" or None (information only)
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How close to the target: ≤ 1.0 is inside it (see the module doc)."""
        if self.op is None or self.target is None or self.value is None:
            return None
        if self.op == "<=":
            return self.value / self.target if self.target else None
        return self.target / self.value if self.value else float("inf")

    @property
    def verdict(self) -> str:
        """PASS, MISS, info, or n/a (not measured)."""
        if self.op is None:
            return "info"
        if self.value is None:
            return "n/a"
        ok = self.value <= self.target if self.op == "<=" else self.value >= self.target
        return "PASS" if ok else "MISS"


def _num(value: float | None) -> str:
    """A number with sensible precision for the table."""
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Report:
    """Figures in the order they were measured; printed as they come and as a table at the end."""

    figures: list[Figure] = field(default_factory=list)
    out: object = None
    meta: dict = field(default_factory=dict)

    def add(self, name: str, value: float | None, unit: str = "", op: str | None = None,
            target: float | None = None, note: str = "") -> Figure:
        """Record one figure and print its line at once (a long run shows progress)."""
        figure = Figure(name, value, unit, op, target, note)
        self.figures.append(figure)
        print(self.line(figure), file=self.out or sys.stdout, flush=True)
        return figure

    @staticmethod
    def header() -> str:
        """The column titles."""
        return f"{'figure':<52} {'value':>11} {'unit':<6} {'target':>12} {'ratio':>6}  verdict"

    @staticmethod
    def line(f: Figure) -> str:
        """One figure as one line: name, value, unit, target, ratio, verdict."""
        target = f"{f.op} {_num(f.target)}" if f.op else ""
        ratio = _num(f.ratio) if f.ratio is not None else ""
        note = f"  ({f.note})" if f.note else ""
        return f"{f.name:<52} {_num(f.value):>11} {f.unit:<6} {target:>12} {ratio:>6}  {f.verdict}{note}"

    def table(self) -> str:
        """Every figure, one line each, with a header and a PASS/MISS count."""
        lines = [self.header(), "-" * len(self.header())]
        lines += [self.line(f) for f in self.figures]
        verdicts = [f.verdict for f in self.figures]
        lines.append(
            f"{verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS, "
            f"{verdicts.count('info')} info, {verdicts.count('n/a')} not measured"
        )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as Markdown (for docs/benchmarks.md)."""
        rows = ["| figure | value | unit | target | ratio | verdict |", "| --- | ---: | --- | ---: | ---: | --- |"]
        for f in self.figures:
            target = f"{f.op} {_num(f.target)}" if f.op else ""
            ratio = _num(f.ratio) if f.ratio is not None else ""
            note = f" ({f.note})" if f.note else ""
            rows.append(f"| {f.name} | {_num(f.value)} | {f.unit} | {target} | {ratio} | {f.verdict}{note} |")
        return "\n".join(rows)

    def to_json(self) -> str:
        """Everything, machine-readable (bench/results/)."""
        return json.dumps({"meta": self.meta, "figures": [asdict(f) | {"ratio": f.ratio, "verdict": f.verdict}
                                                          for f in self.figures]}, indent=1)
