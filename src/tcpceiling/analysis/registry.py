"""The explicit list of limit families analyze evaluates, in report order.
Adding a family means adding its module here; nothing is discovered by scanning."""

from __future__ import annotations

from collections.abc import Callable

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits import (
    app,
    conntrack,
    cpu,
    fds,
    memory,
    path,
    ports,
    queues,
    tasks,
    upstream,
)
from tcpceiling.analysis.model import Constraint

Family = Callable[[Context], list[Constraint]]

FAMILIES: tuple[tuple[str, Family], ...] = (
    ("ports", ports.evaluate),
    ("fds", fds.evaluate),
    ("memory", memory.evaluate),
    ("tasks", tasks.evaluate),
    ("queues", queues.evaluate),
    ("conntrack", conntrack.evaluate),
    ("cpu", cpu.evaluate),
    ("app", app.evaluate),
    ("upstream", upstream.evaluate),
    ("path", path.evaluate),
)
#: A host that forwards (a NAT, a firewall): only what it keeps per forwarded flow.
NAT_FAMILIES: tuple[tuple[str, Family], ...] = (
    ("path", path.evaluate),
    ("conntrack", conntrack.evaluate),
)
