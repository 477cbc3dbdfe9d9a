"""The accept queue: a burst limit, not a total (docs/limits.md §7).

listen(backlog) is clamped to net.core.somaxconn and the queue holds backlog + 1
completed connections (sk_ack_backlog > sk_max_ack_backlog); a SYN that finds it
full is dropped (TcpExtListenOverflows, ListenDrops) and the client retransmits
until connect() times out.
"""

from __future__ import annotations

from dataclasses import replace

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.model import Constraint


def backlog(ctx: Context) -> Constraint:
    somaxconn = ctx.snap.net.somaxconn
    asked = ctx.scenario.backlog
    effective = min(asked, somaxconn) if asked is not None else somaxconn
    base = Constraint(
        id="backlog",
        capacity_unit="queue slots",
        capacity=effective + 1,
        in_use=0,
        per_connection=1,
        ceiling=None,
        kind="burst",
        unit="connections waiting for accept()",
        symptom="SYN dropped, client connect() times out; TcpExtListenOverflows/ListenDrops rise",
        raise_=f"{ctx.sysctl(f'net.core.somaxconn={max(somaxconn * 4, 4096)}')} and a larger "
        "listen() backlog; accept faster",
        source=ctx.proc("sys/net/core/somaxconn"),
        note=f"min(listen backlog {asked if asked is not None else '(somaxconn)'}, "
        f"somaxconn {somaxconn}) + 1",
        details={"somaxconn": somaxconn, "listen_backlog": asked},
    )
    if ctx.scenario.role != "server":
        return replace(base, note="the peer's accept queue; a burst limit on its side")
    return replace(base, ceiling=effective + 1)


def evaluate(ctx: Context) -> list[Constraint]:
    return [backlog(ctx)]
