"""Figures for the HTML report, as inline SVG strings (matplotlib's object API on a
Figure of its own: no pyplot state, no display). Each takes plain series, one per
result, so several results overlay (two machines, before and after `tune`)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tcpceiling.units import format_bytes

#: Text stays text in the SVG (searchable in the DOM, sharp at any zoom).
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "tcpceiling"  # the same figure, the same bytes
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
BINDING = "#d62728"
Series = tuple[str, Sequence[float], Sequence[float]]  # (label, x, y)


def number(v: float) -> str:
    """A bar's label: 56,920 or 0.406 (never 5.69e+04)."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def figure(width: float = 7.5, height: float = 3.6) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def limits_bars(
    limits: Sequence[str], runs: Sequence[tuple[str, dict[str, int], str | None]]
) -> str:
    """One horizontal bar per limit (ceiling, log axis) per run; each run's binding
    limit in red, labelled."""
    fig = figure(7.5, 0.45 * len(limits) * max(1, len(runs)) + 1.2)
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(runs))
    for i, (label, ceilings, binding) in enumerate(runs):
        ys = [k + i * height for k in range(len(limits))]
        xs = [ceilings.get(lim, 0) for lim in limits]
        colors = [BINDING if lim == binding else COLORS[i % len(COLORS)] for lim in limits]
        ax.barh(ys, xs, height=height * 0.9, color=colors, label=label)
        for y, x in zip(ys, xs, strict=True):
            if x:
                ax.text(x, y, f" {x:,}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yticks([k + height * (len(runs) - 1) / 2 for k in range(len(limits))], limits)
    ax.invert_yaxis()
    ax.set_xlabel("connections this limit allows (log scale); red: the first one reached")
    if len(runs) > 1:  # the runs' own colours (a run's first bar may be its red binding one)
        handles = [Patch(color=COLORS[i % len(COLORS)], label=r[0]) for i, r in enumerate(runs)]
        handles.append(Patch(color=BINDING, label="the binding limit"))
        ax.legend(
            handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8
        )
    return svg(fig)


def lines(
    series: Sequence[Series], xlabel: str, ylabel: str, marker: str = "", logy: bool = False
) -> str:
    fig = figure()
    ax = fig.add_subplot()
    for i, (label, x, y) in enumerate(series):
        ax.plot(x, y, marker=marker, label=label, color=COLORS[i % len(COLORS)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)  # a rate's small wobble must not look like a fall
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return svg(fig)


def fitted(series: Sequence[tuple[str, Sequence[float], Sequence[float], float]]) -> str:
    """Bytes against connections with the fitted slope (bytes per connection) in the
    legend and drawn as a line."""
    fig = figure()
    ax = fig.add_subplot()
    for i, (label, x, y, slope) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        ax.plot(x, [v / 2**20 for v in y], "o", color=color, markersize=3)
        if x:
            base = y[0] - slope * x[0]
            fit = [(base + slope * v) / 2**20 for v in (x[0], x[-1])]
            ax.plot(
                (x[0], x[-1]), fit, "-", color=color, label=f"{label}: {format_bytes(slope)}/conn"
            )
    ax.set_xlabel("connections established")
    ax.set_ylabel("MiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return svg(fig)


def stacked(labels: Sequence[str], parts: dict[str, Sequence[float]], ylabel: str) -> str:
    """One stacked bar per run (parts: name -> value per run)."""
    fig = figure(7.5, 3.4)
    ax = fig.add_subplot()
    bottom = [0.0] * len(labels)
    for i, (name, values) in enumerate(parts.items()):
        ax.bar(labels, values, bottom=bottom, label=name, color=f"C{i % 10}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    return svg(fig)


def _bars(ax: Axes, groups: Sequence[str], runs: Sequence[tuple[str, Sequence[float]]]) -> None:
    """One group of bars per x label, one bar per run, each labelled with its value."""
    width = 0.8 / max(1, len(runs))
    for i, (label, values) in enumerate(runs):
        xs = [k + i * width for k in range(len(groups))]
        ax.bar(xs, values, width=width * 0.9, label=label, color=COLORS[i % len(COLORS)])
        for x, v in zip(xs, values, strict=True):
            ax.text(x, v, number(v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks([k + width * (len(runs) - 1) / 2 for k in range(len(groups))], groups)


def grouped(
    groups: Sequence[str],
    runs: Sequence[tuple[str, Sequence[float]]],
    ylabel: str,
    logy: bool = False,
) -> str:
    """Bars side by side: one group per x label, one bar per run."""
    fig = figure(7.5, 3.2)
    ax = fig.add_subplot()
    _bars(ax, groups, runs)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return svg(fig)


def panels(
    charts: Sequence[tuple[str, str, Sequence[str], Sequence[tuple[str, Sequence[float]]]]],
) -> str:
    """Small bar charts side by side: (title, unit, x labels, runs of values)."""
    fig = figure(3.0 * len(charts), 3.0)
    axes = fig.subplots(1, len(charts), squeeze=False)[0]
    for ax, (title, unit, groups, runs) in zip(axes, charts, strict=True):
        _bars(ax, groups, runs)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
    if len(charts[0][3]) > 1:
        axes[0].legend(fontsize=7)
    return svg(fig)


def _percentile(buckets: Sequence[tuple[float, int]], p: float) -> float | None:
    """The p-th percentile of (upper edge, count) buckets: the edge of its bucket."""
    total = sum(n for _, n in buckets)
    if not total:
        return None
    rank, seen = math.ceil(total * p / 100), 0
    for edge, n in buckets:
        seen += n
        if seen >= rank:
            return edge
    return buckets[-1][0]


def distribution(series: Sequence[tuple[str, Sequence[tuple[float, int]]]], xlabel: str) -> str:
    """Each run's latency histogram (log-spaced buckets, as the probe merges them) as
    the share of samples per bucket on a log axis, its p50 (dashed) and p99 (dotted)
    marked and labelled."""
    fig = figure(7.5, 3.2)
    ax = fig.add_subplot()
    for i, (label, buckets) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        total = sum(n for _, n in buckets) or 1
        ax.step([e for e, _ in buckets], [n / total for _, n in buckets], where="pre",
                color=color, label=f"{label} ({total:,})")  # fmt: skip
        for p, style in ((50, "--"), (99, ":")):
            x = _percentile(buckets, p)
            if x is not None:
                ax.axvline(x, color=color, linestyle=style, linewidth=0.9)
                ax.text(x, ax.get_ylim()[1] * 0.95, f" p{p} {number(x)}", color=color,
                        fontsize=7, va="top")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of samples")
    ax.legend(fontsize=8)
    return svg(fig)


def versus(names: Sequence[str], predicted: Sequence[float], proven: Sequence[float]) -> str:
    """Each prediction and its proof as a pair of horizontal bars on a log axis, the
    trial's name beside them (long names stay readable), the values at the ends."""
    fig = figure(7.5, 0.5 * len(names) + 1.0)
    ax = fig.add_subplot()
    ys = list(range(len(names)))
    for k, (label, values) in enumerate((("predicted", predicted), ("proven", proven))):
        pos = [y + k * 0.4 for y in ys]
        ax.barh(pos, values, height=0.38, color=COLORS[k], label=label)
        for y, v in zip(pos, values, strict=True):
            ax.text(v, y, f" {number(v)}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_yticks([y + 0.2 for y in ys], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("connections (log scale)")
    ax.legend(fontsize=8, loc="lower right")
    return svg(fig)
