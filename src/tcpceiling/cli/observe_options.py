"""What watch, doctor and the exporter look at, and their thresholds."""

from __future__ import annotations

from typing import Any

import click

from tcpceiling.cli.common import F, FiniteRange, roots_options
from tcpceiling.host.roots import Roots


def observe_options(fn: F) -> F:
    """What watch, doctor and the exporter look at."""
    options = [
        click.option(
            "--pid",
            "pids",
            multiple=True,
            type=click.IntRange(min=1),
            help="Only this process (repeatable). Default: every process holding TCP sockets.",
        ),
        click.option(
            "--port",
            "ports",
            multiple=True,
            type=click.IntRange(min=1, max=65535),
            help="Only the processes listening on this port (repeatable).",
        ),
        click.option(
            "--service", metavar="UNIT", default=None, help="Only this systemd service's processes."
        ),
        click.option(
            "--netns", default=None, help="Read sockets and counters inside this network namespace."
        ),
        click.option(
            "--top-destinations",
            type=click.IntRange(min=1, max=1000),
            default=10,
            show_default=True,
            help="(source, destination) tuples shown: the most ports in use first.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return roots_options(fn)


def scope_from(o: dict[str, Any]) -> Any:
    from tcpceiling.observe.sample import Scope

    return Scope(
        pids=o["pids"],
        ports=o["ports"],
        service=o["service"],
        top_destinations=o["top_destinations"],
        netns=o["netns"],
        roots=Roots(o["procfs"], o["sysfs"], o["cgroupfs"]),
    )


def thresholds(fn: F) -> F:
    fn = click.option(
        "--crit",
        type=FiniteRange(0, 1, min_open=True),
        default=0.95,
        show_default=True,
        help="Critical at this share of any limit.",
    )(fn)
    return click.option(
        "--warn",
        type=FiniteRange(0, 1, min_open=True),
        default=0.8,
        show_default=True,
        help="Warning at this share of any limit.",
    )(fn)
