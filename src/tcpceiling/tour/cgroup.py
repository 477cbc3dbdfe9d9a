"""A cgroup of the tour's own for one step: made under the controller's mount (v1
when mounted so, as here, else v2), given a limit, removed on the way out once the
processes the step put in it are gone (exits are asynchronous: rmdir is retried)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tcpceiling.errors import HostError
from tcpceiling.host import parse
from tcpceiling.host.owned import owner_gone
from tcpceiling.host.roots import Roots

Controller = Literal["memory", "pids"]
CONTROLLERS: tuple[Controller, ...] = ("memory", "pids")
LIMIT_FILE = {("memory", 1): "memory.limit_in_bytes", ("memory", 2): "memory.max",
              ("pids", 1): "pids.max", ("pids", 2): "pids.max"}  # fmt: skip
REMOVE_TRIES, REMOVE_WAIT_S = 100, 0.05


@dataclass(frozen=True)
class Group:
    path: Path
    version: int
    controller: Controller

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def oom_kills(self) -> int:
        """OOM kills in the group (memory.oom_control on v1, memory.events on v2)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return parse.parse_flat_keyed((self.path / name).read_text()).get("oom_kill", 0)


def mount(roots: Roots, controller: Controller) -> tuple[Path, int] | None:
    """Where the controller is mounted, and its version; None when it is not."""
    v1 = roots.cgroup / controller
    if (v1 / "cgroup.procs").exists():
        return v1, 1
    for v2 in (roots.cgroup, roots.cgroup / "unified"):
        enabled = v2 / "cgroup.subtree_control"
        if enabled.exists() and controller in enabled.read_text().split():
            return v2, 2
    return None


@contextlib.contextmanager
def throwaway(roots: Roots, controller: Controller, limit: int, name: str) -> Iterator[Group]:
    """A new cgroup `name` with `limit`; on the way out the tasks still in it (the
    step's own processes) are killed and it is removed."""
    found = mount(roots, controller)
    if found is None:
        raise HostError(f"no {controller} cgroup controller mounted under {roots.cgroup}")
    base, version = found
    group = Group(base / name, version, controller)
    group.path.mkdir()
    try:
        (group.path / LIMIT_FILE[(controller, version)]).write_text(str(limit))
        yield group
    finally:
        _remove(group)


def sweep_stale(roots: Roots) -> list[str]:
    """Remove the cgroups a tour killed with SIGKILL left (tcpceiling-PID-..., PID
    gone) under each controller's mount, the tasks still in them killed first."""
    removed = []
    for controller in CONTROLLERS:
        found = mount(roots, controller)
        if found is None:
            continue
        base, version = found
        for path in sorted(base.glob("tcpceiling-*")):
            if path.is_dir() and owner_gone(path.name, roots.procfs):
                _remove(Group(path, version, controller))
                removed.append(path.name)
    return removed


def _remove(group: Group) -> None:
    for _ in range(REMOVE_TRIES):
        with contextlib.suppress(OSError):
            for pid in group.pids():
                os.kill(pid, signal.SIGKILL)
        try:
            group.path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(REMOVE_WAIT_S)
    raise HostError(f"could not remove the tour's cgroup {group.path}")
