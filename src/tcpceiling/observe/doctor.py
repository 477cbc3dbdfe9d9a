"""Why are connections failing right now? Two samples `--interval` apart, the
kernel's log, every process's fds and every destination's ports, each turned into
findings; the most likely cause first (pure: table-tested with literal samples).

Ranking: the worse severity first; at the same severity a limit that is used up
(fds, ports, tcp_mem, conntrack, tasks) before its symptoms (a full accept queue,
SYN retransmits: a server at its fd limit stops accepting and its queue fills);
then the fuller one. Exit status as a Nagios/Icinga plugin: 0 ok, 1 warning,
2 critical, with one line of output and perfdata."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tcpceiling.observe.kmsg import Hit
from tcpceiling.observe.sample import Sample
from tcpceiling.observe.trace import Row, TraceResult
from tcpceiling.observe.usage import HOST_FIX, SEVERITIES, Severity, Usage, rates, usages

SYMPTOMS = ("backlog", "syn_retransmits")


@dataclass(frozen=True)
class Finding:
    limit: str
    severity: Severity
    subject: str
    evidence: tuple[str, ...]
    fix: str
    ratio: float | None = None


@dataclass(frozen=True)
class Diagnosis:
    status: Severity
    cause: Finding | None
    findings: tuple[Finding, ...]
    rates: dict[str, float]
    perfdata: tuple[str, ...]
    interval: float
    warn: float
    crit: float
    notes: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return SEVERITIES.index(self.status)

    @property
    def line(self) -> str:
        """The plugin's one line: status, cause and evidence, then perfdata."""
        what = "no limit near its end"
        if self.cause is not None:
            c = self.cause
            what = f"{c.limit}: {c.subject}: {c.evidence[0] if c.evidence else ''}".rstrip(": ")
        return f"TCPCEILING {self.status.upper()} - {what} | {' '.join(self.perfdata)}".rstrip(" |")


def _usage_finding(u: Usage, warn: float, crit: float) -> Finding:
    used = f"{u.used:,.0f} of {u.capacity:,.0f} {u.unit} ({u.ratio:.1%})"
    evidence = (used, u.words) if u.words else (used,)
    return Finding(u.limit, u.severity(warn, crit), u.subject, evidence, u.fix, u.ratio)


#: Counters that mean connections fail now: rate name -> (limit, counter, fix).
COUNTER_FINDINGS = {
    "time_wait_overflows": (
        "time_wait",
        "TCPTimeWaitOverflow",
        "TIME_WAIT entries are dropped past net.ipv4.tcp_max_tw_buckets: raise it, reuse "
        "connections, let the server close first",
    ),
    "conntrack_drops": (
        "conntrack",
        "conntrack drop + early_drop",
        "raise net.netfilter.nf_conntrack_max, or NOTRACK the traffic (tcpceiling tune)",
    ),
    "conntrack_insert_failed": (
        "conntrack",
        "conntrack insert_failed",
        "a new flow found no free tuple: a NAT's ports toward one destination are all used "
        "(widen its range, add NAT addresses, fully-random), or clashes (tcpceiling analyze "
        "--role nat)",
    ),
    "syn_queue_drops": (
        "syn_queue",
        "TCPReqQFullDrop",
        "the SYN queue is full and syncookies are off: raise net.ipv4.tcp_max_syn_backlog "
        "and the listen() backlog, turn net.ipv4.tcp_syncookies on",
    ),
    "neigh_table_fulls": (
        "neighbours",
        "arp_cache table_fulls",
        "raise net.ipv4.neigh.default.gc_thresh3 (and gc_thresh1/2)",
    ),
    "aborts_on_memory": (
        "tcp_mem",
        "TCPAbortOnMemory",
        "raise net.ipv4.tcp_mem, or queue less per connection (tcpceiling tune)",
    ),
}


#: Counters that mean the kernel is coping, not yet failing: (rate, limit, counter, fix).
WARNING_RATES = (
    ("syn_cookies", "syn_queue", "TCPReqQFullDoCookies",
     "the SYN queue is full and SYN cookies answer for it (no TCP options kept): raise "
     "net.ipv4.tcp_max_syn_backlog and the listen() backlog"),
    ("memory_pressures", "tcp_mem", "TCPMemoryPressures",
     "socket memory crossed tcp_mem[1]: buffers are pruned; raise net.ipv4.tcp_mem"),
)  # fmt: skip


def _backlog_finding(r: dict[str, float], after: Sample) -> Finding | None:
    """ListenOverflows/ListenDrops moving: a SYN found an accept queue full."""
    overflows, drops = r.get("listen_overflows", 0.0), r.get("listen_drops", 0.0)
    if not (overflows or drops):
        return None
    fullest = max(after.listeners, key=lambda ln: ln.queue / (ln.backlog + 1), default=None)
    where = f"listener {fullest.host}:{fullest.port}" if fullest else "a listener"
    queue = f", its queue {fullest.queue}/{fullest.backlog + 1}" if fullest else ""
    ev = f"ListenOverflows {overflows:,.1f}/s, ListenDrops {drops:,.1f}/s{queue}"
    fix = (
        "the server does not accept fast enough, or cannot (its fds): raise somaxconn and "
        "the listen() backlog, accept faster"
    )
    return Finding("backlog", "critical", where, (ev,), fix)


