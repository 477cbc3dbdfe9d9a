"""The records a Watch keeps per connection: its state's name, the check under way
and the settle time of a passing one (plain data; watch.py moves them)."""

from __future__ import annotations

from dataclasses import dataclass

CHECKING, SETTLING, HELD, SERVED, SILENT = "checking", "settling", "held", "served", "silent"
GOOD = (HELD, SERVED)


@dataclass
class Checking:
    deadline: float
    started: float
    sent: bytes
    again: bool  # a --check-every re-check of a held connection
    buf: bytes = b""
    answered: int = 0  # the server's own pings in buf already answered


@dataclass
class Settling:
    until: float
    words: bytes = b""  # what the server said after the passing reply
