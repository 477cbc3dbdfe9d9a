"""Names of what tcpceiling makes on the host (network namespaces, tracefs instances,
cgroups): `tcpceiling-PID[-PART...]`, PID the process that made it and removes it on
its way out. A process killed with SIGKILL cannot; its leftovers are known by their
name, and the next run removes those whose PID no longer exists."""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "tcpceiling-"


def own_name(*parts: str) -> str:
    """The name of something this process makes: tcpceiling-PID[-PART...]."""
    return "-".join((f"{PREFIX}{os.getpid()}", *parts))


def owner(name: str) -> int | None:
    """The PID a name of ours carries; None for a name that is not ours."""
    if not name.startswith(PREFIX):
        return None
    pid = name[len(PREFIX) :].split("-")[0]
    return int(pid) if pid.isdigit() else None


def owner_gone(name: str, procfs: Path) -> bool:
    """Ours, and the process that made it no longer exists (`procfs`/PID is gone)."""
    pid = owner(name)
    return pid is not None and not (procfs / str(pid)).exists()