def _rate_findings(r: dict[str, float], after: Sample) -> list[Finding]:
    out = [f for f in (_backlog_finding(r, after),) if f is not None]
    for name, (limit, counter, fix) in COUNTER_FINDINGS.items():
        if r.get(name, 0):
            out.append(Finding(limit, "critical", "host", (f"{counter} {r[name]:,.1f}/s",), fix))
    for name, limit, counter, fix in WARNING_RATES:
        if r.get(name, 0):
            out.append(Finding(limit, "warning", "host", (f"{counter} {r[name]:,.1f}/s",), fix))
    if r.get("syn_retransmits", 0):
        ev = (f"TCPSynRetrans {r['syn_retransmits']:,.1f}/s",)
        fix = "a peer's accept queue is full, or packets drop"
        out.append(Finding("syn_retransmits", "warning", "host", ev, fix))
    return out


def _kernel_findings(found: list[Hit]) -> list[Finding]:
    by_limit: dict[str, list[Hit]] = {}
    for h in found:
        by_limit.setdefault(h.limit, []).append(h)
    return [
        Finding(
            limit, hs[0].severity, "host", (f'kernel: "{hs[-1].message.text}" (x{len(hs)})',), ""
        )
        for limit, hs in by_limit.items()
    ]


#: What to do about a failure trace saw, by the limit its errno names.
TRACE_FIX = {
    **HOST_FIX,
    "nofile": "raise the process's RLIMIT_NOFILE (LimitNOFILE= for a service; tcpceiling tune)",
    "ports": "widen ip_local_port_range, add source IPs or destination ports (tcpceiling tune)",
    "threads": "raise pids.max / kernel.threads-max (TasksMax= for a service), or use an "
    "event loop",
    "epoll_watches": "raise fs.epoll.max_user_watches",
    "memory": "raise the memory limit or net.ipv4.tcp_mem (tcpceiling tune)",
    "backlog": "raise net.core.somaxconn and the listen() backlog; accept faster",
}
#: Failures that are the peer's answer, not a limit of this host.
PEER_LIMITS = ("server", "refused", "reset", "unknown")


def _trace_finding(r: Row, seconds: float) -> Finding:
    """A process failing at a limit, as trace saw it: critical (connections are failing
    now) unless it is the peer's answer. A listener's drops join its queue's row."""
    subject = f"{r.comm} (pid {r.pid})" if r.pid else "host"
    if r.call == "listen" and r.destination:
        subject = f"listener {r.destination.split(' ')[0]}"
    toward = f" toward {r.destination}" if r.destination and r.call != "listen" else ""
    ev = f"trace: {r.call}() {r.errno} x{r.count:,} in {seconds:g} s{toward}"
    severity: Severity = "warning" if r.limit in PEER_LIMITS else "critical"
    return Finding(r.limit, severity, subject, (ev,), TRACE_FIX.get(r.limit, ""))


def _merge(findings: list[Finding]) -> list[Finding]:
    """One finding per (limit, subject); evidence joined, the worse severity kept.
    Host-wide evidence (counters, the kernel log) joins the finding of its limit."""
    merged: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = next(
            (k for k in merged if k[0] == f.limit and f.subject == "host"), (f.limit, f.subject)
        )
        old = merged.get(key)
        if old is None:
            merged[key] = f
            continue
        worse = max(old.severity, f.severity, key=SEVERITIES.index)
        merged[key] = Finding(
            old.limit, worse, old.subject, old.evidence + f.evidence, old.fix or f.fix, old.ratio
        )
    return list(merged.values())


def _rank(f: Finding) -> tuple[int, int, float]:
    return (SEVERITIES.index(f.severity), 0 if f.limit in SYMPTOMS else 1, f.ratio or 0.0)


def _number(v: float) -> str:
    """Perfdata numbers in plain notation (no exponent): 532161000, 102.5."""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"


def perfdata(rows: list[Usage], warn: float, crit: float, most: int = 12) -> tuple[str, ...]:
    """'label'=value;warn;crit;min;max for the fullest rows (Nagios plugin guidelines)."""
    out = []
    for u in sorted(rows, key=lambda u: u.headroom)[:most]:
        label = re.sub(r"['=]", "_", f"{u.limit} {u.subject}")[:60]
        c = u.capacity
        values = (u.used, warn * c, crit * c, 0, c)
        out.append(f"'{label}'=" + ";".join(_number(v) for v in values))
    return tuple(out)


def diagnose(
    before: Sample,
    after: Sample,
    kernel: list[Hit],
    warn: float = 0.8,
    crit: float = 0.95,
    traced: TraceResult | None = None,
) -> Diagnosis:
    """The findings of two samples, the kernel's log and (doctor --trace) a trace
    taken between the samples, merged per (limit, subject) and ranked."""
    rows = usages(after)
    r = rates(before, after)
    found = [_usage_finding(u, warn, crit) for u in rows]
    found = [f for f in found if f.severity != "ok"] + _rate_findings(r, after)
    if traced is not None:
        found += [_trace_finding(row, traced.seconds) for row in traced.rows]
    found = sorted(_merge(found + _kernel_findings(kernel)), key=_rank, reverse=True)
    status = found[0].severity if found else "ok"
    return Diagnosis(
        status=status,
        cause=found[0] if found else None,
        findings=tuple(found),
        rates=r,
        perfdata=perfdata(rows, warn, crit),
        interval=after.time - before.time,
        warn=warn,
        crit=crit,
        notes=traced.notes if traced is not None else (),
    )
