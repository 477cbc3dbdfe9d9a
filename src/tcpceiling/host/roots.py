"""Where the pseudo file systems are. Every reader takes a Roots so tests can point
it at a fixture tree instead of the live machine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Roots:
    """Mount points of procfs, sysfs and the cgroup hierarchy.

    `live` is True when all three are the machine's own, which is what allows
    live-only sources (netlink sock_diag, route look-ups) to be used.
    """

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    cgroupfs: Path | None = None

    @property
    def cgroup(self) -> Path:
        return self.cgroupfs if self.cgroupfs is not None else self.sysfs / "fs" / "cgroup"

    @property
    def live(self) -> bool:
        return self.procfs == Path("/proc") and self.sysfs == Path("/sys")

    @classmethod
    def fixture(cls, base: Path) -> Roots:
        """A fixture tree laid out as base/proc, base/sys (cgroups under sys/fs/cgroup)."""
        return cls(procfs=base / "proc", sysfs=base / "sys")
