"""The Sample as Prometheus metrics (prometheus_client), named as node_exporter
names its own: a `tcpceiling_` prefix, base units (bytes, not pages), `_total` for
counters, `_limit` for what a `_used`/`_in_use` value is measured against.

A custom collector reads a fresh Sample on every scrape, so the numbers are never
older than the scrape; the cardinality of the per-destination series is capped at
the top K destinations by ports in use."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tcpceiling.observe.feed import FailureTotals, Feed
from tcpceiling.observe.sample import Sample

PAGE = os.sysconf("SC_PAGE_SIZE")
#: Host limits in base units: (metric limit label, multiplier to the base unit).
BASE_UNITS = {"tcp_mem": PAGE}
#: Counters: metric name -> the Sample counters summed.
COUNTERS = {
    "tcp_active_opens": ("Tcp.ActiveOpens",),
    "tcp_passive_opens": ("Tcp.PassiveOpens",),
    "tcp_listen_overflows": ("TcpExt.ListenOverflows",),
    "tcp_listen_drops": ("TcpExt.ListenDrops",),
    "tcp_timewait_overflows": ("TcpExt.TCPTimeWaitOverflow",),
    "tcp_syn_retransmits": ("TcpExt.TCPSynRetrans",),
    "tcp_aborts_on_memory": ("TcpExt.TCPAbortOnMemory",),
    "conntrack_drops": ("conntrack.drop", "conntrack.early_drop"),
    "conntrack_insert_failed": ("conntrack.insert_failed",),
    "tcp_syn_queue_drops": ("TcpExt.TCPReqQFullDrop",),
    "tcp_syn_cookies": ("TcpExt.TCPReqQFullDoCookies",),
    "tcp_memory_pressures": ("TcpExt.TCPMemoryPressures",),
    "neighbour_table_fulls": ("neigh.table_fulls",),
}


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"tcpceiling_{name}", doc, labels=labels)


def ceiling_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    g = _gauge(
        "ceiling_connections",
        "Connections this host can hold as a role before this limit (tcpceiling analyze).",
        ["role", "limit"],
    )
    for c in s.ceilings:
        if c.ceiling is not None:
            g.add_metric([c.role, c.limit], c.ceiling)
    yield g


def host_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    cap = _gauge("limit_capacity", "What a host-wide limit allows, in base units.", ["limit"])
    use = _gauge("limit_in_use", "What a host-wide limit has in use, in base units.", ["limit"])
    for h in s.host:
        k = BASE_UNITS.get(h.limit, 1)
        if h.capacity is not None:
            cap.add_metric([h.limit], h.capacity * k)
        if h.used is not None:
            use.add_metric([h.limit], h.used * k)
    yield cap
    yield use


def process_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    labels = ["pid", "comm"]
    fds = _gauge(
        "process_open_fds", "Open file descriptors of a process holding TCP sockets.", labels
    )
    limit = _gauge("process_max_fds", "Its RLIMIT_NOFILE (soft).", labels)
    threads = _gauge("process_threads", "Its threads.", labels)
    tasks = _gauge("process_threads_limit", "Its cgroup pids.max, else kernel.threads-max.", labels)
    for p in s.processes:
        key = [str(p.pid), p.comm]
        fds.add_metric(key, p.open_fds)
        threads.add_metric(key, p.threads)
        if p.max_fds is not None:
            limit.add_metric(key, p.max_fds)
        if p.task_limit is not None:
            tasks.add_metric(key, p.task_limit)
    yield from (fds, limit, threads, tasks)


def port_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    labels = ["src", "dst", "dport"]
    use = _gauge(
        "ephemeral_ports_in_use",
        "Local ports held toward a destination (TIME_WAIT included); the top destinations only.",
        labels,
    )
    tw = _gauge("ephemeral_ports_time_wait", "Of which in TIME_WAIT.", labels)
    limit = _gauge(
        "ephemeral_ports_limit", "Usable ephemeral ports per (source, destination).", labels
    )
    for t in s.ports:
        key = [t.src, t.dst, str(t.dport)]
        use.add_metric(key, t.in_use)
        tw.add_metric(key, t.time_wait)
        limit.add_metric(key, t.usable)
    seen = _gauge("destinations", "(source, destination, port) tuples holding ephemeral ports.", [])
    seen.add_metric([], s.destinations)
    yield from (use, tw, limit, seen)


def listener_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    labels = ["address", "port"]
    queue = _gauge("listen_queue", "Connections waiting in a listener's accept queue.", labels)
    limit = _gauge("listen_queue_limit", "What the accept queue holds: backlog + 1.", labels)
    for ln in s.listeners:
        key = [ln.host, str(ln.port)]
        queue.add_metric(key, ln.queue)
        limit.add_metric(key, ln.backlog + 1)
    yield from (queue, limit)


def server_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    """Each known server's connections and its own cap (tcpceiling.servers)."""
    labels = ["server", "pid", "listen", "setting"]
    use = _gauge("app_connections", "Connections a known server holds on a listener now.", labels)
    cap = _gauge(
        "app_connections_limit",
        "What the server serves at once by its own setting (worker_connections, "
        "maxclients, maxconn, max_connections...).",
        labels,
    )
    for a in s.servers:
        key = [a.server, str(a.pid), a.listen, a.setting]
        use.add_metric(key, a.in_use or 0)
        if a.capacity is not None:
            cap.add_metric(key, a.capacity)
    yield from (use, cap)


