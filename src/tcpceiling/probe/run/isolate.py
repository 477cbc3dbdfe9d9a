"""The run's private network namespace: made at start, loopback up, per-netns sysctls
set inside it only, deleted at the end (and stale ones of dead runs swept first)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tcpceiling.errors import InputError
from tcpceiling.host import netns
from tcpceiling.host.owned import own_name, owner_gone
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.config import check_sysctl_key


def sweep_stale(roots: Roots | None = None) -> list[str]:
    """Delete namespaces left by runs whose coordinator no longer exists."""
    procfs = (roots or Roots()).procfs
    removed: list[str] = []
    if not netns.NETNS_RUN_DIR.is_dir():
        return removed
    for entry in netns.NETNS_RUN_DIR.iterdir():
        if owner_gone(entry.name, procfs):
            netns.remove(entry.name)
            removed.append(entry.name)
    return removed


def apply_sysctls(sysctls: tuple[tuple[str, str], ...]) -> None:
    """Write net.* sysctls; the calling thread must already be inside the namespace."""
    for key, value in sysctls:
        try:
            check_sysctl_key(key).write_text(value + "\n")
        except OSError as exc:
            raise InputError(
                f"--sysctl {key}={value!r}: the kernel refused the value ({exc.strerror})"
            ) from exc


@contextlib.contextmanager
def private_netns(sysctls: tuple[tuple[str, str], ...]) -> Iterator[str]:
    """Create it and set its sysctls; delete it at the end. Enter it with
    tcpceiling.host.netns.inside(name) (forked workers inherit the thread's netns)."""
    sweep_stale()
    with netns.made(own_name()) as name:
        with netns.inside(name):
            apply_sysctls(sysctls)
        yield name
