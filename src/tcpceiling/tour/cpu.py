"""CPU: an idle connection costs no CPU, a busy one costs its messages. The probe
holds connections that each send a message R times a second, the sink echoes, and
the sink's CPU per message is measured (psutil); analyze turns it into the ceiling it
implies: cores x --cpu-target / (R x CPU per message)."""

from __future__ import annotations

from tcpceiling.analysis.analyze import analyze
from tcpceiling.analysis.model import build_scenarios
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.coordinator import run as run_probe
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.model import Measure, Step, Trial

CONNECTIONS, RATE, HOLD_S = 1000, 20.0, 3.0


def step() -> Step:
    r = run_probe(ProbeConfig(target=CONNECTIONS, message_rate=RATE, hold=HOLD_S, isolate=True))
    unless_interrupted(r.stop.reason)
    t = r.traffic
    us = t.cpu_us_per_message if t else None
    result = analyze(build_scenarios("server", message_rate=RATE, cpu_us_per_message=us))
    cpu = result.scenarios[0].constraint("cpu")
    measured = f"{t.messages:,} echoes over {t.seconds:.1f} s" if t else "no traffic phase"
    return Step(
        "cpu",
        "CPU: what a busy connection costs",
        f"Held idle, a connection costs no CPU; at {RATE:g} messages a second each, the "
        "cores bound how many can be served. Past it nothing fails: replies slow down.",
        (
            Trial(
                f"{CONNECTIONS:,} connections, {RATE:g} messages/s each",
                Measure(cpu.ceiling, "connections", "cpu", _how(cpu.capacity, us)),
                Measure(us, "µs per message", "cpu", f"the sink's CPU: {measured}"),
                "latency grows (not driven to its end here)",
            ),
        ),
        reads=(("CPU per message, measured", f"{us:.1f} µs" if us else "not measured"),),
    )


def _how(capacity: float | None, us: float | None) -> str:
    """analyze's arithmetic: usable CPU-µs per second / (R x µs per message)."""
    if capacity is None or us is None:
        return "analyze: no CPU per message measured"
    return f"analyze: {capacity / 1e6:g} CPU-s/s usable / ({RATE:g}/s x {us:.1f} µs)"
