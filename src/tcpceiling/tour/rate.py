"""Capacity against rate: how many connections fit at once (the stomach) is not how
many new ones a minute lets through. In the 10-port range every closed connection
keeps its port in TIME_WAIT for 60 s on the side that closed first, so the same
range that holds 10 at once sustains 10 per 60 s. `rate` runs connect/close cycles
for a TIME_WAIT period and more, so the long-run rate is measured, not assumed."""

from __future__ import annotations

from functools import partial

from tcpceiling.analysis import whatif
from tcpceiling.analysis.analyze import analyze
from tcpceiling.analysis.model import build_scenarios
from tcpceiling.rate.config import ChurnConfig, ChurnResult
from tcpceiling.rate.run import run_churn
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.child import Child
from tcpceiling.tour.model import Measure, Step, Trial
from tcpceiling.tour.ports import PORT_RANGE

TW_REUSE = ("net.ipv4.tcp_tw_reuse", "0")  # 1 would let a client reuse after 1 s
#: One TIME_WAIT period and what the timer adds: TCP_TIMEWAIT_LEN is 60 s, but the
#: timer wheel fires a timer that far out at the next multiple of its level's
#: granularity, 512 jiffies (2.048 s at HZ 250; kernel/time/timer.c,
#: calc_wheel_index). Measured here: a port came back 61.43 to 62.01 s after its
#: close (benchmarks/time_wait_length.py), so a 62 s run sometimes saw no port come
#: back at all. 64 s leaves the first cycles about 2 s to start on a loaded host.
SECONDS = 64.0
TIMEOUT_S = SECONDS + 60


def start() -> Child[ChurnResult]:
    """The churn runs in a child for its minute while the other steps go on."""
    cfg = ChurnConfig(duration=SECONDS, workers=1, close="client", isolate=True,
                      sysctls=(PORT_RANGE, TW_REUSE))  # fmt: skip
    return Child(partial(run_churn, cfg))


def step(child: Child[ChurnResult], held: Trial) -> Step:
    r = child.result(TIMEOUT_S)
    unless_interrupted(r.stop.reason)
    settings = [whatif.parse_setting(f"{k}={v}") for k, v in (PORT_RANGE, TW_REUSE)]
    s = analyze(build_scenarios("client"), settings=settings).scenarios[0]
    rate = Trial(
        "new connections per second, long-run",
        Measure(s.rate_ceiling, "connections/s", s.rate_binding,
                "analyze: 10 ports / 60 s of TIME_WAIT"),
        Measure(r.sustained_per_s, "connections/s", r.stop.reason,
                f"rate: {r.completed} cycles in {r.duration:g} s ({r.sustained_from})"),
        ", ".join(f"connect(): {k} x{v:,}" for k, v in r.errno_counts.items()) or "none",
        0.10,  # 10 cycles at the start and 10 a period later: counted over 64 s, not 60
    )  # fmt: skip
    capacity = Trial("held at once", held.predicted, held.proven, held.observed)
    first = ", ".join(str(n) for n in r.per_second[:5])
    return Step(
        "rate",
        "Capacity against rate: the stomach and the minute",
        "The range that holds 10 connections at once lets 10 new ones through per 60 s "
        "once each closes first: capacity is what fits, rate is what TIME_WAIT gives "
        "back (tcp_tw_reuse, more source addresses or the server closing first raise it).",
        (capacity, rate),
        reads=(
            ("cycles in the first seconds", first),
            ("TIME_WAIT left at the end, by side",
             ", ".join(f"{k} {v}" for k, v in r.time_wait.items())),
        ),
    )  # fmt: skip
