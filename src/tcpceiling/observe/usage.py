"""A Sample as rows of "used of allowed" (Usage), each with its headroom and fix,
sorted by the smallest headroom; and the counters' rates between two samples.
Pure: table-tested with literal samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tcpceiling.observe.sample import Sample
from tcpceiling.servers.model import AppLimit
from tcpceiling.tune.raisers import nice

Severity = Literal["ok", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("ok", "warning", "critical")


@dataclass(frozen=True)
class Usage:
    """`used` of `capacity` of one limit on one subject (a process, a listener, a
    (source, destination) tuple, or the host)."""

    limit: str
    subject: str
    used: float
    capacity: float
    unit: str
    fix: str
    pid: int | None = None
    words: str = ""  # the subject's own words about it (a server's log line, its counter)

    @property
    def ratio(self) -> float:
        return self.used / self.capacity if self.capacity > 0 else 0.0

    @property
    def headroom(self) -> float:
        return 1.0 - self.ratio

    def severity(self, warn: float, crit: float) -> Severity:
        if self.ratio >= crit:
            return "critical"
        return "warning" if self.ratio >= warn else "ok"


def _tune(*args: str) -> str:
    return "tcpceiling tune " + " ".join(args)


def process_usages(s: Sample) -> list[Usage]:
    out = []
    for p in s.processes:
        who = f"{p.comm} (pid {p.pid})"
        if p.max_fds:
            fix = (
                f"raise its RLIMIT_NOFILE (LimitNOFILE= for a service): "
                f"{_tune('--role server', f'--pid {p.pid}', f'--target {nice(2 * p.open_fds)}')}"
            )
            out.append(Usage("nofile", who, p.open_fds, p.max_fds, "fds", fix, p.pid))
        if p.task_limit and p.threads > 1:
            fix = f"raise {p.task_limit_name} (TasksMax= for a service), or use an event loop"
            out.append(Usage("threads", who, p.threads, p.task_limit, "threads", fix, p.pid))
    return out


def listener_usages(s: Sample) -> list[Usage]:
    """The accept queue holds backlog + 1 (sk_acceptq_is_full is '>')."""
    fix = "raise net.core.somaxconn and the listen() backlog; accept faster"
    return [
        Usage("backlog", f"listener {ln.host}:{ln.port}", ln.queue, ln.backlog + 1, "queued", fix)
        for ln in s.listeners
    ]


def port_usages(s: Sample) -> list[Usage]:
    """Ports per destination tuple; a known proxy's upstreams are upstream_usages'."""
    known = {u.address for u in s.upstreams}
    out = []
    for t in s.ports:
        if _address(t.dst, t.dport) in known:
            continue
        target = nice(2 * t.in_use)
        fix = (
            f"widen the range, add source IPs or destination ports: "
            f"{_tune('--role client', f'--connect {t.dst}:{t.dport}', f'--target {target}')}"
        )
        subject = f"{t.src} -> {t.dst}:{t.dport} ({t.time_wait} TIME_WAIT)"
        if t.owner:
            subject += f" held by {t.owner}"
            if t.listens:
                listens = ", ".join(f":{p}" for p in t.listens)
                subject += f", a proxy: it listens on {listens} and its clients pay"
                fix += "; or keep its connections toward the destination alive"
        out.append(Usage("ports", subject, t.in_use, t.usable, "ports", fix))
    return out


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def upstream_usages(s: Sample) -> list[Usage]:
    """A known proxy's ports toward each server of its upstream: its listener's
    clients get its error (nginx 502, HAProxy 503) when they are all in use."""
    return [
        Usage(
            "upstream_ports",
            f"{u.server} (pid {u.pid}) {u.listen} -> "
            + (u.address if u.upstream == u.address else f"{u.upstream} {u.address}")
            + f" ({u.time_wait} TIME_WAIT)",
            u.used,
            u.allowed,
            "ports",
            f"its clients on {u.listen} pay: {u.fix}"
            + (
                ""
                if u.keepalive
                else f"; without keep-alive it lets {u.time_wait_rate:,.1f} "
                "requests/s through (ports / 60 s of TIME_WAIT)"
            ),
            u.pid,
            f"{u.server} says: {u.words}" if u.words else "",
        )
        for u in s.upstreams
        if u.allowed
    ]


HOST_FIX = {
    "file_max": "raise fs.file-max (tcpceiling tune)",
    "tcp_mem": "raise net.ipv4.tcp_mem, or queue less per connection (tcpceiling tune)",
    "time_wait": "raise net.ipv4.tcp_max_tw_buckets, reuse connections, let the server close",
    "threads": "raise kernel.threads-max / pid_max, or use an event loop",
    "memory": "add RAM or hold fewer bytes per connection",
    "conntrack": "raise net.netfilter.nf_conntrack_max, or NOTRACK the traffic (tcpceiling tune)",
    "orphans": "raise net.ipv4.tcp_max_orphans (each may pin up to 64 KiB), or shorten "
    "tcp_fin_timeout / tcp_orphan_retries",
    "tcp_mem_pressure": "raise net.ipv4.tcp_mem (its middle value), or queue less per "
    "connection (tcpceiling tune)",
    "neighbours": "raise net.ipv4.neigh.default.gc_thresh3 (and gc_thresh1/2)",
}


def host_usages(s: Sample) -> list[Usage]:
    return [
        Usage(h.limit, "host", h.used, h.capacity, h.unit, HOST_FIX.get(h.limit, ""))
        for h in s.host
        if h.used is not None and h.capacity
    ]


def _server_fix(a: AppLimit) -> str:
    fix = f'{a.raise_}; at the cap it says "{a.symptom}"'
    if a.fds_short:
        fix += (
            f"; its RLIMIT_NOFILE {a.nofile} is below the {a.nofile_needed} fds its "
            f"{a.setting} needs: raise that first"
        )
    return fix


def server_usages(s: Sample) -> list[Usage]:
    """A known server's connections against its own cap (tcpceiling.servers)."""
    return [
        Usage(
            "app_limit",
            f"{a.server} (pid {a.pid}) {a.listen} {a.setting} {a.value} [{a.source}]",
            a.in_use or 0,
            a.capacity,
            "conns",
            _server_fix(a),
            a.pid,
            f"{a.server} says: {a.evidence}" if a.evidence else "",
        )
        for a in s.servers
        if a.capacity
    ]


