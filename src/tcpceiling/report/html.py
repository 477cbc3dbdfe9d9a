"""One self-contained HTML file from one or more JSON results (the documents the
commands print with --json): inline SVG figures, no JavaScript, no network. Results
of one kind are drawn in the same figures, so two machines, or a host before and
after `tune`, overlay."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from tcpceiling.report import figures
from tcpceiling.units import format_bytes

Doc = dict[str, Any]
Run = tuple[str, Doc]  # (label, document)
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
td, th { border: 1px solid #ddd; padding: .25rem .5rem; vertical-align: top; text-align: left; }
tr.binding td { background: #fde2e2; } .binding { color: #b00; }
figure { margin: 1rem 0; } figcaption { font-size: .85rem; color: #555; }
svg { max-width: 100%; height: auto; }
"""


def label(doc: Doc, name: str = "") -> str:
    host = doc.get("host") or {}
    when = (host.get("time") or "")[:16].replace("T", " ")
    return name or f"{host.get('hostname') or 'host'} {when}".strip()


def fig(svg: str, caption: str, kind: str) -> str:
    text = f"<figcaption>{escape(caption)}</figcaption>"
    return f'<figure class="plot" data-plot="{kind}">{svg}{text}</figure>'


def table(head: Sequence[str], rows: Sequence[tuple[Sequence[str], str]]) -> str:
    """rows: (cells, css class of the row)."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"
        for cells, cls in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


# -- analyze ----------------------------------------------------------------------------
def _role_part(role: str, runs: list[tuple[str, Doc]]) -> str:
    """One role: the bars of every run, then the first run's limits as a table."""
    first = runs[0][1]
    totals = [c for c in first["constraints"] if c["kind"] == "total" and c["ceiling"]]
    limits = [c["id"] for c in totals]
    bars = [
        (name, {c["id"]: c["ceiling"] for c in s["constraints"] if c["ceiling"]}, s["binding"])
        for name, s in runs
    ]
    rows = [
        (
            (c["id"], f"{c['ceiling']:,}", c["symptom"], c["raise"]),
            "binding" if c["id"] == first["binding"] else "",
        )
        for c in sorted(totals, key=lambda c: c["ceiling"])
    ]
    verdicts = "".join(
        f'<p class="verdict">{escape(name)}: about <b>{s["ceiling"] or 0:,}</b> connections; '
        "the first limit reached is "
        f'<strong class="binding">{escape(str(s["binding"]))}</strong>.</p>'
        for name, s in runs
    )
    picture = fig(
        figures.limits_bars(limits, bars), f"{role}: every limit's ceiling", f"limits-{role}"
    )
    return f"<h3>as a {escape(role)}</h3>{verdicts}{picture}" + table(
        ("limit", "connections", "symptom", "how to raise it"), rows
    )


def analyze_section(runs: list[Run]) -> str:
    roles: dict[str, list[tuple[str, Doc]]] = {}
    for name, doc in runs:
        for s in doc["scenarios"]:
            roles.setdefault(s["role"], []).append((name, s))
    return "<h2>The ceiling (analyze)</h2>" + "".join(_role_part(r, rs) for r, rs in roles.items())


# -- probe ------------------------------------------------------------------------------
def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares bytes per connection; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var


def _memory_figure(runs: list[Run]) -> str:
    series = []
    for name, doc in runs:
        curve = doc.get("memory_curve") or []
        for what, col in (("Slab", 2), ("RSS", 3)):
            pts = [(float(p[1]), float(p[col])) for p in curve]
            k = slope(pts)
            if k is not None:
                series.append((f"{name} {what}", [x for x, _ in pts], [y for _, y in pts], k))
    if not series:
        return ""
    caption = (
        "Kernel Slab and the workers' RSS against connections; the fitted slope is the "
        "bytes each connection costs"
    )
    return fig(figures.fitted(series), caption, "memory")


def _timeline_figure(runs: list[Run]) -> str:
    series: list[figures.Series] = []
    for name, doc in runs:
        t = doc.get("timeline") or []
        series.append((f"{name} established", [p[0] for p in t], [p[1] for p in t]))
        if any(p[2] is not None for p in t):
            series.append((f"{name} served", [p[0] for p in t], [p[2] or 0 for p in t]))
    return fig(
        figures.lines(series, "seconds", "connections"), "Connections over the run", "timeline"
    )


