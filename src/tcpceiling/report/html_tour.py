"""The tour in the HTML report: every prediction beside its proof first (a table and
a figure), then the summary table, then each step with what it read and its lesson."""

from __future__ import annotations

from html import escape
from typing import Any

from tcpceiling.report import figures
from tcpceiling.report.html_parts import Run, fig, table
from tcpceiling.report.tour import number
from tcpceiling.tour.model import Measure

Doc = dict[str, Any]


def _value(m: Doc) -> str:
    """A measure of the document, written as the terminal writes it."""
    return number(Measure(**m))


def _agreement(t: Doc) -> str:
    if t.get("error") is None:
        return "not comparable"
    if t["error"] == 0:
        return "exact"
    return f"{t['error']:+.1%}" + ("" if t.get("agrees") else f", past ±{t['tolerance']:.0%}")


def _versus(name: str, doc: Doc) -> str:
    rows = [
        ((s["id"], t["name"], _value(t["predicted"]), _value(t["proven"]), _agreement(t),
          t["observed"]), "" if t.get("agrees") is not False else "binding")
        for s in doc["steps"] for t in s["trials"]
    ]  # fmt: skip
    head = ("step", "trial", "predicted (analyze)", "proven", "agreement", "when full")
    return f"<h3>{escape(name)}</h3>" + '<div class="versus">' + table(head, rows) + "</div>"


def _figure(runs: list[Run]) -> str:
    """Predicted and proven side by side for the trials that count connections."""
    name, doc = runs[0]
    trials = [t for s in doc["steps"] for t in s["trials"]
              if t["predicted"]["unit"] == t["proven"]["unit"] == "connections"
              and t["predicted"]["value"] and t["proven"]["value"]]  # fmt: skip
    if not trials:
        return ""
    svg = figures.versus([t["name"] for t in trials],
                         [float(t["predicted"]["value"]) for t in trials],
                         [float(t["proven"]["value"]) for t in trials])  # fmt: skip
    return fig(svg, f"{name}: each prediction beside its proof", "tour")


def _steps(doc: Doc) -> str:
    parts = []
    for s in doc["steps"]:
        reads = (
            table(("read here", ""), [((w, v), "") for w, v in s["reads"]]) if s["reads"] else ""
        )
        parts.append(f"<h3>{escape(s['title'])} ({s['seconds']:.1f} s)</h3>"
                     f"<p>{escape(s['lesson'])}</p>{reads}")  # fmt: skip
    return "".join(parts)


def tour_section(runs: list[Run]) -> str:
    first = runs[0][1]
    summary = table(
        ("resource", "this machine's capacity", "one connection costs", "when full"),
        [((r["resource"], r["capacity"], r["cost"], r["when_full"]), "") for r in first["table"]],
    )
    return (
        "<h2>How many connections, and what stops them: the walk, predicted and proven "
        "(tour)</h2>"
        + "".join(_versus(n, d) for n, d in runs)
        + _figure(runs)
        + "<h3>What limits a connection here</h3>"
        + summary
        + _steps(first)
    )
