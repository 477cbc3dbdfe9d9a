"""The explicit list of servers whose limit tcpceiling reads; adding a server means
adding its module here. A listener no module recognises is reported as unknown,
with the probe that proves its limit, never guessed."""

from __future__ import annotations

import time
from dataclasses import replace

from tcpceiling.host.roots import Roots
from tcpceiling.servers import (
    apache,
    gunicorn,
    haproxy,
    memcached,
    mosquitto,
    mysql,
    nginx,
    pgbouncer,
    phpfpm,
    postfix,
    postgresql,
    redis,
    squid,
    sshd,
    tomcat,
    unbound,
    uvicorn,
)
from tcpceiling.servers.model import AppLimit, Found, ServerModule, Upstream

MODULES: tuple[ServerModule, ...] = (
    nginx,
    apache,
    haproxy,
    redis,
    memcached,
    postgresql,
    mysql,
    pgbouncer,
    mosquitto,
    sshd,
    gunicorn,
    uvicorn,
    phpfpm,
    tomcat,
    postfix,
    unbound,
    squid,
)


def module_for(found: Found) -> ServerModule | None:
    """The module that knows the server: by its process name or executable, or, for
    a server run by an interpreter (`python3 -m uvicorn`), by its command line."""
    p = found.main
    return next((m for m in MODULES if m.matches(p.comm, p.exe) or _runs(m, p.cmdline)), None)


def _runs(module: ServerModule, cmdline: tuple[str, ...]) -> bool:
    by_cmdline = getattr(module, "matches_cmdline", None)
    return bool(by_cmdline is not None and by_cmdline(cmdline))


def unknown(found: Found) -> AppLimit:
    """A server the registry does not know: its own limit is not read."""
    listen = f"{found.host}:{found.port}"
    return AppLimit(
        server=found.main.comm or "unknown",
        pid=found.main.pid,
        listen=listen,
        setting="",
        value=None,
        source="default",
        source_detail="not a server tcpceiling knows",
        capacity=None,
        in_use=found.established,
        arithmetic="its own connection limit is not read: prove it with "
        f"`tcpceiling probe --connect {listen} --check SPEC --target max`",
        symptom="",
        raise_="",
        check="",
        nofile=found.main.nofile,
        known=False,
    )


def app_limit(found: Found, roots: Roots) -> AppLimit:
    module = module_for(found)
    return module.read(found, roots) if module is not None else unknown(found)


def raise_upstream(limit: AppLimit, up: Upstream, sources: int = 0) -> str:
    """More ports toward an upstream, in the proxy's own words (its module's
    `upstream_fix`; with `sources`, the lines for that many source addresses), else
    in the kernel's."""
    module = next((m for m in MODULES if limit.server == m.NAME), None)
    fix = getattr(module, "upstream_fix", None)
    if fix is not None:
        return str(fix(limit, up, sources))
    return (
        "widen net.ipv4.ip_local_port_range, give the proxy more source addresses "
        "toward the upstream, or keep its upstream connections alive"
    )


#: the comm of an interpreter or virtual machine that runs a server a module knows by
#: its command line (gunicorn, uvicorn, Tomcat): such a process is a candidate,
#: decided by module_for
INTERPRETERS = ("python", "java")


def knows(comm: str) -> bool:
    """Does any module recognise a process by its comm alone, or may one by its
    command line (an interpreter's process: module_for decides)?"""
    return any(m.matches(comm, "") for m in MODULES) or comm.startswith(INTERPRETERS)


class LimitCache:
    """A server's limit, read again at most every `ttl` seconds (nginx -T, a
    query): settings change rarely, connections often. What it holds now is taken
    fresh from each Found. Entries past their ttl are dropped on each new read, so a
    long-running exporter does not keep every server it ever saw."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self.seen: dict[tuple[int, int], tuple[float, AppLimit]] = {}

    def read(self, found: Found, roots: Roots) -> AppLimit:
        key, now = (found.main.pid, found.port), time.monotonic()
        hit = self.seen.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return replace(hit[1], in_use=found.established)
        limit = app_limit(found, roots)
        self.seen = {k: v for k, v in self.seen.items() if now - v[0] < self.ttl}
        self.seen[key] = (now, limit)
        return limit