def _rate_figure(runs: list[Run]) -> str:
    series: list[figures.Series] = []
    for name, doc in runs:
        t = doc.get("timeline") or []
        pairs = [
            (b[1], (b[1] - a[1]) / (b[0] - a[0])) for a, b in itertools.pairwise(t) if b[0] > a[0]
        ]
        series.append((name, [p[0] for p in pairs], [p[1] for p in pairs]))
    return fig(
        figures.lines(series, "connections established", "opened per second", "o"),
        "Where the open rate bends",
        "open-rate",
    )


def _breakdown_figure(runs: list[Run]) -> str:
    caches = sorted(
        {k for _, d in runs for k in (d.get("per_connection") or {}).get("slab_breakdown", {})}
    )
    if not caches:
        return ""
    parts: dict[str, Sequence[float]] = {
        c: [(d.get("per_connection") or {}).get("slab_breakdown", {}).get(c, 0.0) for _, d in runs]
        for c in caches
    }
    return fig(
        figures.stacked([n for n, _ in runs], parts, "bytes per connection"),
        "Kernel memory per connection by slab cache",
        "slab-breakdown",
    )


def _latency_figure(runs: list[Run], key: str, caption: str, kind: str) -> str:
    data = [(n, d.get(key) or {}) for n, d in runs]
    if not any(v for _, v in data):
        return ""
    pcts = ["p50", "p95", "p99"]
    bars = [(n, [v.get(p) or 0 for p in pcts]) for n, v in data]
    return fig(figures.grouped(pcts, bars, "µs (log scale)", logy=True), caption, kind)


def _errno_figure(runs: list[Run]) -> str:
    names = sorted({k for _, d in runs for k in (d.get("stop") or {}).get("errno_counts", {})})
    if not names:
        return ""
    bars = [
        (n, [(d.get("stop") or {}).get("errno_counts", {}).get(k, 0) for k in names])
        for n, d in runs
    ]
    return fig(figures.grouped(names, bars, "count"), "errno counts of failed connects", "errno")


def _probe_rows(runs: list[Run]) -> str:
    rows = []
    for name, d in runs:
        stop, per = d.get("stop") or {}, d.get("per_connection") or {}
        reason = stop.get("reason", "") + (f" ({stop['side']} side)" if stop.get("side") else "")
        served = d.get("served")
        rows.append((
            (name, f"{d['established']:,}", "" if served is None else f"{served:,}", reason,
             format_bytes(per.get("kernel_bytes") or 0), f"{d.get('rate_per_s', 0):,.0f}/s"),
            "binding" if stop.get("reason") != "target" else "",
        ))  # fmt: skip
    return table(
        ("run", "established", "served", "stopped by", "kernel memory/conn", "open rate"), rows
    )


def probe_section(runs: list[Run]) -> str:
    parts = [
        _probe_rows(runs),
        _timeline_figure(runs),
        _memory_figure(runs),
        _breakdown_figure(runs),
        _rate_figure(runs),
        _latency_figure(runs, "connect_latency_us", "connect() latency percentiles", "latency"),
        _errno_figure(runs),
    ]
    return "<h2>The proof (probe)</h2>" + "".join(parts)


# -- compare-io and rate ---------------------------------------------------------------
def compare_section(runs: list[Run]) -> str:
    """Per model, side by side: memory per connection, setup time, CPU, p99 wake-up
    latency; one bar per model and run."""
    models = sorted({m["io_model"] for _, d in runs for m in d["models"]})

    def values(key: str, sub: str | None = None) -> list[tuple[str, list[float]]]:
        out = []
        for name, d in runs:
            by = {m["io_model"]: m for m in d["models"]}
            row = [by.get(m, {}).get(key) or 0 for m in models]
            if sub:
                row = [(v or {}).get(sub) or 0 for v in (by.get(m, {}).get(key) for m in models)]
            out.append((name, row))
        return out

    charts = [
        ("memory per connection", "bytes", models, values("memory_per_connection")),
        ("time to hold them all", "seconds", models, values("setup_seconds")),
        ("CPU over the setup", "CPU-seconds", models, values("cpu_seconds")),
        ("waking one (p99)", "µs", models, values("wake_latency_us", "p99")),
    ]
    verdicts = "".join(f"<p>{escape(n)}: {escape(d.get('verdict', ''))}</p>" for n, d in runs)
    caption = "Threads vs epoll at the same number of connections"
    return (
        "<h2>Threads vs epoll (compare-io)</h2>"
        + verdicts
        + fig(figures.panels(charts), caption, "compare")
    )


