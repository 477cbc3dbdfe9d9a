"""CPU: the last wall, set by what each connection does (docs/limits.md §10).

An idle connection costs no CPU after its handshake. An active one costs
message_rate x (CPU per message) CPU-seconds every second, so the CPUs at the
target utilisation carry

    ceiling = cores x cpu_target / (message_rate x cpu_per_message)

CPU per message is measured, never assumed: `tcpceiling probe --measure-cpu --json`
times the sink's CPU (user + system, psutil) while it echoes a traffic profile on
held connections; `analyze --cost-from` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.model import Constraint


def cpu(ctx: Context) -> Constraint:
    sc, cores = ctx.scenario, ctx.snap.system.cpus
    base = Constraint(
        id="cpu",
        capacity_unit="CPU-microseconds per second",
        capacity=None,
        in_use=None,
        per_connection=None,
        ceiling=None,
        symptom="latency grows, then timeouts: run queues and socket backlogs fill",
        raise_="more or faster cores; fewer or cheaper messages per connection (batching, "
        "longer heartbeats); spread connections over more hosts",
        source=f"{ctx.sys('devices/system/cpu/online')}; CPU per message from probe",
    )
    if cores is None:
        return replace(base, note="the number of online CPUs is unknown on this tree")
    capacity = cores * sc.cpu_target * 1e6
    base = replace(base, capacity=round(capacity))
    if sc.message_rate <= 0:
        return replace(base, note="idle connections: no CPU after the handshake "
                       "(give --message-rate R for active ones)")  # fmt: skip
    if sc.cpu_us_per_message is None:
        return replace(base, note="no CPU per message: measure it with `tcpceiling probe "
                       "--measure-cpu --json > p.json`, then --cost-from p.json")  # fmt: skip
    per_conn = sc.message_rate * sc.cpu_us_per_message  # CPU-us per second
    return replace(
        base,
        per_connection=per_conn,
        ceiling=math.floor(capacity / per_conn),
        note=f"{cores} CPUs x {sc.cpu_target} / ({sc.message_rate:g} msg/s x "
        f"{sc.cpu_us_per_message:.2f} us per message)",
        details={
            "cores": cores,
            "cpu_target": sc.cpu_target,
            "message_rate": sc.message_rate,
            "message_bytes": sc.message_bytes,
            "cpu_us_per_message": sc.cpu_us_per_message,
        },
    )


def cpu_churn(ctx: Context) -> Constraint:
    """New connections per second the CPUs carry: cores x target / CPU per cycle,
    the cycle (connect, accept, close) measured by `tcpceiling rate --json` with
    both ends on this host, so for one side it is an upper bound of its cost."""
    sc, cores = ctx.scenario, ctx.snap.system.cpus
    base = Constraint(
        id="cpu_churn",
        capacity_unit="CPU-microseconds per second",
        capacity=None,
        in_use=None,
        per_connection=None,
        ceiling=None,
        symptom="connect latency grows, then SYN retransmits and ListenOverflows",
        raise_="more or faster cores; keep connections alive (reuse them) instead of "
        "one per request",
        source=f"{ctx.sys('devices/system/cpu/online')}; CPU per cycle from "
        "`tcpceiling rate --json`",
        kind="rate",
        unit="new connections per second",
    )
    if cores is None:
        return replace(base, note="the number of online CPUs is unknown on this tree")
    capacity = cores * sc.cpu_target * 1e6
    base = replace(base, capacity=round(capacity))
    if sc.cpu_us_per_cycle is None:
        return replace(
            base,
            note="unknown: measure the CPU per connection cycle with `tcpceiling rate "
            "--close rst --json > r.json`, then --cost-from r.json",
        )
    return replace(
        base,
        per_connection=sc.cpu_us_per_cycle,
        ceiling=round(capacity / sc.cpu_us_per_cycle, 3),
        note=f"{cores} CPUs x {sc.cpu_target} / {sc.cpu_us_per_cycle:.2f} us per "
        "connect-accept-close cycle (both ends measured together)",
    )


def evaluate(ctx: Context) -> list[Constraint]:
    return [cpu(ctx), cpu_churn(ctx)]
