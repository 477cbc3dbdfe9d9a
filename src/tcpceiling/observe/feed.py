"""A trace that runs as long as watch or the exporter does: its instance is read on a
thread of its own, and the events are taken by the frame or the scrape that shows
them (`Feed`); the exporter keeps them as counters with a bounded label set
(`FailureTotals`, pure).

The feed never looks up a failing connect's destination: that enters the process's
network namespace (setns of the reading thread), which the sampler may be doing at
the same moment; `tcpceiling trace` and `doctor --trace` give destinations."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable
from types import TracebackType

from tcpceiling.host.roots import Roots
from tcpceiling.observe.trace import Event, Row, Tracer, count, mounted, tracefs

READ_S = 0.5  # one read of trace_pipe: how soon the thread sees a stop
OTHER = "other"


class Feed:
    """A trace instance read on a thread; `take()` returns the rows since the last take."""

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        self._stack = contextlib.ExitStack()
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcpceiling-trace", daemon=True)

    def __enter__(self) -> Feed:
        base = tracefs(self.roots)
        with self._stack as stack:
            stack.enter_context(mounted(base, self.roots.procfs))
            self.tracer = stack.enter_context(Tracer(base, self.roots, destinations=False))
            self._thread.start()
            self._stack = stack.pop_all()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            events, _skipped = self.tracer.read(READ_S)  # past the cap: not counted
            with self._lock:
                self._events.extend(events)

    def take(self) -> tuple[Row, ...]:
        with self._lock:
            events, self._events = self._events, []
        return count(events)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(READ_S * 4)
        self._stack.__exit__(kind, exc, tb)


class FailureTotals:
    """Failures since the start per (limit, process, errno), as monotonic counters.

    The process label is the comm (pids churn; a counter must keep its labels): the
    first `most` comms seen get their own series, every later one is counted as
    "other", so the series stay bounded whatever fails on the host. Rows arrive the
    most first, so the first comms seen are the busiest of their scrape."""

    def __init__(self, most: int = 10) -> None:
        self.most = most
        self.totals: Counter[tuple[str, str, str]] = Counter()
        self.named: set[str] = set()

    def add(self, rows: Iterable[Row]) -> None:
        for r in rows:
            if r.comm not in self.named and len(self.named) < self.most:
                self.named.add(r.comm)
            process = r.comm if r.comm in self.named else OTHER
            self.totals[(r.limit, process, r.errno)] += r.count
