"""The kernel's own words about connection limits, from /dev/kmsg.

Each record is "PRIORITY,SEQUENCE,MICROSECONDS,FLAGS[,...];TEXT" (the format of
Documentation/ABI/testing/dev-kmsg); a non-blocking reader gets one record per
read() until EAGAIN, and EPIPE when the ring overwrote the next one. A fixture file
with one record per line reads the same."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from tcpceiling.observe.usage import Severity

#: (limit, what the kernel prints, severity): net/ipv4/tcp.c tcp_check_oom, net/netfilter
#: nf_conntrack_core.c, net/ipv4/tcp_input.c tcp_syn_flood_action, fs/file_table.c,
#: mm/oom_kill.c. (The TIME_WAIT overflow is a net_dbg message, off by default: its
#: counter TCPTimeWaitOverflow is the evidence instead.)
PATTERNS: tuple[tuple[str, str, Severity], ...] = (
    ("tcp_mem", "out of memory -- consider tuning tcp_mem", "critical"),
    ("orphans", "too many orphaned sockets", "critical"),
    ("conntrack", "nf_conntrack: table full, dropping packet", "critical"),
    ("time_wait", "time wait bucket table overflow", "warning"),
    ("backlog", "possible syn flooding on port", "warning"),
    ("file_max", "vfs: file-max limit", "critical"),
    ("memory", "out of memory: killed process", "critical"),
)


@dataclass(frozen=True)
class KernelMessage:
    seconds: float  # since boot
    text: str


@dataclass(frozen=True)
class Hit:
    limit: str
    severity: Severity
    message: KernelMessage


def parse_record(line: str) -> KernelMessage | None:
    """One /dev/kmsg record; None for a continuation line or anything else."""
    head, sep, text = line.partition(";")
    fields = head.split(",")
    if not sep or len(fields) < 4 or not fields[2].isdigit():
        return None
    return KernelMessage(int(fields[2]) / 1e6, text.strip())


def hits(messages: list[KernelMessage], since: float) -> list[Hit]:
    """The messages at or after `since` (seconds since boot) that name a limit."""
    out = []
    for m in messages:
        low = m.text.lower()
        for limit, words, severity in PATTERNS:
            if m.seconds >= since and words in low:
                out.append(Hit(limit, severity, m))
    return out


def read(path: Path, limit: int = 100_000) -> list[KernelMessage]:
    """Every record still in the ring (at most `limit`); [] when it cannot be read
    (not root, or no such file): the kernel log is evidence, not a requirement."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    records: list[str] = []
    try:
        _read_all(fd, records, limit)
    finally:
        os.close(fd)
    parsed = (parse_record(r) for line in records for r in line.splitlines())
    return [m for m in parsed if m is not None]


def _read_all(fd: int, records: list[str], limit: int) -> None:
    while len(records) < limit:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # overwritten under us: go on with the next
                continue
            return  # EAGAIN: the end of the ring (or an unreadable file)
        if not chunk:
            return
        records.append(chunk.decode("utf-8", "replace"))


def uptime(procfs: Path) -> float:
    try:
        return float((procfs / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
