"""A probe through a reverse proxy: the proxy's side of a stop.

A proxy answers for its upstream: nginx's 502 Bad Gateway, HAProxy's 503, or a reset
when it cannot connect onward. The probe finds the proxy when it runs on this host,
in the probe's network namespace or in another (servers.find: the namespace where
the address it was sent to is local), and reads, before and after opening, what the
proxy's module of the servers registry says of it: where it sends its clients, its
sockets toward each upstream server against the ports it may use
(analysis.limits.upstream.rows_for), and its own words in its log. `attribute()`
is pure: from those to the Stop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

from tcpceiling.analysis.limits.upstream import ServerPorts, rows_for
from tcpceiling.analysis.model import Endpoint
from tcpceiling.host import netns as netns_mod
from tcpceiling.host import read, sockets
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.result import Stop
from tcpceiling.servers.find import find_elsewhere, find_listener
from tcpceiling.servers.model import AppLimit, Upstream
from tcpceiling.servers.registry import app_limit

#: Replies a proxy gives for its upstream (RFC 9110 15.6.3-5): bad gateway, service
#: unavailable, gateway timeout.
GATEWAY_STATUSES = ("502", "503", "504")


@dataclass(frozen=True)
class Where:
    """The proxy's listener as found: a pid in its namespace (None: the probe's own)."""

    pid: int | None
    endpoint: Endpoint


@contextlib.contextmanager
def entered(where: Where, roots: Roots) -> Iterator[None]:
    if where.pid is None:
        yield
        return
    with netns_mod.of_process(where.pid, roots):
        yield


def locate(endpoints: tuple[Endpoint, ...], roots: Roots) -> tuple[Where, AppLimit] | None:
    """The first endpoint's server in another namespace of this host, as read there."""
    for e in endpoints:
        hit = find_elsewhere(roots, e.host, e.port)
        if hit is not None:
            where = Where(hit[0], e)
            with entered(where, roots):
                return where, app_limit(hit[1], roots)
    return None


@dataclass(frozen=True)
class ProxyView:
    """The proxy at one moment: its limit as read (with its latest words), and its
    ports toward the upstream its listener sends clients to."""

    limit: AppLimit
    upstream: Upstream | None
    rows: tuple[ServerPorts, ...] = ()
    allowed: int = 0

    @property
    def used(self) -> int:
        return sum(r.used for r in self.rows)


def view(where: Where, roots: Roots) -> ProxyView | None:
    """Read the proxy again where it runs (None: it is gone)."""
    with entered(where, roots):
        found = find_listener(roots, where.endpoint.host, where.endpoint.port)
        if found is None:
            return None
        limit = app_limit(found, roots)
        if not limit.upstreams:
            return ProxyView(limit, None)
        up = limit.upstreams[0]
        table = sockets.read_live([(s.host, s.port) for s in up.servers])
        rows, allowed = rows_for(up, read.read_net(roots), table)
    return ProxyView(limit, up, tuple(rows), allowed)


def _gateway(reply: str) -> bool:
    words = reply.split()
    return len(words) > 1 and words[0].startswith("HTTP/") and words[1] in GATEWAY_STATUSES


def attribute(stop: Stop, reply: str, after: ProxyView | None) -> Stop:
    """The stop as the proxy's side explains it: its ports toward the upstream all in
    use, or its own words that connect() found none, with a gateway reply or a reset
    from the proxy -> upstream_ports on the proxy's side; a proxy at its own cap ->
    the same stop, saying that each client is two of its connections."""
    if after is None or after.upstream is None:
        return stop
    limit, up = after.limit, after.upstream
    full = after.allowed > 0 and after.used >= after.allowed
    said = limit.upstream_words if full or limit.upstream_ports_gone else ""
    failed = _gateway(reply) or stop.reason in ("server_reset", "server_closed", "server_reply")
    if failed and (full or said):
        return Stop(
            "upstream_ports",
            side="proxy",
            detail=_detail(after, said),
            evidence=stop.evidence | {"upstream": _evidence(after, said)},
        )
    if limit.per_client > 1 and stop.side == "server":
        extra = (
            f"; {limit.server} spends {limit.per_client} {limit.setting} on each proxied "
            f"client (its own and one toward {up.name}: {after.used} open now)"
        ) + (f'; {limit.server} said: "{limit.evidence}"' if limit.evidence else "")
        return replace(stop, detail=stop.detail + extra,
                       evidence=stop.evidence | {"upstream": _evidence(after, said)})  # fmt: skip
    return stop


def _detail(after: ProxyView, said: str) -> str:
    limit, up = after.limit, after.upstream
    assert up is not None
    where = ", ".join(f"{r.address} {r.used:,} of {r.allowed:,}" for r in after.rows)
    text = (
        f"the proxy {limit.server} (pid {limit.pid}) on {limit.listen} ran out of ports "
        f"toward its upstream {up.name} ({up.directive}): {where} ports in use; "
        "its clients got its error instead"
    )
    return text + (f'; {limit.server} said: "{said}"' if said else "")


def _evidence(after: ProxyView, said: str) -> dict[str, object]:
    up = after.upstream
    return {
        "server": after.limit.server,
        "pid": after.limit.pid,
        "listen": after.limit.listen,
        "upstream": up.name if up else None,
        "directive": up.directive if up else None,
        "allowed": after.allowed,
        "used": after.used,
        "servers": [
            {"address": r.address, "allowed": r.allowed, "used": r.used, "how": r.how}
            for r in after.rows
        ],
        "said": said or None,
    }


def remote_note(reply: str, endpoint: Endpoint) -> str | None:
    """A gateway reply from a server that is not on this host: where to look. 502 and
    504 are a proxy's words about its upstream; 503 is that too, or a server's own cap
    (uvicorn's --limit-concurrency, HAProxy's maxconn queue timing out)."""
    if not _gateway(reply):
        return None
    who = "a proxy that could not reach its upstream"
    if reply.split()[1] == "503":
        who += ", or a server past a cap of its own"
    return (
        f'{endpoint} answered "{reply}": {who}. It is '
        "not on this host; on its host, `tcpceiling doctor` names its ports toward each "
        f"upstream, and `tcpceiling analyze --role server --listen {endpoint}` its ceiling"
    )