def rate_section(runs: list[Run]) -> str:
    series: list[figures.Series] = [
        (n, list(range(1, len(d["per_second"]) + 1)), d["per_second"]) for n, d in runs
    ]
    rows = [
        (
            (n, f"{d['sustained_per_s']:,.0f}/s", d["stop"]["reason"], d["stop"].get("detail", "")),
            "",
        )
        for n, d in runs
    ]
    return (
        "<h2>New connections per second (rate)</h2>"
        + table(("run", "sustained", "stopped by", "detail"), rows)
        + fig(
            figures.lines(series, "second", "connections completed", "o"),
            "Cycles per second",
            "rate",
        )
        + _latency_figure(
            runs, "connect_latency_us", "connect() latency percentiles", "rate-latency"
        )
    )


def tune_section(runs: list[Run]) -> str:
    """Each limit's ceiling now and after the plan, the changes, what no setting does."""
    parts = ["<h2>The plan (tune)</h2>"]
    for name, d in runs:
        plan = d["plan"]
        before, after = plan["before"], plan["after"]
        limits = [r["limit"] for r in plan["rows"]]
        bars = [
            (
                "now",
                {r["limit"]: r["before"] for r in plan["rows"] if r["before"]},
                before["binding"],
            ),
            (
                "after the plan",
                {r["limit"]: r["after"] for r in plan["rows"] if r["after"]},
                after["binding"],
            ),
        ]
        parts.append(
            f'<p class="verdict">{escape(name)}: {plan["target"]:,} connections as a '
            f"{escape(plan['role'])}; now the first limit reached is "
            f'<strong class="binding">{escape(str(before["binding"]))}</strong>.</p>'
        )
        parts.append(
            fig(figures.limits_bars(limits, bars), "each limit now and after the plan", "tune")
        )
        rows = [
            ((c["limit"], c["key"], c["now"] or "—", c["value"], c["why"]), "")
            for c in plan["changes"]
        ]
        parts.append(table(("limit", "setting", "now", "to", "why"), rows))
        needs = [((q["limit"], q["text"]), "binding") for q in plan["requirements"]]
        if needs:
            parts.append(table(("cannot be changed by a setting", ""), needs))
    return "".join(parts)


SECTIONS = {
    "analyze": analyze_section,
    "probe": probe_section,
    "compare-io": compare_section,
    "rate": rate_section,
    "tune": tune_section,
}


def page(named: Sequence[tuple[str, Doc]]) -> str:
    """The report: one section per kind of result, every result of a kind overlaid."""
    by_kind: dict[str, list[Run]] = {}
    seen: dict[str, int] = {}
    for name, doc in named:
        text = label(doc, name)
        seen[text] = seen.get(text, 0) + 1
        unique = text if seen[text] == 1 else f"{text} ({seen[text]})"
        by_kind.setdefault(doc["kind"], []).append((unique, doc))
    sources = "".join(
        f"<li>{escape(label(d, n))}: {escape(d['kind'])}, "
        f"tcpceiling {escape(d['tool']['version'])}</li>"
        for n, d in named
    )
    body = "".join(SECTIONS[k](runs) for k, runs in by_kind.items() if k in SECTIONS)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>tcpceiling report</title><style>{STYLE}</style></head><body>"
        f'<h1>tcpceiling report</h1><ul class="sources">{sources}</ul>{body}</body></html>\n'
    )


def write_page(path: Path, named: Sequence[tuple[str, Doc]]) -> None:
    """The report to `path`, written beside it and renamed over it."""
    tmp = path.with_name(f".{path.name}.tcpceiling-tmp")
    tmp.write_text(page(named))
    tmp.replace(path)
