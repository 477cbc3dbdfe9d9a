"""Rendering a churn run (`tcpceiling rate`) for people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tcpceiling.rate.config import ChurnResult


def _timeline(per_second: tuple[int, ...]) -> str:
    shown = ", ".join(f"{n:,}" for n in per_second[:12])
    return shown + (" …" if len(per_second) > 12 else "")


def render_churn(r: ChurnResult, console: Console) -> None:
    asked = "as fast as possible" if r.rate_asked is None else f"{r.rate_asked:,.0f}/s asked"
    verdict = "held the asked rate" if r.stop.reason == "target" else f"limit: {r.stop.reason}"
    side = f" ({r.stop.side} side)" if r.stop.side else ""
    how = {
        "run": "sustained",
        "measured": "sustained, long-run (measured a TIME_WAIT period past the shortage)",
        "predicted": "sustained, long-run (predicted: ports / 60 s TIME_WAIT; the run was "
        "too short to see it)",
    }[r.sustained_from]
    t = Table(
        title=f"{r.sustained_per_s:,.2f} new connections/s {how} ({asked}, close "
        f"{r.close}) — {verdict}{side}",
        title_justify="left",
        show_header=False,
    )
    t.add_column(style="bold")
    t.add_column()
    lat = r.connect_latency_us
    cpu = ", ".join(
        f"{side} {v:,.1f} µs" if v is not None else f"{side} —"
        for side, v in r.cpu_us_per_cycle.items()
    )
    rows = [
        ("cycles", f"{r.completed:,} in {r.duration:g} s ({r.burst_per_s:,.1f}/s over the run)"),
        (
            "after the ports ran out",
            f"{r.steady_per_s:,.2f}/s" if r.steady_per_s is not None else "— (needs 60 s past)",
        ),
        ("ramp (workers: /s)", ", ".join(f"{w}: {v:,.0f}" for w, v in r.steps) or "—"),
        ("per second", _timeline(r.per_second)),
        ("connect latency µs", f"p50 {lat.get('p50')}, p99 {lat.get('p99')}"),
        (
            "p99 per second µs",
            ", ".join(f"{s.get('p99') or '—'}" for s in r.latency_per_second_us[:12]),
        ),
        ("CPU per cycle", cpu),
        ("errors", ", ".join(f"{k}: {v:,}" for k, v in r.errno_counts.items()) or "none"),
        ("TIME_WAIT at end", f"client {r.time_wait['client']:,}, server {r.time_wait['server']:,}"),
        (
            "counters (delta)",
            ", ".join(f"{k} +{v:,}" for k, v in r.counters.items() if v) or "none moved",
        ),
    ]
    if r.stop.detail:
        rows.append(("why", r.stop.detail))
    rows.append(("namespace", r.netns or "the host's (not isolated)"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
