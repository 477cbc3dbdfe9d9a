"""watch, doctor and the exporter on literal samples: the rows, the ranking of
causes, the plugin line, the kernel log records, and the metric names the shipped
alert rules and dashboard use."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from tcpceiling.errors import InputError
from tcpceiling.host.nat import CapUse, NatUse
from tcpceiling.host.sockets import Listener
from tcpceiling.observe import exporter, kmsg
from tcpceiling.observe.doctor import diagnose
from tcpceiling.observe.feed import FailureTotals
from tcpceiling.observe.sample import Ceiling, HostLimit, PortUse, ProcessUse, Sample
from tcpceiling.observe.usage import rates, usages
from tcpceiling.report.watch import frame

DEPLOY = Path(__file__).parent.parent / "deploy"
NGINX = ProcessUse(4242, "nginx", 299, 300, 1, 512, "pids.max")
REDIS = ProcessUse(77, "redis-server", 40, 10_000, 5, 512, "pids.max")
FULL = Listener("127.0.0.1", 8080, 512, 511, 99)
IDLE = Listener("0.0.0.0", 22, 0, 128, 98)
PORTS = PortUse("10.0.0.1", "10.0.0.9", 5432, 25_000, 900, 28_232)
HOST = (
    HostLimit("file_max", 3_000, 2_000_000, "files", "/proc/sys/fs/file-nr"),
    HostLimit("epoll_watches", None, 5_000_000, "watches", "per user"),
    HostLimit("tcp_mem", 100, 500_000, "pages", "sockstat"),
)
COUNTS = {"Tcp.ActiveOpens": 100, "Tcp.PassiveOpens": 50, "TcpExt.ListenOverflows": 10,
          "TcpExt.ListenDrops": 10, "TcpExt.TCPTimeWaitOverflow": 0, "TcpExt.TCPSynRetrans": 3,
          "TcpExt.TCPAbortOnMemory": 0, "conntrack.drop": 0, "conntrack.early_drop": 0,
          "conntrack.insert_failed": 0, "TcpExt.TCPReqQFullDrop": 0,
          "TcpExt.TCPReqQFullDoCookies": 0, "TcpExt.TCPMemoryPressures": 0,
          "neigh.table_fulls": 0}  # fmt: skip


def sample(
    t: float,
    procs: tuple[ProcessUse, ...] = (),
    listeners: tuple[Listener, ...] = (),
    ports: tuple[PortUse, ...] = (),
    **bump: int,
) -> Sample:
    counters = dict(COUNTS)
    for key, n in bump.items():
        counters[key.replace("__", ".")] += n
    ceilings = (
        Ceiling("server", "nofile", 19_992, 20_000, 8),
        Ceiling("client", "ports", None, None, None),
    )
    return Sample(t, procs, listeners, ports, HOST, counters, ceilings, None, 1234, 3)


def test_rows_by_headroom_with_a_tune_fix() -> None:
    rows = usages(sample(0, (REDIS, NGINX), (IDLE, FULL), (PORTS,)))
    assert [(u.limit, u.subject) for u in rows[:3]] == [
        ("backlog", "listener 127.0.0.1:8080"),  # 512 of 512: full
        ("nofile", "nginx (pid 4242)"),
        ("ports", "10.0.0.1 -> 10.0.0.9:5432 (900 TIME_WAIT)"),
    ]
    ports = rows[2]
    assert "tcpceiling tune --role client --connect 10.0.0.9:5432 --target 50000" in ports.fix
    assert rows[1].severity(0.8, 0.95) == "critical" and ports.severity(0.8, 0.99) == "warning"
    assert "epoll_watches" not in {u.limit for u in rows}  # its use is not visible


def test_rates_per_second() -> None:
    r = rates(sample(0), sample(2, TcpExt__ListenOverflows=30, Tcp__ActiveOpens=40))
    assert r["listen_overflows"] == 15 and r["new_connections"] == 20 and r["conntrack_drops"] == 0


@pytest.mark.parametrize(
    ("after", "status", "cause", "subject"),
    [
        # a server at its fd limit stops accepting: its queue fills and SYNs drop; the
        # used-up fds are the cause, the overflows its symptom
        (sample(2, (NGINX,), (FULL,), TcpExt__ListenOverflows=40), "critical", "nofile",
         "nginx (pid 4242)"),
        (sample(2, (REDIS,), (FULL,), TcpExt__ListenOverflows=40), "critical", "backlog",
         "listener 127.0.0.1:8080"),
        (sample(2, (REDIS,), (IDLE,), (PORTS,)), "warning", "ports",
         "10.0.0.1 -> 10.0.0.9:5432 (900 TIME_WAIT)"),
        (sample(2, (REDIS,), (IDLE,), TcpExt__TCPTimeWaitOverflow=10), "critical", "time_wait",
         "host"),
        (sample(2, (REDIS,), (IDLE,)), "ok", None, None),
    ],
)  # fmt: skip
def test_doctor_names_the_cause(
    after: Sample, status: str, cause: str | None, subject: str | None
) -> None:
    d = diagnose(sample(0, listeners=(IDLE,)), after, [])
    assert d.status == status and d.exit_code == ("ok", "warning", "critical").index(status)
    got = (d.cause.limit, d.cause.subject) if d.cause else (None, None)
    assert got == (cause, subject)
    assert d.line.startswith(f"TCPCEILING {status.upper()} - ")
    assert re.fullmatch(r"'[^'=]+'=[0-9.]+;[0-9.]+;[0-9.]+;0;[0-9.]+", d.perfdata[0]), d.perfdata


def test_kernel_words_join_their_limit() -> None:
    records = [
        "4,101,5000000,-;TCP: out of memory -- consider tuning tcp_mem",
        "6,102,9000000,-;nf_conntrack: nf_conntrack: table full, dropping packet",
        " SUBSYSTEM=net",  # a continuation line
        "6,103,1000000,-;TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:80.",
    ]
    msgs = [m for m in map(kmsg.parse_record, records) if m]
    assert [m.seconds for m in msgs] == [5.0, 9.0, 1.0]
    hits = kmsg.hits(msgs, since=2.0)  # the SYN flood message is older
    assert [(h.limit, h.severity) for h in hits] == [
        ("tcp_mem", "critical"),
        ("conntrack", "critical"),
    ]
    d = diagnose(sample(0), sample(2), hits)
    assert d.status == "critical" and "table full" in " ".join(
        e for f in d.findings for e in f.evidence
    )


def test_kmsg_reads_a_file_of_records(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text("6,1,2000000,-;TCP: out of memory -- consider tuning tcp_mem\n")
    assert kmsg.read(log)[0].text == "TCP: out of memory -- consider tuning tcp_mem"
    assert kmsg.read(tmp_path / "absent") == []


def test_watch_frame_shows_the_limit_red() -> None:
    console = Console(record=True, width=140, force_terminal=True, color_system="standard")
    console.print(frame(sample(2, (NGINX, REDIS)), {"new_connections": 3.0}, 0.8, 0.95))
    text = console.export_text(styles=True)
    nginx = next(line for line in text.splitlines() if "nginx" in line)
    assert "\x1b[1;31m" in nginx  # bold red
    assert "\x1b[1;31m" not in next(line for line in text.splitlines() if "redis" in line)


def exported(s: Sample) -> str:
    return generate_latest(exporter.registry(lambda: s)).decode()


def series(text: str) -> dict[str, float]:
    """The exposition format's sample lines as {name{labels}: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_exporter_metrics_follow_node_exporters_names() -> None:
    text = exported(sample(2, (NGINX,), (FULL,), (PORTS,)))
    got = series(text)
    assert got['tcpceiling_process_open_fds{comm="nginx",pid="4242"}'] == 299
    assert got['tcpceiling_process_max_fds{comm="nginx",pid="4242"}'] == 300
    assert (
        got['tcpceiling_ephemeral_ports_in_use{dport="5432",dst="10.0.0.9",src="10.0.0.1"}']
        == 25_000
    )
    assert got['tcpceiling_ceiling_connections{limit="nofile",role="server"}'] == 19_992
    assert got['tcpceiling_limit_capacity{limit="tcp_mem"}'] == 500_000 * exporter.PAGE  # bytes
    assert got['tcpceiling_listen_queue_limit{address="127.0.0.1",port="8080"}'] == 512
    assert got["tcpceiling_tcp_listen_overflows_total"] == 10
    assert "# TYPE tcpceiling_tcp_listen_overflows_total counter" in text
    assert not any('limit="ports",role="client"' in k for k in got)  # does not bind: no series


