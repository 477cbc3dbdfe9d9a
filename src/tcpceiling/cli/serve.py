"""tcpceiling serve: parses its options, calls the library, renders."""

from __future__ import annotations

import json

import click

from tcpceiling.analysis.model import (
    parse_endpoint,
)
from tcpceiling.cli.common import FiniteRange, errors_to_exit, main, stderr


@main.command("serve")
@click.option(
    "--listen",
    multiple=True,
    required=True,
    metavar="IP:PORT",
    help="Endpoint to listen on (repeatable).",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Sink processes sharing the endpoints (each holds up to its fd limit).",
)
@click.option("--echo", is_flag=True, help="Echo what clients send (default: read and discard).")
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="listen() backlog of each shard (the kernel clamps it to net.core.somaxconn).",
)
@click.option(
    "--duration",
    type=FiniteRange(min=0),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option(
    "--json-lines",
    is_flag=True,
    help="Print the connections accepted so far as a JSON line each second on stdout.",
)
@errors_to_exit
def serve_cmd(
    listen: tuple[str, ...],
    shards: int,
    echo: bool,
    backlog: int,
    duration: float | None,
    json_lines: bool,
) -> None:
    """Run the probe's sink alone, for probing this machine from other ones (probe
    --connect, or probe --scheduler from many hosts); it says how many it accepted, so
    both ends can be compared."""
    from tcpceiling.probe.run.progress import RunProgress
    from tcpceiling.probe.run.serve import serve

    endpoints = tuple(parse_endpoint(x, default_host="0.0.0.0") for x in listen)
    last, said = [-1.0], [""]

    def show(e: RunProgress) -> None:
        if last[0] < 0:
            eps = ", ".join(map(str, endpoints))
            stderr.print(f"serving {eps} with {shards} shard(s); Ctrl-C stops")
        if e.label and not said[0]:
            said[0] = e.label
            stderr.print(e.label)
        if e.elapsed - last[0] >= 1.0 or last[0] < 0:
            last[0] = e.elapsed
            if json_lines:
                line = {"accepted": int(e.done), "elapsed": round(e.elapsed, 1)}
                click.echo(json.dumps(line | ({"guard": e.label} if e.label else {})))

    done = serve(endpoints, shards, backlog, "echo" if echo else "discard", duration, show)
    if json_lines:
        final = {"accepted": done.accepted, "final": True}
        click.echo(json.dumps(final | ({"guard": done.guard} if done.guard else {})))
    stderr.print(f"accepted {done.accepted:,} connections")
