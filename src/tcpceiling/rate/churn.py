"""The other half of the question: how many new connections per second, and what
stops the rate. `tcpceiling rate` runs cycles of connect -> close over and over
against a sink of its own (in a private network namespace when root), at a fixed
rate or as fast as the workers go, and names the limit from the evidence.

Who closes first keeps TIME_WAIT (docs/limits.md §2): `client` (the client's port
toward the sink stays busy 60 s), `server` (the sink's end closes first and keeps
it), `rst` (SO_LINGER 0: no TIME_WAIT at all). Each worker accepts on a listener of
its own in the same process, as the C reference (benchmarks/cref.c churn) does: the
CPU per cycle is both ends' together.
"""

from __future__ import annotations

import _socket
import errno
import os
import signal
import socket
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

import psutil

from tcpceiling.analysis.analyze import analyze, sources_here
from tcpceiling.analysis.model import Endpoint, ScenarioResult, build_scenarios
from tcpceiling.errors import InputError
from tcpceiling.host import diag, sockets
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.read import read_net_counters, socket_owners
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget, isolate, measure
from tcpceiling.probe.run.config import check_sysctl_key
from tcpceiling.probe.run.progress import Progress, RunProgress, ignore
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.serving import checks
from tcpceiling.probe.workers import errnos
from tcpceiling.probe.workers.children import Children
from tcpceiling.probe.workers.client import IP_BIND_ADDRESS_NO_PORT
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import ChurnProgress
from tcpceiling.probe.workers.procs import Reporter
from tcpceiling.probe.workers.sink import listener
from tcpceiling.probe.workers.worker import LINGER_RST, raise_nofile
from tcpceiling.signals import ended_by_signal, raise_if_caught

CloseMode = Literal["client", "server", "rst"]
SINK_PORT = 32000
REPORT_EVERY = 0.5
BURST = 64  # cycles between clock reads when not paced
#: Counters that say why the rate stopped growing (/proc/net/netstat TcpExt).
COUNTERS = (
    "TCPTimeWaitOverflow",
    "TWRecycled",
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "SyncookiesSent",
)
#: The client's port search fails this way when every port is in TIME_WAIT.
PORTS_GONE = (errno.EADDRNOTAVAIL, errno.EADDRINUSE)


@dataclass(frozen=True)
class ChurnConfig:
    """rate None: as fast as the workers go (the plateau)."""

    rate: float | None = None
    duration: float = 5.0
    close: CloseMode = "client"
    workers: int = 1
    sysctls: tuple[tuple[str, str], ...] = ()
    isolate: bool | None = None
    connect_timeout: float = 1.0
    ramp: bool = False  # rate None only: double the workers up to `workers` until the
    # rate stops growing (< 5 % more) or errors begin; the best step is the plateau
    connect: Endpoint | None = None  # a real server instead of the built-in pairs
    check: str = "none"  # a request whose valid reply makes the cycle count
    netns: str | None = None  # an existing namespace to run in
    cgroup_floor: int | None = None  # None: the memory guard's default (probe.budget)
    #: source addresses the cycles rotate over (each its own 4-tuples: ports x sources
    #: per TIME_WAIT period); () lets the kernel pick
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if checks.parse(self.check).kind != "none" and self.connect is None:
            raise InputError("--check needs --connect (the built-in sink is not a service)")
        if self.rate is not None and self.rate <= 0:
            raise InputError("--rate must be positive (or 'max')")
        if not 0 < self.duration <= 3600:
            raise InputError("--duration must be in (0, 3600] seconds")
        if self.workers < 1:
            raise InputError("--workers must be at least 1")

    @property
    def isolated(self) -> bool:
        """A private namespace: by default when root and the sink is ours."""
        if self.isolate is None:
            return os.geteuid() == 0 and self.connect is None and self.netns is None
        return self.isolate


