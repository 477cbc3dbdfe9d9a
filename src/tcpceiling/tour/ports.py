"""The 4-tuple: a connection is (source IP, source port, destination IP, destination
port), so a client's ephemeral ports run out per (source, destination, port), not
per host. A 10-port range (60000-60009, set inside each run's own namespace) makes
it countable: one tuple holds 10, and another destination port or another source
address adds 10 more each."""

from __future__ import annotations

from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.coordinator import run as run_probe
from tcpceiling.probe.run.result import ProbeResult
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.model import Measure, Step, Trial

LOW, HIGH = 60000, 60009
PORT_RANGE = ("net.ipv4.ip_local_port_range", f"{LOW} {HIGH}")
#: (what is added, source addresses, destination ports)
TRIALS = (
    ("one source, one destination port", ("127.0.0.1",), 1),
    ("another destination port", ("127.0.0.1",), 2),
    ("another source address instead", ("127.0.0.1", "127.0.0.2"), 1),
    ("two sources x two ports", ("127.0.0.1", "127.0.0.2"), 2),
)


def trial(name: str, sources: tuple[str, ...], ports: int) -> tuple[Trial, ProbeResult]:
    """probe --target max in a namespace of its own with the 10-port range: analyze's
    prediction for that namespace (the probe makes it) against what it held."""
    cfg = ProbeConfig(target=None, sysctls=(PORT_RANGE,), sources=sources, sink_ports=ports,
                      isolate=True, workers=1)  # fmt: skip
    r = run_probe(cfg)
    unless_interrupted(r.stop.reason)
    predicted = Measure(r.predicted.ceiling, "connections", r.predicted.binding,
                        "analyze, in the run's namespace")  # fmt: skip
    proven = Measure(r.established, "connections", r.stop.reason,
                     f"probe: {len(sources)} source(s) -> {ports} sink port(s)")  # fmt: skip
    observed = f"connect(): {r.stop.errno}" if r.stop.errno else r.stop.reason
    return Trial(name, predicted, proven, observed), r


def step() -> Step:
    trials = tuple(trial(*t)[0] for t in TRIALS)
    return Step(
        "ports",
        "The 4-tuple: ephemeral ports per (source, destination, port)",
        f"{HIGH - LOW + 1} ports hold {HIGH - LOW + 1} connections to one destination; "
        "each other (source, destination, port) tuple has its own 10: the client's "
        "ceiling grows with destinations and source addresses, not with the range alone.",
        trials,
        reads=(("ip_local_port_range (in each run's namespace)", f"{LOW} {HIGH}"),),
    )
