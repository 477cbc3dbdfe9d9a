"""Forked worker processes that cannot outlive the run.

Each child gets PR_SET_PDEATHSIG(SIGKILL) so it dies with the coordinator, ignores
SIGINT (the coordinator decides how a Ctrl-C ends the run), and reports to the
coordinator with typed messages (tcpceiling.probe.workers.messages), a JSON line each, on a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tcpceiling.probe.workers.messages import Crash, Message, decode, encode

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Child:
    pid: int
    role: str
    index: int
    reader: int  # read end of the child's report pipe
    buffer: bytes = b""
    exit_status: int | None = None


class Reporter:
    """The child's side of the pipe: one message per line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, msg: Message) -> None:
        data = encode(msg)
        while data:
            data = data[os.write(self.fd, data) :]


def die_with_parent(signum: int) -> None:
    """prctl(2) PR_SET_PDEATHSIG: this process gets `signum` when its parent ends."""
    _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def spawn(role: str, index: int, target: Callable[[Reporter], None]) -> Child:
    """fork(); the child runs target(reporter) and exits; the parent gets a Child."""
    r, w = os.pipe()
    parent = os.getpid()
    # The coordinator's heap, now shared with the child, is never scanned again on
    # this side either: a full collection in the coordinator after the fork writes
    # to every object and copies the shared pages back into the coordinator (the
    # memory cgroup held 15 MiB more anonymous memory at 20,000 connections, and a
    # probe under a 256 MiB limit stopped at 33,280 instead of 36,352). gc.freeze()
    # before fork, as the gc module's documentation advises for fork without exec.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # child
        # What the child inherited is never collected here: a full collection writes
        # to every object it scans, copying the coordinator's heap into the child
        # page by page (18 MiB more per client worker when it happened, and then the
        # memory guard's cgroup saw 48 MiB it did not count per connection)
        gc.freeze()
        code = 0
        try:
            os.close(r)
            os.closerange(3, w)  # nothing of the coordinator's (other pipes, netlink) leaks
            os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))
            die_with_parent(signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            target(Reporter(w))
        except BaseException as exc:  # report, never unwind into the parent's code
            try:
                Reporter(w).send(Crash(f"{type(exc).__name__}: {exc}"))
            finally:
                code = 1
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    return Child(pid=pid, role=role, index=index, reader=r)


def read_messages(child: Child) -> tuple[list[Message], bool]:
    """Drain a child's pipe: (complete messages, pipe closed)."""
    closed = False
    if child.reader < 0:
        return [], True
    while True:
        try:
            chunk = os.read(child.reader, 65536)
        except BlockingIOError:
            break
        if not chunk:
            closed = True
            break
        child.buffer += chunk
    *lines, child.buffer = child.buffer.split(b"\n")
    return [decode(line) for line in lines if line], closed


def signal_child(child: Child, sig: int) -> None:
    if child.exit_status is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, sig)


def close_pipe(child: Child) -> None:
    if child.reader >= 0:
        os.close(child.reader)
        child.reader = -1


def reap(child: Child, block: bool = False) -> bool:
    """Collect the child's exit status; True once it has exited."""
    if child.exit_status is not None:
        return True
    try:
        pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        child.exit_status = -1
        return True
    if pid == 0:
        return False
    child.exit_status = status
    return True