@dataclass(frozen=True)
class ChurnResult:
    close: CloseMode
    rate_asked: float | None
    duration: float
    completed: int
    #: what can be sustained: the run's own rate, or once the ports ran out the
    #: long-run rate TIME_WAIT lets through, measured (steady_per_s) when the run
    #: went on a TIME_WAIT period past the shortage, else predicted (analyze's
    #: time_wait for the run's namespace); sustained_from says which
    sustained_per_s: float
    #: completed cycles per second of the run, summed over the workers
    per_second: tuple[int, ...]
    connect_latency_us: dict[str, float | None]
    #: connect() latency as (bucket's upper edge in µs, count): the distribution
    connect_latency_histogram: tuple[tuple[float, int], ...]
    #: analyze's rate ceiling for the run's namespace and the limit it names
    predicted_per_s: float | None
    predicted_binding: str | None
    #: connect latency percentiles of every second (p50, p95, p99)
    latency_per_second_us: tuple[dict[str, float | None], ...]
    #: once the ports ran out: the cycles after / the time after, when the run went on
    #: for a TIME_WAIT period (60 s) past it; the rate TIME_WAIT lets through
    steady_per_s: float | None
    errno_counts: dict[str, int]
    time_wait: dict[str, int]  # TIME_WAIT entries at the end, by side
    counters: dict[str, int]  # deltas over the run
    #: both ends (one process) per cycle, from the bursts that completed cycles (a
    #: remote server's side: its CPU over the run)
    cpu_us_per_cycle: dict[str, float | None]
    stop: Stop
    isolated: bool
    netns: str | None
    notes: tuple[str, ...] = ()
    steps: tuple[tuple[int, float], ...] = ()  # the ramp: (workers, sustained per s)
    sustained_from: Literal["run", "measured", "predicted"] = "run"
    worker_cpu_seconds: float = 0.0  # the workers' CPU over the whole run, retries included
    burst_per_s: float = 0.0  # completed / duration: the first range's burst included


# -- the workers ---------------------------------------------------------------------------


@dataclass
class _Tally:
    per_second: Counter[int] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    hist: Histogram = field(default_factory=Histogram)
    second_hists: dict[int, Histogram] = field(default_factory=dict)
    completed: int = 0
    exhausted_at: float | None = None
    after_exhausted: int = 0
    cycling_cpu: float = 0.0  # CPU seconds of the bursts that completed cycles

    def add(self, second: int, done: int, took: float) -> None:
        self.completed += done
        if self.exhausted_at is not None:
            self.after_exhausted += done
        self.per_second[second] += done
        self.hist.add(took * 1e6)
        self.second_hists.setdefault(second, Histogram()).add(took * 1e6)


class Sources:
    """The source addresses to bind, one per cycle in turn, with
    IP_BIND_ADDRESS_NO_PORT so connect() picks the port per 4-tuple (docs/limits.md §1)."""

    def __init__(self, sources: tuple[str, ...]) -> None:
        self.sources, self.turn = sources, 0

    def bind(self, c: _socket.socket) -> None:
        if not self.sources:
            return
        c.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        c.bind((self.sources[self.turn % len(self.sources)], 0))
        self.turn += 1