def test_shipped_rules_and_dashboard_use_exported_names() -> None:
    names = set(
        re.findall(
            r"^# TYPE (tcpceiling_\w+?)(?:_total)? ",
            exported(sample(2, (NGINX,), (FULL,), (PORTS,))),
            re.M,
        )
    )
    names |= {m.name for m in exporter.failure_metrics(FailureTotals())}  # exporter --trace
    names |= {n + "_total" for n in names}
    rules = (DEPLOY / "prometheus" / "tcpceiling-alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "tcpceiling.json").read_text())
    used = set(re.findall(r"tcpceiling_\w+", rules)) | {
        n
        for p in dashboard["panels"]
        for t in p["targets"]
        for n in re.findall(r"tcpceiling_\w+", t["expr"])
    }
    assert used and used <= names, used - names


def test_a_services_processes_from_its_cgroup(tmp_path: Path) -> None:
    from tcpceiling.host.roots import Roots
    from tcpceiling.observe.sample import service_pids

    cg = tmp_path / "sys" / "fs" / "cgroup"
    system = cg / "system.slice" / "nginx.service"
    user = cg / "user.slice" / "user-1000.slice" / "user@1000.service" / "app.slice" / "web.service"
    for d, pids in ((system, "10\n11\n"), (user, "123\n456\n")):
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text(pids)
    roots = Roots(procfs=tmp_path / "proc", sysfs=tmp_path / "sys")
    assert service_pids(roots, "nginx") == (10, 11)
    assert service_pids(roots, "web.service") == (123, 456)
    with pytest.raises(InputError, match=r"no cgroup for ghost\.service"):
        service_pids(roots, "ghost")


CAP_FULL = CapUse(9000, 50, 50, "ct count over 50 reject with tcp reset (table inet filter)")
NAT_FULL = NatUse("198.18.6.2", 9000, 100, 100, "masquerade to :60000-60099 (table ip nat)")
ORPHANS = HostLimit("orphans", 130_000, 131_072, "sockets", "sockstat")
PRESSURE = HostLimit("tcp_mem_pressure", 200_000, 190_000, "pages", "sockstat, tcp_mem[1]")
NEIGH = HostLimit("neighbours", 1_020, 1_024, "entries", "arp_cache, gc_thresh3")


@pytest.mark.parametrize(
    ("after", "status", "cause", "subject", "words"),
    [
        # a NAT whose tuples toward one destination are all in use: doctor names it
        (replace(sample(2), nat=(NAT_FULL,)), "critical", "snat_ports",
         "NAT -> 198.18.6.2:9000 (masquerade to :60000-60099 (table ip nat))",
         "100 of 100 NAT tuples"),
        (sample(2, conntrack__insert_failed=20), "critical", "conntrack", "host",
         "conntrack insert_failed 10.0/s"),
        (sample(2, TcpExt__TCPReqQFullDrop=8), "critical", "syn_queue", "host",
         "TCPReqQFullDrop 4.0/s"),
        (sample(2, TcpExt__TCPReqQFullDoCookies=8), "warning", "syn_queue", "host",
         "TCPReqQFullDoCookies 4.0/s"),
        (sample(2, TcpExt__TCPMemoryPressures=2), "warning", "tcp_mem", "host",
         "TCPMemoryPressures 1.0/s"),
        (sample(2, neigh__table_fulls=6), "critical", "neighbours", "host",
         "arp_cache table_fulls 3.0/s"),
        (replace(sample(2), host=(*HOST, ORPHANS)), "warning", "orphans", "host",
         "130,000 of 131,072 sockets"),
        (replace(sample(2), host=(*HOST, PRESSURE)), "critical", "tcp_mem_pressure", "host",
         "200,000 of 190,000 pages"),
        (replace(sample(2), host=(*HOST, NEIGH)), "critical", "neighbours", "host",
         "1,020 of 1,024 entries"),
        (replace(sample(2), caps=(CAP_FULL,)), "critical", "firewall",
         "port 9000 (ct count over 50 reject with tcp reset (table inet filter))",
         "50 of 50 connections"),
    ],
)  # fmt: skip
def test_doctor_names_the_quieter_limits(
    after: Sample, status: str, cause: str, subject: str, words: str
) -> None:
    """The path and the quieter limits, each with its counter or its numbers."""
    d = diagnose(sample(0), after, [], warn=0.8, crit=0.995)
    assert (d.status, d.cause and d.cause.limit, d.cause and d.cause.subject) == (
        status, cause, subject,
    ), d.findings  # fmt: skip
    assert d.cause is not None
    assert d.cause.evidence[0].startswith(words) and d.cause.fix, d.cause.evidence
