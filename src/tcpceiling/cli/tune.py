"""tcpceiling tune: parses its options, calls the library, renders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tcpceiling import results
from tcpceiling.cli.common import (
    EXIT_LIMIT,
    EXIT_OK,
    REPORT_OPTION,
    FiniteRange,
    emit,
    errors_to_exit,
    main,
    report_target,
    roots_options,
    scenario_options,
    scenarios_from,
    stderr,
)
from tcpceiling.errors import InputError
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots


@main.command("tune")
@click.option(
    "--target",
    "target_text",
    metavar="N",
    default=None,
    help="Connections to hold (1000000, 1_000_000 or 1,000,000); needed except with --restore.",
)
@click.option(
    "--headroom",
    type=FiniteRange(min=0, max=10),
    default=0.1,
    show_default=True,
    help="Raise every limit to target x (1 + headroom).",
)
@click.option(
    "--service",
    metavar="UNIT",
    default=None,
    help="The systemd service whose limits to raise (a drop-in).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Prove the net.* part first: hold the target in a private namespace with the "
    "plan's values.",
)
@click.option(
    "--apply",
    "do_apply",
    is_flag=True,
    help="Write the files (backups and a manifest kept) and load the sysctls (live root only).",
)
@click.option(
    "--restore", "do_restore", is_flag=True, help="Put back exactly what the last --apply replaced."
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Write under this root instead (an image, a container's tree, a test).",
)
@scenario_options
@roots_options
@REPORT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@errors_to_exit
def tune_cmd(**o: Any) -> None:
    """Plan the settings that take every limit to a target, show them as files with
    their diffs, prove them in a namespace, write them, or put back what was there.

    Exit 0: the plan reaches the target (and --verify held it); 1: it cannot (the
    memory it needs, a limit no setting moves) or --verify fell short; 2: bad input.
    """
    from tcpceiling.probe.run.config import parse_target
    from tcpceiling.report.tune import render_restored, render_tune
    from tcpceiling.tune import run as tune

    root, procfs = o.pop("root"), o["procfs"]
    if o.pop("do_restore"):
        restored = tune.restore(root, procfs)
        if o["as_json"]:
            click.echo(results.dumps(results.document("tune", restored, {})))
        else:
            render_restored(restored, stderr)
        return
    report_target(o["report_path"])
    text = o.pop("target_text")
    target = parse_target(text) if text not in (None, "max") else None
    if target is None:
        raise InputError("tune needs --target N, a number of connections (or --restore)")
    scenarios = scenarios_from(o)
    if len(scenarios) != 1:
        raise InputError("tune plans one side: --role server, client or nat")
    roots = Roots(o["procfs"], o["sysfs"], o["cgroupfs"])
    result, snap = tune.build(
        scenarios[0],
        target,
        o["headroom"],
        o["service"],
        roots,
        o["pid"] or "self",
        o["netns"],
        root,
    )
    if o["verify"] and result.reachable:
        result = tune.verify(result, snap)
    if o["do_apply"] and result.reachable:  # else: the plan says what it needs, no files
        result = tune.apply(result, root, procfs)
    host = results.host_block(read_identity(roots), o["netns"])
    emit("tune", result, host, o["as_json"], o["report_path"])
    if not o["as_json"]:
        render_tune(result, stderr)
    held = result.verified is None or result.verified.reached
    sys.exit(EXIT_OK if result.reachable and held else EXIT_LIMIT)