class Pair:
    """A worker's own listener, accepting in the same process as it connects (as the
    C reference does): no wake-up of another process per connection."""

    def __init__(self, port: int, close: CloseMode, sources: tuple[str, ...] = ()) -> None:
        self.ls = listener("127.0.0.1", port, 4096)
        self.ls.setblocking(True)
        self.dst, self.close = ("127.0.0.1", port), close
        self.sources = Sources(sources)

    def burst(self, n: int) -> tuple[int, float, int]:
        """Up to n connect -> accept -> close cycles, in the order --close asks:
        (cycles done, the first connect()'s seconds, the errno that ended the burst
        or 0). The hot loop of a churn run: names bound once, one clock read."""
        sock, fam, stream = _socket.socket, socket.AF_INET, socket.SOCK_STREAM
        accept, close_fd, dst = self.ls._accept, os.close, self.dst  # type: ignore[attr-defined]
        rst, server_first = self.close == "rst", self.close == "server"
        sol, linger, rst_opt = socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST
        bind = self.sources.bind if self.sources.sources else None
        t0 = time.perf_counter()
        took = 0.0
        for i in range(n):
            c = sock(fam, stream)
            if rst:
                c.setsockopt(sol, linger, rst_opt)
            try:
                if bind is not None:
                    bind(c)
                c.connect(dst)  # loopback: the handshake completes inside connect()
            except OSError as exc:
                c.close()
                return i, took, exc.errno or errno.ETIMEDOUT
            if i == 0:
                took = time.perf_counter() - t0
            fd = accept()[0]
            if server_first:  # the server's FIN first: TIME_WAIT stays its side
                close_fd(fd)
                c.close()
            else:
                c.close()
                close_fd(fd)
        return n, took, 0


#: A reply that is not the check's: counted with this errno (protocol error).
BAD_REPLY = errno.EPROTO
#: What marks the first shortage, after which the long-run rate is measured: out of
#: ports here, or the server's refusal (a proxy out of ports toward its upstream
#: answers 502 while its TIME_WAITs give the ports back one period later)
SHORT = (*PORTS_GONE, BAD_REPLY)


class Remote:
    """Cycles against a real server: connect, the check's request and its reply,
    then close as --close asks ("server": wait for the server's close)."""

    def __init__(self, cfg: ChurnConfig) -> None:
        assert cfg.connect is not None
        host, self.cfg = cfg.connect.host, cfg
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.dst = (host, cfg.connect.port)
        self.check = checks.parse(cfg.check)
        req = self.check.request(host)
        if self.check.kind == "http" and cfg.close == "server":
            req = req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        self.request = req
        self.sources = Sources(cfg.sources)

    def burst(self, n: int) -> tuple[int, float, int]:
        """One cycle (n is 1 or more; a real server is paced by its replies)."""
        c = socket.socket(self.family, socket.SOCK_STREAM)
        c.settimeout(self.cfg.connect_timeout)
        try:
            if self.cfg.close == "rst":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            self.sources.bind(c)
            t0 = time.perf_counter()
            c.connect(self.dst)
            took = time.perf_counter() - t0
            if not self._served(c):
                return 0, took, BAD_REPLY
            if self.cfg.close == "server":
                while c.recv(65536):
                    pass
            return 1, took, 0
        except OSError as exc:  # socket.timeout carries no errno: a timeout
            return 0, 0.0, exc.errno or errno.ETIMEDOUT
        finally:
            c.close()

    def _served(self, c: socket.socket) -> bool:
        if self.check.kind == "none":
            return True
        c.sendall(self.request)
        buf = b""
        while True:
            data = c.recv(65536)
            buf = (buf + data)[: checks.MAX_REPLY]
            v = self.check.verdict(buf, self.request)
            if v.outcome != "more":
                return v.outcome == "ok"
            if not data:
                return False


def churn_worker(
    port: int, index: int, per_worker: float | None, cfg: ChurnConfig, rep: Reporter
) -> None:
    """Cycles until the duration is over, paced at per_worker/s when given (one at a
    time), else in bursts of BURST between clock reads; the connect latency is taken
    on the first cycle of each burst."""
    raise_nofile(None)
    stopped: list[bool] = []  # SIGUSR1: the memory guard ends the run early
    signal.signal(signal.SIGUSR1, lambda *_: stopped.append(True))
    pair: Pair | Remote = Remote(cfg) if cfg.connect else Pair(port, cfg.close, cfg.sources)
    tally, t0 = _Tally(), time.perf_counter()
    last = t0
    burst = 1 if per_worker is not None or cfg.connect else BURST
    while (now := time.perf_counter()) - t0 < cfg.duration and not stopped:
        if (
            per_worker is not None
            and tally.completed + sum(tally.errors.values()) > (now - t0) * per_worker
        ):
            time.sleep(0.001)
            continue
        cpu0 = time.process_time()  # CLOCK_PROCESS_CPUTIME_ID: os.times() counts 10 ms ticks
        done, took, err = pair.burst(burst)
        if done:
            tally.add(int(now - t0), done, took)
            tally.cycling_cpu += time.process_time() - cpu0
        if err:
            tally.errors[err] += 1
            if err in SHORT:
                if tally.exhausted_at is None:
                    tally.exhausted_at = time.perf_counter() - t0
                time.sleep(0.01)  # each attempt scans the whole range: do not spin
        if now - last > REPORT_EVERY:
            last = now
            rep.send(_progress(index, tally, cfg.duration, final=False))
    rep.send(_progress(index, tally, cfg.duration, final=True))


