"""tcpceiling watch: parses its options, calls the library, renders."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from tcpceiling.cli.common import FiniteRange, errors_to_exit, main, stderr
from tcpceiling.cli.observe_options import observe_options, scope_from, thresholds


@main.command("watch")
@observe_options
@thresholds
@click.option(
    "--interval",
    type=FiniteRange(min=0.2, max=3600),
    default=1.0,
    show_default=True,
    help="Seconds between frames (and the window of the rates).",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after this many frames."
)
@click.option("--once", is_flag=True, help="Print one frame (rates over --interval) and exit.")
@click.option(
    "--trace",
    is_flag=True,
    help="A panel of the kernel's failures per process since the last frame, from a "
    "tracefs instance of its own (root).",
)
@errors_to_exit
def watch_cmd(**o: Any) -> None:
    """A live view of every limit on this host, the smallest headroom first: each
    process's fds and threads, each listener's accept queue, the ephemeral ports
    toward each destination, and the host-wide limits; rows turn yellow at --warn and
    red at --crit. q or Ctrl-C leaves."""
    from tcpceiling.observe import live
    from tcpceiling.observe.feed import Feed

    scope = scope_from(o)
    with contextlib.ExitStack() as stack:
        feed = stack.enter_context(Feed(scope.roots)) if o["trace"] else None
        if o["once"]:
            live.once(scope, o["interval"], o["warn"], o["crit"], stderr, feed)
            return
        live.loop(scope, o["interval"], o["count"], o["warn"], o["crit"], stderr, feed)
