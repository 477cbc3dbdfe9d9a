"""Who is hitting a ceiling right now: the kernel's failures per process, as they happen.

A tracefs instance of our own (Documentation/trace/ftrace.rst, "Instances": its own
buffer and event switches, so the global trace is never touched) with filters so
that only failures arrive: the syscall exits of socket, connect, accept/accept4, bind,
epoll_ctl and clone/clone3 with an errno that names a limit (SYSCALL_FILTERS lists
them; EINPROGRESS of a non-blocking connect or EAGAIN of a non-blocking accept is not a
failure), and sock:inet_sock_set_state for a connect that went SYN_SENT -> CLOSE
(refused or timed out, with its 4-tuple). The kernel here has no hist triggers, so
events are counted in the reader; the filters keep them few.

`parse_line` and `count` are pure (table-tested with literal trace lines); `Tracer`
owns the instance and removes it on every exit path; a stale instance of a run that
was SIGKILLed (its pid gone) is removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from tcpceiling.errors import HostError
from tcpceiling.host import diag
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.owned import PREFIX, own_name, owner, owner_gone
from tcpceiling.host.read import read_comm, socket_inodes
from tcpceiling.host.roots import Roots
from tcpceiling.observe.listen_drops import ListenDrop, Overflows
from tcpceiling.probe.workers.errnos import constraint_for, name
from tcpceiling.signals import deferred, ended_by_signal, raise_if_caught

EVENTS_PER_SECOND = 20_000  # read at most this many; past it the rest is counted lost
EAGAIN = errno.EAGAIN
#: Errnos that mean a limit was reached (probe.errnos), for the calls that create fds.
FD_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: A connect's: out of ports, the fds and memory above, and a blocking connect refused
#: or timed out. Not EINPROGRESS, EALREADY or EISCONN (a non-blocking connect under
#: way), nor a unix socket's ENOENT or EAGAIN (its listener's backlog).
CONNECT_ERRNOS = (
    errno.EADDRNOTAVAIL, errno.EADDRINUSE, *FD_ERRNOS,
    errno.ECONNREFUSED, errno.ETIMEDOUT,
)  # fmt: skip


def ret_in(errnos: tuple[int, ...]) -> str:
    """A syscall-exit filter for these errnos (ret is the negative errno)."""
    return " || ".join(f"ret == -{n}" for n in errnos)


#: event -> filter: only failures that name a limit (or a peer's answer to connect).
SYSCALL_FILTERS = {
    "sys_exit_socket": ret_in(FD_ERRNOS),
    "sys_exit_connect": ret_in(CONNECT_ERRNOS),
    "sys_exit_accept": ret_in(FD_ERRNOS),
    "sys_exit_accept4": ret_in(FD_ERRNOS),
    "sys_exit_bind": ret_in((errno.EADDRINUSE,)),  # bind(port 0) out of ports
    "sys_exit_epoll_ctl": ret_in((errno.ENOSPC,)),
    "sys_exit_clone": ret_in((EAGAIN,)),
    "sys_exit_clone3": ret_in((EAGAIN,)),
}
#: A request of an io_uring program (IORING_OP_SOCKET, _CONNECT, _ACCEPT: no syscall
#: of its own) completed with a limit's errno: io_uring:io_uring_complete, whose
#: `res` is the request's return (include/trace/events/io_uring.h). Not a peer's
#: refusal or timeout: the socket's error report below counts those.
URING_FILTER = ret_in((*FD_ERRNOS, errno.EADDRNOTAVAIL, errno.EADDRINUSE)).replace("ret", "res")
TCP_SYN_SENT, TCP_CLOSE = 2, 7  # include/net/tcp_states.h
PEER_ERRNOS = (errno.ECONNREFUSED, errno.ETIMEDOUT)
#: A peer's refusal or a timeout, with its destination, however the connect was made
#: (blocking, non-blocking, io_uring): sock:inet_sk_error_report (Linux 5.14), which
#: fires where the kernel sets a socket's error (tcp_done_with_error(), net/ipv4/
#: tcp_input.c: ECONNREFUSED on a RST in SYN_SENT; tcp_write_err(), tcp_timer.c:
#: ETIMEDOUT, or the ICMP error the retries met). It fires once a failure; the
#: fallback, sock:inet_sock_set_state filtered on SYN_SENT -> CLOSE, fires on every
#: state change of every TCP socket (six a loopback connection) before its filter
#: drops them, and gives no errno.
NO_ERROR_REPORT = (
    "connects refused or timed out read from every TCP state change, with no errno "
    "(no sock:inet_sk_error_report: Linux < 5.14)"
)
ERROR_FILTER = " || ".join(
    f"error == {n}" for n in (*PEER_ERRNOS, errno.EHOSTUNREACH, errno.ENETUNREACH)
)
PORT_ERRNOS = (errno.EADDRNOTAVAIL, errno.EADDRINUSE)
PORT_CALLS = ("connect", "io_uring")  # a connect out of ports, by syscall or io_uring
STATE_FILTER = f"oldstate == {TCP_SYN_SENT} && newstate == {TCP_CLOSE}"
Kind = Literal["syscall", "connect_failed", "synack_retransmit"]
KERNEL = "kernel"  # the comm of a row counted in softirq, for no process


@dataclass(frozen=True)
class Event:
    comm: str
    pid: int
    kind: Kind
    call: str  # the syscall, or "connect" for an asynchronous failure
    errno: int  # 0 for an asynchronous failure (refused or timed out)
    destination: str | None = None


_HEAD = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[\d+\]\s+\S+\s+[\d.]+:\s+(?P<rest>.*)$")
_EXIT = re.compile(r"^sys_(?P<call>\w+) -> 0x(?P<ret>[0-9a-f]+)")
_URING = re.compile(r"^io_uring_complete: .*\bresult (?P<res>-?\d+)")
_FIELD = re.compile(r"(\w+)=(\S+)")


def parse_line(line: str) -> Event | None:
    """One trace_pipe line of our events; None for anything else."""
    m = _HEAD.match(line)
    if m is None:
        return None
    comm, pid, rest = m["comm"], int(m["pid"]), m["rest"]
    exit_ = _EXIT.match(rest)
    if exit_ is not None:
        ret = int(exit_["ret"], 16)
        if ret >= 1 << 63:
            ret -= 1 << 64
        return Event(comm, pid, "syscall", exit_["call"], -ret) if ret < 0 else None
    uring = _URING.match(rest)
    if uring is not None:
        res = int(uring["res"])
        return Event(comm, pid, "syscall", "io_uring", -res) if res < 0 else None
    if rest.startswith(("inet_sk_error_report:", "inet_sock_set_state:")):
        f = dict(_FIELD.findall(rest))
        host = f.get("daddr", "?")
        if f.get("family") == "AF_INET6":
            host = f"[{f.get('daddrv6', '?')}]"
        num = int(f.get("error", "0"))  # the set_state fallback has none
        return Event(comm, pid, "connect_failed", "connect", num, f"{host}:{f.get('dport', '?')}")
    if rest.startswith("tcp_retransmit_synack:"):
        f = dict(_FIELD.findall(rest))
        host = f.get("saddr", "?")
        if f.get("family") == "AF_INET6":
            host = f"[{f.get('saddrv6', '?')}]"
        return Event(KERNEL, 0, "synack_retransmit", "synack", 0, f"{host}:{f.get('sport', '?')}")
    return None


@dataclass(frozen=True)
class Row:
    comm: str
    pid: int
    call: str
    errno: str
    limit: str
    count: int
    destination: str | None = None


@dataclass(frozen=True)
class TraceResult:
    seconds: float
    rows: tuple[Row, ...]
    events: int
    lost: int = 0  # events the kernel or the reader's cap dropped
    notes: tuple[str, ...] = field(default=())


def count(events: list[Event]) -> tuple[Row, ...]:
    """Failures per (process, call, errno), the most first, each errno named with the
    limit it means (the table probe uses: probe.errnos). A connect refused or timed
    out shows twice in the kernel, as the syscall's errno (a blocking connect) and as
    the socket's error report (or SYN_SENT -> CLOSE), with the destination: that
    gives the syscall's row its destination, and is a row of its own only for a
    non-blocking or io_uring connect."""
    sync: Counter[tuple[str, int, str, int]] = Counter()
    toward: dict[int, Counter[tuple[str, int]]] = {}  # pid: (destination, errno or 0)
    comms: dict[int, str] = {}
    kernel: Counter[tuple[Kind, str | None]] = Counter()
    for e in events:
        if e.kind == "syscall":
            sync[(e.comm, e.pid, e.call, e.errno)] += 1
        elif e.kind == "connect_failed":
            toward.setdefault(e.pid, Counter())[(e.destination or "?", e.errno)] += 1
            comms[e.pid] = e.comm
        else:
            kernel[(e.kind, e.destination)] += 1
    rows = []
    for (comm, pid, call, num), n in sync.items():
        dst = None
        if call == "connect" and num in PEER_ERRNOS and pid in toward:
            dst = toward.pop(pid).most_common(1)[0][0][0]
        rows.append(Row(comm, pid, call, name(num), _limit(call, num), n, dst))
    for pid, dests in toward.items():
        for (dst, num), n in dests.items():
            what = name(num) if num else "refused or timed out"
            rows.append(Row(comms[pid], pid, "connect", what, "server", n, dst))
    for (kind, dst), n in kernel.items():
        call, what = KERNEL_ROWS[kind]
        rows.append(Row(KERNEL, 0, call, what, "backlog", n, dst))
    return tuple(sorted(rows, key=lambda r: -r.count))


#: The kernel's own events -> (call, what happened): a SYN-ACK sent again (the final
#: ACK did not make it into the accept queue, or was lost), per listening address.
KERNEL_ROWS: dict[Kind, tuple[str, str]] = {
    "synack_retransmit": ("synack", "SYN-ACK retransmitted"),
}


def _limit(call: str, num: int) -> str:
    if call.startswith("clone") and num == EAGAIN:
        return "threads"
    return str(constraint_for(num))


# -- the instance -------------------------------------------------------------------------


def tracefs(roots: Roots) -> Path:
    """Where tracefs is mounted (the sysfs mount point), or a HostError saying why not."""
    path = roots.sysfs / "kernel" / "tracing"
    if not roots.live:
        if not (path / "instances").is_dir():
            raise HostError(f"no tracefs under {path} (a fixture root has none)")
        return path
    if os.geteuid() != 0:
        raise HostError("trace needs root (tracefs instances are root's)")
    return path


#: The last part of the name of an empty instance that marks a tracefs mount as made by
#: a run of ours (tcpceiling-PID-mount): tracefs holds no file of ours but instances.
MOUNT_MARK = "mount"


@contextlib.contextmanager
def mounted(path: Path, procfs: Path) -> Iterator[None]:
    """tracefs mounted at `path` for the body, and unmounted after if a run of ours
    mounted it. A run SIGKILLed cannot unmount, so our mount carries a mark (an
    instance named tcpceiling-PID-mount, made at once after the mount); whichever run
    of ours ends with no other of ours still running unmounts a marked mount, its
    mark's run alive or not, and the host is as it was before the first. Signals
    end the body as Ctrl-C does from before the mount (signals.ended_by_signal)."""
    with ended_by_signal():
        try:
            if not (path / "instances").is_dir():
                with deferred():
                    _mount(path)
            yield
        finally:
            with deferred():
                unmount_if_last(path, procfs)


def _mount(path: Path) -> None:
    done = subprocess.run(["mount", "-t", "tracefs", "nodev", str(path)], capture_output=True)
    if done.returncode != 0 or not (path / "instances").is_dir():
        raise HostError(f"tracefs is not mounted at {path} and could not be mounted")
    (path / "instances" / own_name(MOUNT_MARK)).mkdir()


def is_mark(name: str) -> bool:
    return owner(name) is not None and name.split("-")[-1] == MOUNT_MARK


def unmount_if_last(path: Path, procfs: Path) -> bool:
    """Unmount tracefs when a run of ours mounted it (a mark is there) and no other
    run of ours is still using it (no instance of ours whose run is alive, other
    than this run's mark). An unmount that fails (busy: someone else reads it)
    leaves a mark of this run's, for the next run to try again. True if unmounted."""
    inst = path / "instances"
    if not inst.is_dir():
        return False
    names = [p.name for p in inst.glob(f"{PREFIX}*")]
    marks = [n for n in names if is_mark(n)]
    mine = own_name(MOUNT_MARK)
    live = [n for n in names if n != mine and not owner_gone(n, procfs)]
    if not marks or live:
        return False
    for n in marks:
        with contextlib.suppress(OSError):
            (inst / n).rmdir()
    if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
        return True
    with contextlib.suppress(OSError):
        (inst / mine).mkdir()
    return False


def remove_stale(base: Path, procfs: Path) -> list[str]:
    """Remove our instances whose run is gone (a run SIGKILLed leaves one); a mount's
    mark stays for `unmount_if_last`."""
    removed = []
    for inst in (base / "instances").glob(f"{PREFIX}*"):
        if owner_gone(inst.name, procfs) and not is_mark(inst.name):
            _remove(inst)
            removed.append(inst.name)
    return removed


def _remove(inst: Path) -> None:
    """Switch every event of the instance off, then remove it (rmdir fails while an
    event is on)."""
    with contextlib.suppress(OSError):
        (inst / "tracing_on").write_text("0")
    for enable in inst.glob("events/*/*/enable"):
        with contextlib.suppress(OSError):
            if enable.read_text().strip() != "0":
                enable.write_text("0")
    with contextlib.suppress(OSError):
        inst.rmdir()


class Tracer:
    """One instance for one run: created, filtered, read, removed."""

    def __init__(self, base: Path, roots: Roots, destinations: bool = True) -> None:
        self.base, self.roots, self.procfs = base, roots, roots.procfs
        self.destinations = destinations
        self.comms: dict[int, str] = {}
        self.port_dest: dict[int, str | None] = {}
        self.inst = base / "instances" / own_name()
        self.notes: list[str] = []

    def __enter__(self) -> Tracer:
        """SIGTERM ends the run as SIGINT does, from before the instance exists, and a
        signal (or an error) at any point after leaves through __exit__: a SIGTERM
        between mkdir and a handler would end the run by the default action, the
        instance left behind."""
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(ended_by_signal())
        try:
            stale = remove_stale(self.base, self.procfs)
            if stale:
                self.notes.append(f"removed a stale instance of a run that ended: {stale[0]}")
            self.inst.mkdir()
            self._enable()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        """The instance removed, a signal during the removal waiting for its end."""
        try:
            with deferred():
                _remove(self.inst)
        finally:
            self._signals.close()

    def _enable(self) -> None:
        events = self.inst / "events"
        for event, flt in SYSCALL_FILTERS.items():
            d = events / "syscalls" / event
            if d.is_dir():
                (d / "filter").write_text(flt)
                (d / "enable").write_text("1")
        sock = events / "sock"
        report, state = sock / "inet_sk_error_report", sock / "inet_sock_set_state"
        if report.is_dir():
            (report / "filter").write_text(ERROR_FILTER)
            (report / "enable").write_text("1")
        elif state.is_dir():
            self.notes.append(NO_ERROR_REPORT)
            (state / "filter").write_text(STATE_FILTER)
            (state / "enable").write_text("1")
        complete = events / "io_uring" / "io_uring_complete"
        if complete.is_dir():
            (complete / "filter").write_text(URING_FILTER)
            (complete / "enable").write_text("1")
        synack = events / "tcp" / "tcp_retransmit_synack"
        if synack.is_dir():
            (synack / "enable").write_text("1")
        (self.inst / "tracing_on").write_text("1")

    def read(self, seconds: float) -> tuple[list[Event], int]:
        """Events for `seconds`, at most EVENTS_PER_SECOND a second; (events, skipped)."""
        events: list[Event] = []
        skipped = 0
        fd = os.open(self.inst / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        buf = b""
        try:
            end = time.monotonic() + seconds
            while (now := time.monotonic()) < end:
                raise_if_caught()
                select.select([fd], [], [], min(0.2, end - now))
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                for raw in lines:
                    if len(events) >= EVENTS_PER_SECOND * seconds:
                        skipped += 1
                        continue
                    e = parse_line(raw.decode("utf-8", "replace"))
                    if e is not None:
                        events.append(self._named(e))
                        self._destination(e)
        finally:
            os.close(fd)
        return events, skipped

    def _destination(self, e: Event) -> None:
        """A connect out of ports carries no destination (no packet was sent): the
        one the process holds the most sockets toward, in its own network namespace,
        read at its first such failure (while it is alive), is the tuple whose ports
        ran out."""
        if not self.destinations or e.call not in PORT_CALLS or e.errno not in PORT_ERRNOS:
            return
        if e.pid not in self.port_dest:
            self.port_dest[e.pid] = destination_of(e.pid, self.roots)

    def _named(self, e: Event) -> Event:
        """The trace's comm cache misses some ("<...>"): the process's own comm."""
        if e.comm != "<...>":
            return e
        if e.pid not in self.comms:
            self.comms[e.pid] = read_comm(self.roots, e.pid) or "<...>"
        return replace(e, comm=self.comms[e.pid])

    def overruns(self) -> int:
        """Events the kernel dropped from the instance's buffer (per_cpu stats)."""
        total = 0
        for stats in self.inst.glob("per_cpu/cpu*/stats"):
            m = re.search(r"^overrun: (\d+)", stats.read_text(), re.MULTILINE)
            total += int(m[1]) if m else 0
        return total


def trace(seconds: float, roots: Roots | None = None) -> TraceResult:
    roots = roots or Roots()
    base = tracefs(roots)
    with mounted(base, roots.procfs), Tracer(base, roots) as t:
        queues = Overflows(roots)
        events, skipped = t.read(seconds)
        lost = skipped + t.overruns()
        notes = list(t.notes)
        where = t.port_dest
        drops = queues.drops()
    if skipped:
        notes.append(f"more than {EVENTS_PER_SECOND:,} events a second: {skipped:,} not counted")
    rows = [_with_destination(r, where) for r in count(events)]
    rows += [_drop_row(d) for d in drops]
    if drops:
        notes.append(DROP_NOTE)
    rows.sort(key=lambda r: -r.count)
    return TraceResult(seconds, tuple(rows), len(events), lost, tuple(notes))


def _drop_row(d: ListenDrop) -> Row:
    where = f"{d.host}:{d.port} (accept queue {d.queue}/{d.backlog + 1})" if d.port else None
    return Row(d.comm, d.pid, "listen", "SYN dropped: accept queue full", "backlog", d.drops, where)


DROP_NOTE = (
    "SYNs dropped at a full accept queue carry no drop reason (tcp_conn_request() "
    "consumes them): counted from ListenOverflows of the listener's network namespace "
    "over the trace, given to its full listener"
)


def _with_destination(row: Row, where: dict[int, str | None]) -> Row:
    """A ports row with the destination Tracer._destination found for its process."""
    if row.destination is not None or row.call not in PORT_CALLS or row.errno not in PORT_NAMES:
        return row
    dst = where.get(row.pid)
    return replace(row, destination=f"{dst} (its sockets)" if dst else None)


PORT_NAMES = tuple(name(n) for n in PORT_ERRNOS)
NOT_LISTEN = diag.states_mask(s for s in range(1, 12) if s != 10)  # TCP_LISTEN = 10


def destination_of(pid: int, roots: Roots) -> str | None:
    inodes = set(socket_inodes(roots.procfs / str(pid) / "fd"))
    if not inodes:
        return None
    try:
        with netns_mod.of_process(pid, roots):
            rows = diag.dump(NOT_LISTEN)
    except (OSError, HostError):
        return None
    seen = Counter(
        f"{diag.address(r[diag.FAMILY], r[diag.DST])}:{diag.port(r[diag.DPORT])}"
        for r in rows
        if r[diag.INODE] in inodes
    )
    return seen.most_common(1)[0][0] if seen else None
