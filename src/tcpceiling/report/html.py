"""One self-contained HTML file from one or more JSON results (the documents the
commands print with --json): inline SVG figures, no JavaScript, no network. Results
of one kind are drawn in the same figures, so two machines, or a host before and
after `tune`, overlay."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape
from pathlib import Path

from tcpceiling.report import figures
from tcpceiling.report.html_parts import STYLE, Doc, Run, fig, label, table
from tcpceiling.report.html_tour import tour_section
from tcpceiling.units import format_bytes


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
        if len(curve) < MIN_CURVE_POINTS:
            continue
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


#: Fewer points than this draw a table, not a curve (two points are not a curve).
MIN_CURVE_POINTS = 5


def _timeline_figure(runs: list[Run]) -> str:
    series: list[figures.Series] = []
    for name, doc in runs:
        t = doc.get("timeline") or []
        series.append((f"{name} established", [p[0] for p in t], [p[1] for p in t]))
        if any(p[2] is not None for p in t):
            series.append((f"{name} served", [p[0] for p in t], [p[2] or 0 for p in t]))
    if max((len(s[1]) for s in series), default=0) < MIN_CURVE_POINTS:
        return _timeline_table(runs)
    return fig(
        figures.lines(series, "seconds", "connections"), "Connections over the run", "timeline"
    )


def _timeline_table(runs: list[Run]) -> str:
    """A short run's few samples, as they are."""
    rows = [
        ((name, f"{p[0]:.1f} s", f"{p[1]:,}", "" if p[2] is None else f"{p[2]:,}"), "")
        for name, doc in runs
        for p in doc.get("timeline") or []
    ]
    if not rows:
        return ""
    head = ("run", "time", "established", "served")
    return '<div class="timeline-table">' + table(head, rows) + "</div>"


def _rate_figure(runs: list[Run]) -> str:
    series: list[figures.Series] = []
    for name, doc in runs:
        t = doc.get("timeline") or []
        pairs = [
            (b[1], (b[1] - a[1]) / (b[0] - a[0])) for a, b in itertools.pairwise(t) if b[0] > a[0]
        ]
        series.append((name, [p[0] for p in pairs], [p[1] for p in pairs]))
    if max((len(s[1]) for s in series), default=0) < MIN_CURVE_POINTS:
        return ""
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


def _latency_figure(runs: list[Run], caption: str, kind: str) -> str:
    """connect() latency as a distribution (the probe's merged histogram), its p50
    and p99 marked; a result without one (older) gives its percentiles as a table."""
    hists = [(n, [(float(e), int(c)) for e, c in d.get("connect_latency_histogram") or []])
             for n, d in runs]  # fmt: skip
    if any(h for _, h in hists):
        svg = figures.distribution([(n, h) for n, h in hists if h], "connect() µs (log scale)")
        return fig(svg, caption, kind)
    rows = [
        ((n, *(f"{(d.get('connect_latency_us') or {}).get(p) or 0:,.1f}"
               for p in ("p50", "p95", "p99"))), "")
        for n, d in runs
    ]  # fmt: skip
    return table(("run", "p50 µs", "p95 µs", "p99 µs"), rows)


def _errno_figure(runs: list[Run]) -> str:
    names = sorted({k for _, d in runs for k in (d.get("stop") or {}).get("errno_counts", {})})
    if not names:
        return ""
    bars = [
        (n, [(d.get("stop") or {}).get("errno_counts", {}).get(k, 0) for k in names])
        for n, d in runs
    ]
    return fig(figures.grouped(names, bars, "count"), "errno counts of failed connects", "errno")


def _versus(predicted: float | None, proven: float | None) -> str:
    if not predicted or proven is None:
        return ""
    share = (proven - predicted) / predicted
    return "exact" if share == 0 else f"{share:+.1%}"


