"""probe --connect against servers that model what real servers do at their cap
(tests/servers/patterns.py): served is what the server itself says it keeps, and
the reason is the pattern's, not the flood's symptoms."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import probe

PATTERNS = Path(__file__).parent / "servers" / "patterns.py"
REFUSAL = "-ERR max number of clients reached"


@dataclass
class Kept:
    """The server's own count: every "holding N" line it printed."""

    lines: list[int]

    @property
    def peak(self) -> int:
        return max(self.lines, default=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pattern(name: str, cap: int, backlog: int = 128) -> Iterator[tuple[int, Kept]]:
    """Start the pattern server; yield (port, its count, filled in once it stops)."""
    port, kept = free_port(), Kept([])
    cmd = [sys.executable, str(PATTERNS), name, str(port), str(cap), str(backlog)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield port, kept
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        kept.lines.extend(int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("holding"))


def run(
    name: str, cap: int, check: str, target: int, backlog: int = 128
) -> tuple[dict[str, Any], Kept]:
    with pattern(name, cap, backlog) as (port, kept):
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", check, "--target", str(target))
    assert code == 1, r["stop"]
    return r, kept


@pytest.mark.parametrize(
    ("name", "check", "reasons", "reply"),
    [
        ("greet-refuse", r"expect:^\+OK,refuse:^-ERR", ("server_reply",), REFUSAL),
        ("greet-close", r"expect:^\+OK", ("server_closed",), None),
        ("evict", r"expect:^\+OK", ("server_evicted",), None),
    ],
)
def test_greeting_servers_past_their_cap(
    name: str, check: str, reasons: tuple[str, ...], reply: str | None
) -> None:
    """Each greets every client, then past 40: an error line and a close in a later
    segment; a close without a word; the oldest client closed to admit the newest.
    Served is what the server says it keeps, and the greeting counts for nothing."""
    r, kept = run(name, 40, check, 160)
    assert kept.peak == 40 and r["served"] == 40, (kept.peak, r["served"], r["outcomes"])
    assert r["stop"]["reason"] in reasons, r["stop"]
    assert r["stop"]["evidence"]["reply"] == reply
    assert r["outcomes"]["open_at_end"] == 40


def test_greeting_then_error_is_exactly_the_cap_ten_times() -> None:
    """The greeting matches `expect` before the refusal arrives: ten runs in a row
    serve exactly the cap, never the greeted ones past it."""
    for _ in range(10):
        r, kept = run("greet-refuse", 40, r"expect:^\+OK,refuse:^-ERR", 100)
        assert (r["served"], kept.peak, r["stop"]["reason"]) == (40, 40, "server_reply")
        # every attempt past the cap refused (the frontier makes one more, settled)
        tried = r["outcomes"]["established"]
        assert r["outcomes"]["error_reply"] == tried - 40 and "evicted" not in r["outcomes"]


def test_a_slow_accepting_server_is_not_flooded() -> None:
    """A thread per connection, at most 100 accepts a second, backlog 32, cap 5 with
    "421 too many": the opening keeps pace with it, so its queue never overflows and
    the limit is its own refusal, not the backlog; its accept rate is reported."""
    r, kept = run("slow", 5, r"expect:^220 ,refuse:^421 ", 200, backlog=32)
    assert kept.peak == 5 and r["served"] == 5
    assert r["stop"]["reason"] == "server_reply"
    assert r["stop"]["evidence"]["reply"].startswith("421 ")
    assert r["stop"]["evidence"]["deltas"]["ListenOverflows"] == 0
    assert r["answered_per_s"] is not None and r["answered_per_s"] <= 120


def test_a_server_that_starts_its_workers_on_demand() -> None:
    """One worker from the start, one more every 2.5 s while connections wait, up to
    3 (a process manager forking on demand): the connections that waited past the
    check's 2 s timeout are answered late, and they are served. Served is what the
    server keeps, not what answered within the timeout (1 before: the late answers
    on connections judged silent were not heard)."""
    r, kept = run("spawn", 3, r"expect:^\+OK", 20)
    assert kept.peak == 3 and r["served"] == 3, (kept.lines, r["outcomes"], r["stop"])
    assert r["outcomes"]["late"] >= 1, r["outcomes"]


def test_a_server_that_stops_accepting_at_its_cap() -> None:
    """It stops calling accept() at 40 (the listener stays open, backlog 8): nine
    more wait in the accept queue unanswered, then the SYNs are dropped."""
    r, kept = run("pause", 40, r"expect:^\+OK", 120, backlog=8)
    assert kept.peak == 40 and r["served"] == 40
    assert r["stop"]["reason"] in ("backlog", "server_silent"), r["stop"]
    assert r["outcomes"]["silent_at_end"] == 9  # backlog + 1 (the kernel's check is >)


def plain_http(port: int, n: int, wait: float = 1.0, host: str = "127.0.0.1") -> int:
    """A plain client: n GETs one at a time, each response read whole (head, then its
    Content-Length body, however the segments come) and kept if 200; how many are
    still open after `wait` (the independent count of what the server holds)."""
    kept: list[socket.socket] = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        if _whole_200(s):
            kept.append(s)
        else:
            s.close()
    return still_open(kept, wait)


def still_open(kept: list[socket.socket], wait: float) -> int:
    """After `wait`, how many of `kept` the server has neither closed nor spoken on
    (a BYE or a close: not held); each is closed after."""
    time.sleep(wait)
    alive = 0
    for s in kept:
        s.setblocking(False)
        try:
            s.recv(4096)
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        s.close()
    return alive


def _whole_200(s: socket.socket) -> bool:
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := s.recv(4096)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n")
                           if ln.lower().startswith(b"content-length:")), b"0"))  # fmt: skip
        while len(body) < length and (chunk := s.recv(4096)):
            body += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("name", "cap", "held", "reason"),
    [("http-split", 25, 25, "server_closed"), ("http-503", 20, 19, "server_reply")],
)
def test_http_servers_serve_what_a_plain_client_holds_five_times(
    name: str, cap: int, held: int, reason: str
) -> None:
    """Headers and body in separate writes, then a close past the cap (gunicorn's
    gthread workers): the body is never taken for a refusal. A 503 past a cap that
    counts idle connections, the refused one's own among them (uvicorn's
    --limit-concurrency): it holds cap - 1. Five runs in a row, each equal to a plain
    client's count."""
    for _ in range(5):
        with pattern(name, cap) as (port, kept):
            code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "http",
                            "--target", str(3 * cap))  # fmt: skip
            plain = plain_http(port, 2 * cap)
        assert code == 1, r["stop"]
        assert r["served"] == plain == held == kept.peak, (r["served"], plain, r["outcomes"])
        assert r["stop"]["reason"] == reason, r["stop"]
        assert "ok" not in r["replies"]  # a body is never a reply of its own
        # the frontier ran after the first refusal, and the result says what it did
        assert r["frontier"] and r["frontier"][0]["steps"] >= 1, r["frontier"]
        assert any(n.startswith("after the first ") for n in r["notes"]), r["notes"]


