"""The server's own connection limit (`app_limit`): nginx worker_connections, redis
maxclients, HAProxy maxconn, PostgreSQL max_connections... as the server runs with
it, read by the server's module of tcpceiling.servers. It takes part in "the first
limit reached" like any kernel limit; a server the registry does not know is named,
with the probe that proves its limit, and bounds nothing here."""

from __future__ import annotations

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits import fit
from tcpceiling.analysis.model import Constraint
from tcpceiling.servers.model import AppLimit


def _note(s: AppLimit) -> str:
    if not s.known:
        return f"{s.server} (pid {s.pid}) on {s.listen}: {s.arithmetic}"
    note = f"{s.server} {s.setting} {s.value} ({s.source}): {s.arithmetic}"
    if s.fds_short:
        note += (
            f"; its RLIMIT_NOFILE {s.nofile} is below the {s.nofile_needed} fds its cap "
            "needs: it runs out of fds first (EMFILE)"
        )
    return note


def constraint(s: AppLimit) -> Constraint:
    cap = s.capacity
    return Constraint(
        id="app_limit",
        capacity=cap,
        in_use=s.in_use,
        per_connection=1,
        ceiling=fit(cap, s.in_use or 0, 1) if cap is not None else None,
        symptom=s.symptom or "unknown: the server's own limit was not read",
        raise_=s.raise_ or f"prove it: tcpceiling probe --connect {s.listen} --target max",
        source=f"{s.server}: {s.source_detail}",
        note=_note(s),
        details={
            "server": s.server,
            "known": s.known,
            "pid": s.pid,
            "listen": s.listen,
            "setting": s.setting,
            "value": s.value,
            "source": s.source,
            "source_detail": s.source_detail,
            "arithmetic": s.arithmetic,
            "check": s.check,
            "nofile": s.nofile,
            "nofile_needed": s.nofile_needed,
            "per_process": {str(k): v for k, v in s.per_process.items()},
            # the server's own words that it reached its cap, where it says so (a log)
            **({"evidence": s.evidence} if s.evidence else {}),
        },
    )


def evaluate(ctx: Context) -> list[Constraint]:
    """The tightest server behind the scenario's listeners (all of them in details)."""
    if ctx.scenario.role != "server" or not ctx.snap.servers:
        return []
    ranked = sorted(ctx.snap.servers, key=lambda s: (s.capacity is None, s.capacity or 0))
    first = constraint(ranked[0])
    if len(ranked) > 1:
        first.details["others"] = [constraint(s).details for s in ranked[1:]]
    return [first]
