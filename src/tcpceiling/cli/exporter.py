"""tcpceiling exporter: parses its options, calls the library, renders."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from tcpceiling.cli.common import errors_to_exit, main, stderr
from tcpceiling.cli.observe_options import observe_options, scope_from
from tcpceiling.errors import InputError


@main.command("exporter")
@observe_options
@click.option(
    "--listen",
    metavar="[HOST]:PORT",
    default=":9877",
    show_default=True,
    help="Serve /metrics here (an empty host: every address).",
)
@click.option(
    "--textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the metrics once to this file (node_exporter's textfile collector) and exit.",
)
@click.option(
    "--trace",
    is_flag=True,
    help="Also count the kernel's failures per limit and process (tcpceiling_failures_total) "
    "from a tracefs instance of its own (root).",
)
@errors_to_exit
def exporter_cmd(**o: Any) -> None:
    """Prometheus metrics of every limit: analyze's ceilings, host-wide limits and use,
    each process's fds, each destination's ephemeral ports (the top K), listeners'
    accept queues, and the kernel's counters. Runs until SIGINT or SIGTERM."""
    from tcpceiling.observe import exporter
    from tcpceiling.observe.feed import Feed
    from tcpceiling.observe.sample import take

    scope = scope_from(o)
    if o["textfile"]:
        if o["trace"]:
            raise InputError("--trace counts failures while serving: not with --textfile")
        if not o["textfile"].parent.is_dir():
            raise InputError(f"--textfile: no directory {o['textfile'].parent}")
        exporter.textfile(exporter.registry(lambda: take(scope)), o["textfile"])
        return
    host, port = listen_address(o["listen"])
    with contextlib.ExitStack() as stack:
        stack.enter_context(signals_blocked())  # before any thread: each inherits the mask
        feed = stack.enter_context(Feed(scope.roots)) if o["trace"] else None
        reg = exporter.registry(lambda: take(scope), feed)
        try:
            stop = exporter.serve(reg, host, port)
        except OSError as exc:
            raise InputError(f"--listen {o['listen']}: {exc.strerror or exc}") from exc
        stderr.print(f"serving http://{host or '0.0.0.0'}:{port}/metrics (Ctrl-C stops)")
        wait_for_signal()
        stop()


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--listen {text!r}: expected [HOST]:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread and every thread it starts, so that
    they wait for wait_for_signal() instead of reaching another thread; the mask as
    it was restored on the way out (a process that goes on, e.g. after bad input,
    and the processes it starts later must not inherit it)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM (both end the exporter cleanly, exit 0); they are
    blocked by signals_blocked()."""
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
