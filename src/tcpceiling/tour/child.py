"""A step's work in a forked child: placed in the step's cgroups before it runs
(so the cgroup charges it, not the tour), its result sent back through a pipe as a
typed message; the child is killed when it overruns."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Generic, TypeVar

from tcpceiling.errors import HostError
from tcpceiling.probe.workers.procs import die_with_parent
from tcpceiling.tour.cgroup import Group

T = TypeVar("T")


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


@dataclass(frozen=True)
class Failed:
    reason: str


class Child(Generic[T]):
    """fn() in a forked child, started now; `result()` waits for it."""

    def __init__(self, fn: Callable[[], T], groups: tuple[Group, ...] = ()) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, theirs = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_main, args=(theirs, fn, groups), daemon=True)
        self._proc.start()
        theirs.close()

    def result(self, timeout: float) -> T:
        try:
            if not self._conn.poll(timeout):
                raise HostError(f"a tour step overran its {timeout:.0f} s and was stopped")
            message: Done[T] | Failed = self._conn.recv()
        except EOFError as exc:
            raise HostError(f"a tour step died (exit {self._proc.exitcode})") from exc
        finally:
            self.stop()
        if isinstance(message, Failed):
            raise HostError(message.reason)
        return message.value

    def cancel(self) -> None:
        """Stop a child whose result is no longer wanted (the tour failed elsewhere)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self.stop()

    def stop(self) -> None:
        """Wait for the child; one that overran gets SIGTERM (the probe's own clean-up
        runs on it), then SIGKILL."""
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


def _main(conn: Connection, fn: Callable[[], object], groups: tuple[Group, ...]) -> None:
    """The child's run: a tour killed with SIGKILL sends it SIGTERM (prctl(2)
    PR_SET_PDEATHSIG), so its probe removes what it made instead of running on."""
    die_with_parent(signal.SIGTERM)
    for g in groups:
        g.add(os.getpid())
    try:
        conn.send(Done(fn()))
    except Exception as exc:  # the reason crosses back; the tour says it in one line
        conn.send(Failed(f"{type(exc).__name__}: {exc}"))
    except KeyboardInterrupt:  # cancelled (SIGTERM) or Ctrl-C: its clean-up has run
        pass
    finally:
        conn.close()