def plain_line(port: int, n: int, wait: float = 1.0) -> int:
    """A plain client of a line protocol: n connections one at a time, each kept once
    it is greeted with +OK; how many are still open after `wait`."""
    kept: list[socket.socket] = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if s.recv(4096).startswith(b"+OK"):
            kept.append(s)
        else:
            s.close()
    return still_open(kept, wait)


def test_evictions_in_the_servers_words_come_before_its_queues_overflow() -> None:
    """A server that evicts its oldest client with a BYE line, its listen backlog equal
    to its cap (15): the stop is its evictions, in its words, five times in a row; a
    queue overflow the opening's own pace caused is a note, not the reason; served
    equals a plain client's count."""
    for _ in range(5):
        with pattern("evict-bye", 15, backlog=15) as (port, kept):
            code, r = probe("--connect", f"127.0.0.1:{port}", "--check", r"expect:^\+OK",
                            "--target", "60")  # fmt: skip
            plain = plain_line(port, 30)
        assert code == 1, r["stop"]
        assert r["served"] == plain == kept.peak == 15, (r["served"], plain, r["outcomes"])
        assert r["stop"]["reason"] == "server_evicted", r["stop"]
        overflowed = r["stop"]["evidence"]["deltas"].get("ListenOverflows", 0)
        assert not overflowed or "note: ListenOverflows" in r["stop"]["detail"]
