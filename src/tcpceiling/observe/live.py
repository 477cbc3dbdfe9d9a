"""watch's loop: a Sample every --interval, drawn with rich Live; q (or Ctrl-C)
leaves. The keyboard is read only when stdin is a terminal (cbreak mode, restored
on the way out)."""

from __future__ import annotations

import contextlib
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator

from rich.console import Console
from rich.live import Live

from tcpceiling.observe.feed import Feed
from tcpceiling.observe.sample import Sample, Scope, take
from tcpceiling.observe.trace import Row
from tcpceiling.observe.usage import rates
from tcpceiling.report.watch import frame


@contextlib.contextmanager
def keyboard() -> Iterator[bool]:
    """cbreak mode on a terminal stdin (yields whether keys can be read)."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def quit_pressed(keys: bool, seconds: float) -> bool:
    """Wait `seconds`; True when q was pressed meanwhile."""
    if not keys:
        time.sleep(seconds)
        return False
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sys.stdin], [], [], left)
        if ready and sys.stdin.read(1) in ("q", "Q"):
            return True
    return False


def _failures(feed: Feed | None) -> tuple[Row, ...] | None:
    return feed.take() if feed is not None else None


def once(
    scope: Scope,
    interval: float,
    warn: float,
    crit: float,
    console: Console,
    feed: Feed | None = None,
) -> Sample:
    """One frame, its rates (and with a feed its failures) over `interval`."""
    before = take(scope)
    _failures(feed)
    time.sleep(interval)
    after = take(scope)
    console.print(frame(after, rates(before, after), warn, crit, failures=_failures(feed)))
    return after


def loop(
    scope: Scope,
    interval: float,
    count: int | None,
    warn: float,
    crit: float,
    console: Console,
    feed: Feed | None = None,
) -> None:
    prev = take(scope)
    shown = 0
    first = frame(prev, {}, warn, crit, failures=_failures(feed))
    with (
        keyboard() as keys,
        Live(first, console=console) as live,
        contextlib.suppress(KeyboardInterrupt),
    ):
        while count is None or shown < count:
            if quit_pressed(keys, interval):
                break
            cur = take(scope)
            live.update(frame(cur, rates(prev, cur), warn, crit, failures=_failures(feed)))
            prev, shown = cur, shown + 1