def _progress(index: int, t: _Tally, duration: float, final: bool) -> ChurnProgress:
    seconds = int(duration + 0.999)
    return ChurnProgress(
        index,
        "client",
        completed=t.completed,
        per_second=tuple(t.per_second.get(i, 0) for i in range(seconds)),
        errors=dict(t.errors),
        hist=t.hist.counts,
        final=final,
        cpu=sum(os.times()[:2]),
        cpu_cycling=t.cycling_cpu,
        per_second_hist=tuple(
            t.second_hists[i].counts if i in t.second_hists else {} for i in range(seconds)
        ),
        exhausted_at=t.exhausted_at,
        after_exhausted=t.after_exhausted,
    )


# -- the run -----------------------------------------------------------------------------------


def _tcpext(roots: Roots) -> dict[str, int]:
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


def _steady(progress: list[ChurnProgress], duration: float) -> float | None:
    """The rate after the first port shortage, over a window of at least one
    TIME_WAIT period: by then the ports come back as fast as they were taken."""
    at = [p.exhausted_at for p in progress if p.exhausted_at is not None]
    if not at or duration - min(at) < TIME_WAIT_SECONDS:
        return None
    return round(sum(p.after_exhausted for p in progress) / (duration - min(at)), 3)


def _cpu_evidence(
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


def _server_pids(cfg: ChurnConfig) -> list[int]:
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


GROWTH = 1.05  # a ramp step must beat the best by this much to go on


def ramp_counts(cfg: ChurnConfig) -> list[int]:
    """Worker counts to try: 1, 2, 4 ... up to cfg.workers when ramping."""
    if not cfg.ramp or cfg.rate is not None:
        return [cfg.workers]
    counts, n = [], 1
    while n < cfg.workers:
        counts.append(n)
        n *= 2
    return [*counts, cfg.workers]


class ChurnRun:
    def __init__(self, cfg: ChurnConfig, progress: Progress = ignore) -> None:
        self.cfg, self.progress = cfg, progress
        self.kids = Children()
        self.lines = budget.cgroup_lines(Roots(), cfg.cgroup_floor)
        self.breach: budget.Breach | None = None
        self.notes: tuple[str, ...] = ()

    def _guard(self) -> None:
        """The memory guard: past a memory cgroup's line, every worker ends now."""
        if self.breach is None and self.lines:
            self.breach = budget.cgroup_breach(self.lines)
            if self.breach is not None:
                self.kids.signal(self.kids.clients, signal.SIGUSR1)

    def _tick(self, cfg: ChurnConfig, t0: float) -> None:
        """Cycles so far, against the run's duration (one step of a ramp at a time);
        the memory guard; a signal whose interrupt was lost (in a fork) ends it here."""
        raise_if_caught()
        self._guard()
        done = sum(w.churn.completed for w in self.kids.client_states if w.churn is not None)
        elapsed = time.monotonic() - t0
        label = f"{cfg.workers} worker{'s' if cfg.workers > 1 else ''}"
        event = RunProgress("churning", min(elapsed, cfg.duration), cfg.duration, elapsed, done)
        self.progress(replace(event, workers=cfg.workers, label=label))

    def execute(self) -> ChurnResult:
        for key, _v in self.cfg.sysctls:
            check_sysctl_key(key)
        if self.cfg.sysctls and not self.cfg.isolated:
            raise InputError("--sysctl needs the run's own namespace (root, --isolate)")
        with ExitStack() as stack:
            stack.enter_context(ended_by_signal())  # SIGTERM too: the namespace goes
            ns = self.cfg.netns
            if self.cfg.isolated:
                ns = stack.enter_context(isolate.private_netns(self.cfg.sysctls))
            note = sources_here(self.cfg.sources, ns, self.cfg.isolated)
            self.notes = (note,) if note else ()
            with netns_mod.inside(ns):
                return self._ramp(ns)
        raise AssertionError("unreachable")

    def _ramp(self, ns: str | None) -> ChurnResult:
        """One step, or the ramp: the best step, with every step's rate."""
        best: ChurnResult | None = None
        steps: list[tuple[int, float]] = []
        for workers in ramp_counts(self.cfg):
            self.kids = Children()
            try:
                r = self._run(ns, replace(self.cfg, workers=workers))
            finally:
                self.kids.release()
            steps.append((workers, r.sustained_per_s))
            grew = best is None or r.sustained_per_s >= GROWTH * best.sustained_per_s
            if best is None or r.sustained_per_s > best.sustained_per_s:
                best = r
            if not grew or r.errno_counts or self.breach is not None:
                break
        assert best is not None
        return replace(best, steps=tuple(steps))

    def _run(self, ns: str | None, cfg: ChurnConfig) -> ChurnResult:
        roots, kids = Roots(), self.kids
        ports = [SINK_PORT + i for i in range(cfg.workers)]
        if cfg.connect is not None:
            ports = [cfg.connect.port] * cfg.workers
        before = _tcpext(roots)
        per = cfg.rate / cfg.workers if cfg.rate else None
        for i, port in enumerate(ports):
            kids.spawn("client", partial(churn_worker, port, i, per, cfg))
        server = _server_pids(cfg)
        server_cpu = measure.cpu_seconds(server)
        psutil.cpu_percent(percpu=True)  # starts the per-CPU window
        t0 = time.monotonic()
        kids.wait_for(
            kids.clients, lambda w: w.finished, cfg.duration + 30, tick=partial(self._tick, cfg, t0)
        )
        # CPU per cycle from the bursts that did cycles: a run out of ports spends its
        # other seconds retrying connect() (each scans the range), which is no cycle's
        mine = sum(w.churn.cpu_cycling for w in kids.client_states if w.churn is not None)
        spent = sum(w.churn.cpu for w in kids.client_states if w.churn is not None)
        cpu = {"both": mine}
        if cfg.connect is not None:
            cpu = {"client": mine}
            if server:
                cpu["server"] = measure.cpu_seconds(server) - server_cpu
        per_cpu = [round(p, 1) for p in psutil.cpu_percent(percpu=True)]
        tw = time_wait_by_side(set(ports))
        after = _tcpext(roots)
        result = replace(
            self._result(cfg, ns, before, after, tw, cpu), worker_cpu_seconds=round(spent, 3)
        )
        if self.breach is not None:
            return replace(result, stop=budget.guard_stop(self.breach))
        lost = [w for w in kids.client_states if not w.finished]
        if lost:  # a worker that died counted nothing of its share: say so
            names = ", ".join(f"{w.index} (pid {w.pid})" for w in lost)
            stop = Stop("worker_died", detail=f"churn worker(s) {names} ended without a result")
            return replace(result, stop=stop)
        if result.stop.reason != "cpu":
            return result
        return replace(result, stop=_cpu_evidence(result.stop, per_cpu, cpu, server))

    def _result(
        self,
        cfg: ChurnConfig,
        ns: str | None,
        before: dict[str, int],
        after: dict[str, int],
        tw: dict[str, int],
        cpu: dict[str, float],
    ) -> ChurnResult:
        progress = [w.churn for w in self.kids.client_states if w.churn is not None]
        completed = sum(p.completed for p in progress)
        seconds = max((len(p.per_second) for p in progress), default=0)
        per_second = tuple(
            sum(p.per_second[i] for p in progress if i < len(p.per_second)) for i in range(seconds)
        )
        errors: Counter[int] = Counter()
        hist = Histogram()
        seconds_hist = [Histogram() for _ in range(seconds)]
        for p in progress:
            errors.update(p.errors)
            hist.merge(p.hist)
            for i, h in enumerate(p.per_second_hist[:seconds]):
                seconds_hist[i].merge(h)
        d = {k: after.get(k, 0) - before.get(k, 0) for k in (*COUNTERS, "conntrack_drop")}
        burst = round(completed / cfg.duration, 1)
        steady = _steady(progress, cfg.duration)
        short = any(p.exhausted_at is not None for p in progress)
        sustained, source = long_run(burst, steady, predicted_rate(cfg, ns) if short else None)
        predicted_per_s, predicted_binding = prediction(cfg, ns)
        return ChurnResult(
            close=cfg.close,
            rate_asked=cfg.rate,
            duration=cfg.duration,
            completed=completed,
            sustained_per_s=sustained,
            sustained_from=source,
            burst_per_s=burst,
            per_second=per_second,
            connect_latency_us=hist.summary(),
            connect_latency_histogram=hist.buckets(),
            predicted_per_s=predicted_per_s,
            predicted_binding=predicted_binding,
            latency_per_second_us=tuple(h.summary() for h in seconds_hist),
            steady_per_s=steady,
            errno_counts={errnos.name(k): v for k, v in errors.items()},
            time_wait=tw,
            counters=d,
            cpu_us_per_cycle={
                side: round(sec * 1e6 / completed, 2) if completed else None
                for side, sec in cpu.items()
            },
            stop=attribute(cfg, burst, dict(errors), d),
            isolated=cfg.isolated,
            netns=ns,
            notes=self.notes,
        )


def long_run(
    run: float, steady: float | None, predicted: float | None
) -> tuple[float, Literal["run", "measured", "predicted"]]:
    """The rate to headline: the run's own unless the ports ran out; then the rate
    after the shortage when the run lasted a TIME_WAIT period past it, else the
    prediction (a 20 s run in 100 ports did 100 in its first second, then nothing:
    what it sustains is 100 / 60 s, not 5/s)."""
    if steady is not None:
        return steady, "measured"
    if predicted is not None:
        return min(run, predicted), "predicted"
    return run, "run"


def _client_analysis(cfg: ChurnConfig, ns: str | None) -> ScenarioResult:
    """analyze's client scenario for the run's destinations in its namespace."""
    dests = (
        (str(cfg.connect),)
        if cfg.connect
        else tuple(f"127.0.0.1:{SINK_PORT + i}" for i in range(cfg.workers))
    )
    scenarios = build_scenarios("client", connect=dests, source_ip=cfg.sources)
    return analyze(scenarios, Roots(), netns=ns).scenarios[0]


def predicted_rate(cfg: ChurnConfig, ns: str | None) -> float | None:
    """analyze's time_wait rate for the run's destinations in its namespace (None:
    TIME_WAIT does not bind there, e.g. tcp_tw_reuse applies)."""
    ceiling = _client_analysis(cfg, ns).constraint("time_wait").ceiling
    return None if ceiling is None else float(ceiling)


def prediction(cfg: ChurnConfig, ns: str | None) -> tuple[float | None, str | None]:
    """analyze's rate ceiling for the run and the limit it names (report beside the
    proof: what the run sustained)."""
    r = _client_analysis(cfg, ns)
    return r.rate_ceiling, r.rate_binding


def run_churn(cfg: ChurnConfig, progress: Progress = ignore) -> ChurnResult:
    return ChurnRun(cfg, progress).execute()
