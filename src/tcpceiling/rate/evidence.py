"""What stopped the rate from growing, named from the errnos and the counters: the
TcpExt counters, the TIME_WAIT entries by side, the long-run rate after a shortage,
the CPU's evidence."""

from __future__ import annotations

import errno
from dataclasses import replace

from tcpceiling.host import diag, sockets
from tcpceiling.host.read import read_net_counters, socket_owners
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.workers import errnos
from tcpceiling.probe.workers.messages import ChurnProgress
from tcpceiling.rate.config import COUNTERS, PORTS_GONE, ChurnConfig
from tcpceiling.rate.cycles import BAD_REPLY


def tcpext(roots: Roots) -> dict[str, int]:
    """The TcpExt counters of COUNTERS, and conntrack's drops (when it is loaded)."""
    netstat, conntrack = read_net_counters(roots)
    out = {k: netstat.get(f"TcpExt.{k}", 0) for k in COUNTERS}
    out["conntrack_drop"] = conntrack.get("drop", 0)
    return out


def time_wait_by_side(ports: set[int]) -> dict[str, int]:
    """TIME_WAIT entries of the calling thread's netns toward the sink ports (the
    client's, who closed first) and from them (the sink's)."""
    rows = diag.dump(1 << 6)  # TCP_TIME_WAIT
    client = sum(1 for r in rows if diag.port(r[diag.DPORT]) in ports)
    server = sum(1 for r in rows if diag.port(r[diag.SPORT]) in ports)
    return {"client": client, "server": server}


TIME_WAIT_SECONDS = 60  # TCP_TIMEWAIT_LEN (include/net/tcp.h)


def steady_rate(progress: list[ChurnProgress], duration: float) -> float | None:
    """The rate after the first port shortage, over a window of at least one
    TIME_WAIT period: by then the ports come back as fast as they were taken."""
    at = [p.exhausted_at for p in progress if p.exhausted_at is not None]
    if not at or duration - min(at) < TIME_WAIT_SECONDS:
        return None
    return round(sum(p.after_exhausted for p in progress) / (duration - min(at)), 3)


def cpu_evidence(
    stop: Stop, per_cpu: list[float], cpu: dict[str, float], server: list[int]
) -> Stop:
    """The CPU stop with its evidence: each CPU's utilisation over the run (psutil)
    and which side's processes held the most CPU time."""
    side, seconds = max(cpu.items(), key=lambda kv: kv[1])
    who = {"both": "the workers (both ends)", "client": "the client workers"}.get(
        side, f"the server (pids {', '.join(map(str, server))})"
    )
    detail = (
        f"CPUs {', '.join(f'{p:.0f} %' for p in per_cpu)} busy over the run; "
        f"{who} used {seconds:.2f} CPU-seconds, the most"
    )
    evidence = {"per_cpu_percent": per_cpu, "cpu_seconds": cpu, "busiest": side}
    return replace(stop, detail=detail, evidence=evidence)


def server_pids(cfg: ChurnConfig) -> list[int]:
    """The local server's processes (the owners of its listener), for its CPU."""
    if cfg.connect is None:
        return []
    inodes = [ln.inode for ln in sockets.listeners(cfg.connect.port)]
    return socket_owners(inodes, Roots()) if inodes else []


def attribute(
    cfg: ChurnConfig, sustained: float, errors: dict[int, int], d: dict[str, int]
) -> Stop:
    """What stopped the rate from growing, from the errnos and the counters."""
    gone = sum(errors.get(e, 0) for e in PORTS_GONE)
    if gone and cfg.close == "client":
        detail = (
            "every port toward the sink sits in TIME_WAIT for 60 s after the client's "
            "close: the rate is ports per (src, dst, dport) / 60 s"
        )
        if d.get("TWRecycled", 0) > 0:
            detail = (
                f"tcp_tw_reuse took {d['TWRecycled']:,} ports back from TIME_WAIT, each "
                "once tcp_tw_reuse_delay (1 s) had passed: the rate is ports per "
                "(src, dst, dport) / that delay"
            )
        return Stop(
            "time_wait", errno=errnos.name(errno.EADDRNOTAVAIL), side="client", detail=detail
        )
    if gone:
        return Stop("ports", errno=errnos.name(errno.EADDRNOTAVAIL), side="client")
    if d.get("ListenOverflows", 0) > 0:
        return Stop(
            "backlog",
            side="server",
            detail=f"ListenOverflows +{d['ListenOverflows']:,}: the server's accept queue "
            "was full, so SYNs were dropped (connect timeouts); it accepts too slowly",
        )
    refused = errors.get(errno.ECONNREFUSED, 0)
    if refused:
        return Stop("server_refused", errno="ECONNREFUSED", side="server")
    if errors.get(BAD_REPLY, 0):
        return Stop("server_reply", side="server", detail="the check's reply was not valid")
    if d.get("TCPTimeWaitOverflow", 0) > 0:
        return Stop(
            "tw_buckets",
            side="client" if cfg.close == "client" else "server",
            detail=f"tcp_max_tw_buckets overflowed {d['TCPTimeWaitOverflow']:,} times: "
            "closing sockets skipped TIME_WAIT, so a late segment of an old "
            "connection can be taken for a new one on the same 4-tuple",
        )
    if cfg.rate is not None and sustained >= 0.95 * cfg.rate:
        return Stop("target")
    return Stop("cpu", detail="no limit's evidence: the workers' CPU sets the rate")