def _probe_lead(runs: list[Run]) -> str:
    """What analyze predicted beside what the probe proved: the ceiling and its
    limit, then kernel memory per connection."""
    rows = []
    for name, d in runs:
        pred, stop, per = (
            d.get("predicted") or {},
            d.get("stop") or {},
            d.get("per_connection") or {},
        )
        proven = d["served"] if d.get("served") is not None else d["established"]
        what = "served" if d.get("served") is not None else "established"
        side = f" ({stop['side']} side)" if stop.get("side") else ""
        target = stop.get("reason") == "target"
        rows.append(
            (
                (
                    name,
                    "ceiling",
                    f"{pred['ceiling']:,} ({pred.get('binding')})" if pred.get("ceiling") else "—",
                    f"{proven:,} {what}, stopped by {stop.get('reason', '')}{side}",
                    "target reached first" if target else _versus(pred.get("ceiling"), proven),
                ),
                "" if target else "binding",
            )
        )
        pb, kb = pred.get("bytes_per_connection"), per.get("kernel_bytes")
        rows.append(
            (
                (
                    name,
                    "kernel memory per connection",
                    format_bytes(pb) if pb else "—",
                    format_bytes(kb) if kb else "—",
                    _versus(pb, kb),
                ),
                "",
            )
        )
    head = ("run", "", "predicted (analyze)", "proven (probe)", "proven vs predicted")
    return '<div class="versus">' + table(head, rows) + "</div>"


def _probe_rows(runs: list[Run]) -> str:
    rows = []
    for name, d in runs:
        served = d.get("served")
        rows.append((
            (name, f"{d['established']:,}", "" if served is None else f"{served:,}",
             f"{d.get('rate_per_s', 0):,.0f}/s", f"{d.get('open_seconds', 0):.2f} s"), "",
        ))  # fmt: skip
    return table(("run", "established", "served", "open rate", "opening took"), rows)


def probe_section(runs: list[Run]) -> str:
    parts = [
        _probe_lead(runs),
        _probe_rows(runs),
        _timeline_figure(runs),
        _memory_figure(runs),
        _breakdown_figure(runs),
        _rate_figure(runs),
        _latency_figure(runs, "connect() latency: the distribution, p50 and p99", "latency"),
        _errno_figure(runs),
    ]
    return "<h2>Predicted and proven (probe)</h2>" + "".join(parts)


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


def _rate_lead(runs: list[Run]) -> str:
    rows = []
    for n, d in runs:
        pred = d.get("predicted_per_s")
        binding = d.get("predicted_binding") or "no rate limit found"
        rows.append(((
            n, f"{pred:,.3g}/s ({binding})" if pred else f"— ({binding})",
            f"{d['sustained_per_s']:,.3g}/s ({d.get('sustained_from', 'run')}), stopped by "
            f"{d['stop']['reason']}",
            _versus(pred, d["sustained_per_s"]), d["stop"].get("detail", ""),
        ), ""))  # fmt: skip
    head = ("run", "predicted (analyze)", "proven (rate)", "proven vs predicted", "detail")
    return '<div class="versus">' + table(head, rows) + "</div>"


def rate_section(runs: list[Run]) -> str:
    series: list[figures.Series] = [
        (n, list(range(1, len(d["per_second"]) + 1)), d["per_second"]) for n, d in runs
    ]
    cycles = (
        fig(figures.lines(series, "second", "connections completed", "o"), "Cycles per second",
            "rate")
        if max(len(d["per_second"]) for _, d in runs) >= MIN_CURVE_POINTS
        else table(("run", "cycles per second"),
                   [((n, ", ".join(str(c) for c in d["per_second"])), "") for n, d in runs])
    )  # fmt: skip
    return (
        "<h2>New connections per second: predicted and proven (rate)</h2>"
        + _rate_lead(runs)
        + cycles
        + _latency_figure(runs, "connect() latency: the distribution, p50 and p99", "rate-latency")
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
    "tour": tour_section,
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
