"""The rate's workers: cycles of connect -> close against a listener of their own
in the same process (as the C reference, benchmarks/cref.c churn, does) or against a
real server with a check, paced or in bursts, and what each reports."""

from __future__ import annotations

import _socket
import errno
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from tcpceiling.host.parse import parse_port_range
from tcpceiling.host.roots import Roots
from tcpceiling.probe.serving import checks
from tcpceiling.probe.uring.churn import CHURN_ENTRIES, CHURN_OPS, UringCycles
from tcpceiling.probe.uring.engine import Engine, EngineChoice, open_ring
from tcpceiling.probe.workers import errnos
from tcpceiling.probe.workers.client import IP_BIND_ADDRESS_NO_PORT
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import ChurnProgress
from tcpceiling.probe.workers.procs import Reporter
from tcpceiling.probe.workers.sink import listener
from tcpceiling.probe.workers.worker import LINGER_RST, raise_nofile
from tcpceiling.rate.config import (
    BURST,
    PORTS_GONE,
    REPORT_EVERY,
    URING_BURST,
    ChurnConfig,
    CloseMode,
)


@dataclass
class Tally:
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
        self.cycles: UringCycles | None = None

    def use_engine(self, choice: EngineChoice) -> tuple[Engine, str]:
        """Cycle in io_uring bursts when asked and allowed: (what runs, why not)."""
        ring, refused = open_ring(choice, CHURN_OPS, entries=CHURN_ENTRIES)
        if ring is None:
            return "epoll", refused
        try:
            self.cycles = UringCycles(ring, self.ls, self.close, self.sources.sources)
        except OSError as exc:  # no room for its direct descriptors: EMFILE, ENOMEM
            ring.close()
            why = errnos.name(exc.errno or 0)
            return "epoll", f"io_uring's table of direct descriptors refused: {why}"
        return "uring", ""

    def burst(self, n: int) -> tuple[int, float, int]:
        """Up to n connect -> accept -> close cycles, in the order --close asks:
        (cycles done, the first connect()'s seconds, the errno that ended the burst
        or 0). The hot loop of a churn run: names bound once, one clock read."""
        if self.cycles is not None:
            return self.cycles.burst(n)
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


def uring_burst(sources: int) -> int:
    """A burst's connections are open at once, each holding a port until its close
    (the epoll path's one cycle holds one): at most half the ports toward the listener
    (the namespace's ip_local_port_range, per source), so a burst never runs out of
    ports on its own, whatever TIME_WAIT holds."""
    path = Roots().procfs / "sys/net/ipv4/ip_local_port_range"
    low, high = parse_port_range(path.read_text())
    return max(1, min(URING_BURST, (high - low + 1) * max(1, sources) // 2))


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
    engine: tuple[Engine, str] = ("epoll", "")
    if isinstance(pair, Pair) and per_worker is None:  # paced cycles go one at a time
        engine = pair.use_engine(cfg.engine)
    tally, t0 = Tally(), time.perf_counter()
    last = t0
    burst = 1 if per_worker is not None or cfg.connect else BURST
    if engine[0] == "uring":
        burst = uring_burst(len(cfg.sources))
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
            rep.send(progress_of(index, tally, cfg.duration, False, engine))
    rep.send(progress_of(index, tally, cfg.duration, True, engine))


def progress_of(
    index: int, t: Tally, duration: float, final: bool, engine: tuple[Engine, str]
) -> ChurnProgress:
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
        engine=engine[0],
        refused=engine[1],
    )