def nat_usages(s: Sample) -> list[Usage]:
    """The NAT's tuples toward each destination it masquerades flows to."""
    fix = (
        "widen the NAT rule's port range or add NAT addresses (snat to A-B), fully-random "
        "against clashes; or reuse connections"
    )
    return [
        Usage("snat_ports", f"NAT -> {u.dst}:{u.dport} ({u.rule})", u.used, u.capacity,
              "NAT tuples", fix)
        for u in s.nat
    ]  # fmt: skip


def cap_usages(s: Sample) -> list[Usage]:
    """A firewall's connection cap on a port against the live flows to it."""
    return [
        Usage("firewall", f"port {c.dport} ({c.rule})", c.used, c.capacity, "connections",
              "raise the rule's count (nft replace rule), or spread the clients")
        for c in s.caps
    ]  # fmt: skip


def usages(s: Sample) -> list[Usage]:
    """Every row, the smallest headroom first."""
    rows = (
        process_usages(s)
        + server_usages(s)
        + listener_usages(s)
        + port_usages(s)
        + upstream_usages(s)
        + nat_usages(s)
        + cap_usages(s)
        + host_usages(s)
    )
    return sorted(rows, key=lambda u: u.headroom)


#: Rates shown and exported: name -> the counters summed (sample.COUNTERS).
RATES = {
    "new_connections": ("Tcp.ActiveOpens", "Tcp.PassiveOpens"),
    "listen_overflows": ("TcpExt.ListenOverflows",),
    "listen_drops": ("TcpExt.ListenDrops",),
    "time_wait_overflows": ("TcpExt.TCPTimeWaitOverflow",),
    "syn_retransmits": ("TcpExt.TCPSynRetrans",),
    "aborts_on_memory": ("TcpExt.TCPAbortOnMemory",),
    "conntrack_drops": ("conntrack.drop", "conntrack.early_drop"),
    "conntrack_insert_failed": ("conntrack.insert_failed",),
    "syn_queue_drops": ("TcpExt.TCPReqQFullDrop",),
    "syn_cookies": ("TcpExt.TCPReqQFullDoCookies",),
    "memory_pressures": ("TcpExt.TCPMemoryPressures",),
    "neigh_table_fulls": ("neigh.table_fulls",),
}


def rates(before: Sample, after: Sample) -> dict[str, float]:
    """Per second between the two samples (a counter absent from either is left out)."""
    dt = max(after.time - before.time, 1e-6)
    out: dict[str, float] = {}
    for name, keys in RATES.items():
        if all(k in before.counters and k in after.counters for k in keys):
            delta = sum(after.counters[k] - before.counters[k] for k in keys)
            out[name] = max(0.0, delta / dt)
    return out