def nat_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    """A NAT's tuples toward each destination it source-NATs flows to (host.nat)."""
    labels = ["dst", "dport"]
    use = _gauge("snat_tuples_in_use", "NATed flows toward a destination (conntrack).", labels)
    cap = _gauge(
        "snat_tuples_limit",
        "What the NAT rule allows toward it: ports in its range x NAT addresses.",
        labels,
    )
    for u in s.nat:
        use.add_metric([u.dst, str(u.dport)], u.used)
        cap.add_metric([u.dst, str(u.dport)], u.capacity)
    fw = _gauge("firewall_connections", "Live flows to a port a ct count cap guards.", ["port"])
    fw_cap = _gauge("firewall_connections_limit", "The cap: ct count over N.", ["port"])
    for c in s.caps:
        fw.add_metric([str(c.dport)], c.used)
        fw_cap.add_metric([str(c.dport)], c.capacity)
    yield from (use, cap, fw, fw_cap)


def upstream_metrics(s: Sample) -> Iterator[GaugeMetricFamily]:
    """A known proxy's ports toward each server of its listeners' upstreams."""
    labels = ["server", "listen", "upstream", "address"]
    use = _gauge(
        "upstream_ports_in_use",
        "A proxy's sockets toward an upstream server (TIME_WAIT included): each holds a port.",
        labels,
    )
    cap = _gauge(
        "upstream_ports_limit",
        "Ports the proxy may use toward that upstream server: source addresses x usable "
        "ports (or its own range), capped by the server's max_conns/maxconn.",
        labels,
    )
    tw = _gauge("upstream_ports_time_wait", "Of which in TIME_WAIT.", labels)
    rate = _gauge(
        "upstream_time_wait_rate_limit",
        "Requests per second toward the upstream server that TIME_WAIT lets through "
        "when the proxy closes each connection (ports / 60 s); absent with keep-alive.",
        labels,
    )
    for u in s.upstreams:
        key = [u.server, u.listen, u.upstream, u.address]
        use.add_metric(key, u.used)
        cap.add_metric(key, u.allowed)
        tw.add_metric(key, u.time_wait)
        if not u.keepalive:
            rate.add_metric(key, u.time_wait_rate)
    yield from (use, cap, tw, rate)


def counter_metrics(s: Sample) -> Iterator[CounterMetricFamily]:
    for name, keys in COUNTERS.items():
        if all(k in s.counters for k in keys):
            c = CounterMetricFamily(f"tcpceiling_{name}", f"The kernel's {' + '.join(keys)}.")
            c.add_metric([], sum(s.counters[k] for k in keys))
            yield c


def failure_metrics(totals: FailureTotals) -> Iterator[CounterMetricFamily]:
    """What `exporter --trace` saw fail since it started (tcpceiling.observe.trace)."""
    c = CounterMetricFamily(
        "tcpceiling_failures",
        "Failed socket calls and connects per limit the errno names, process (comm; the "
        "first few named, the rest as other) and errno, from a trace of the kernel.",
        labels=["limit", "process", "errno"],
    )
    for (limit, process, err), n in sorted(totals.totals.items()):
        c.add_metric([limit, process, err], n)
    yield c


class SampleCollector(Collector):
    """Reads a Sample on each scrape and yields every family; with a feed, the
    failures it traced since the last scrape are added to the totals."""

    def __init__(self, sampler: Callable[[], Sample], feed: Feed | None = None) -> None:
        self.sampler, self.feed = sampler, feed
        self.totals = FailureTotals()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        t0 = time.perf_counter()
        s = self.sampler()
        for family in (
            ceiling_metrics,
            host_metrics,
            process_metrics,
            port_metrics,
            listener_metrics,
            server_metrics,
            upstream_metrics,
            nat_metrics,
            counter_metrics,
        ):
            yield from family(s)
        if self.feed is not None:
            with self._lock:
                self.totals.add(self.feed.take())
                yield from failure_metrics(self.totals)
        took = _gauge("scrape_duration_seconds", "How long reading the host took.", [])
        took.add_metric([], time.perf_counter() - t0)
        yield took


def registry(sampler: Callable[[], Sample], feed: Feed | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SampleCollector(sampler, feed))
    return reg


def serve(reg: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve /metrics in a thread; the function that stops it."""
    server, thread = start_http_server(port, addr=host, registry=reg)

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return stop


def textfile(reg: CollectorRegistry, path: Path) -> None:
    """For node_exporter's textfile collector: written beside, then renamed."""
    write_to_textfile(str(path), reg)
