"""tcpceiling snapshot: parses its options, calls the library, renders."""

from __future__ import annotations

from pathlib import Path

import click

from tcpceiling.cli.common import errors_to_exit, main, stderr
from tcpceiling.errors import InputError


@main.command("snapshot")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option(
    "--tar",
    "archive",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.tar.gz",
    help="Write one compressed archive instead of a directory (a new file only).",
)
@click.option(
    "--force", is_flag=True, help="Replace OUT when it holds a snapshot of tcpceiling's own."
)
@click.option("--pid", default="self", help="Process whose limits and fds to copy.")
@click.option("--netns", default=None, help="Copy per-netns values from this namespace.")
@errors_to_exit
def snapshot_cmd(
    out: Path | None, archive: Path | None, force: bool, pid: str, netns: str | None
) -> None:
    """Copy every file analyze reads into OUT, a new or empty directory (read back
    with --procfs OUT/proc --sysfs OUT/sys), or into one --tar archive."""
    from tcpceiling.host import capture, sockets
    from tcpceiling.host import netns as netns_mod

    if (out is None) == (archive is None):
        raise InputError("give a directory OUT or --tar FILE.tar.gz (one of them)")
    with netns_mod.inside(netns):
        entries = sockets.live_entries()
    if archive is not None:
        capture.capture_tar(archive, pid=pid, sockets=entries)
        stderr.print(
            f"wrote {archive}; unpack it and analyze with --procfs DIR/proc --sysfs DIR/sys"
        )
        return
    assert out is not None
    capture.capture(out, pid=pid, sockets=entries, force=force)
    stderr.print(f"wrote {out}; analyze it with --procfs {out}/proc --sysfs {out}/sys")


#: Options that mean the same for probe and rate.
