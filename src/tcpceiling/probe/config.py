"""What a probe run is asked to do, validated before anything is touched."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tcpceiling.errors import InputError

GIB = 1 << 30


@dataclass(frozen=True)
class ProbeConfig:
    """A probe of the embedded loopback sink.

    target None means "until the first limit or guard". memory_floor None means
    max(1 GiB, 10 % of MemTotal) kept available (issue 3).
    """

    target: int | None = 100_000
    hold: float = 0.0
    rate: float | None = None
    sources: tuple[str, ...] = ()
    sink_ports: int = 1
    sink_host: str = "127.0.0.1"
    isolate: bool | None = None
    sysctls: tuple[tuple[str, str], ...] = ()
    memory_floor: int | None = None
    max_duration: float = 600.0
    workers: int | None = None
    worker_nofile: int | None = None
    parallel: int = 2
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.target is not None and self.target < 1:
            raise InputError(f"--target must be a positive number or 'max', not {self.target}")
        if self.rate is not None and self.rate <= 0:
            raise InputError("--rate must be positive")
        if (
            self.sink_ports < 1
            or self.parallel < 1
            or (self.workers is not None and self.workers < 1)
        ):
            raise InputError("--sink-ports, --parallel and --workers must be at least 1")
        if self.worker_nofile is not None and self.worker_nofile < 16:
            raise InputError("--worker-nofile must be at least 16")

    @property
    def isolated(self) -> bool:
        return os.geteuid() == 0 if self.isolate is None else self.isolate

    def check_environment(self, procfs: Path = Path("/proc")) -> None:
        """Errors that depend on the machine: root for --isolate, known per-netns sysctls."""
        if self.isolate and os.geteuid() != 0:
            raise InputError("--isolate needs root (it creates a network namespace)")
        if self.sysctls and not self.isolated:
            raise InputError(
                "--sysctl is applied only inside the run's own namespace: "
                "needs --isolate (and root); host sysctls are never changed"
            )
        for key, _value in self.sysctls:
            check_sysctl_key(key, procfs)


def check_sysctl_key(key: str, procfs: Path = Path("/proc")) -> Path:
    """A per-netns sysctl (net.*) that exists; returns its path under procfs/sys."""
    path = procfs / "sys" / Path(*key.split("."))
    if not key.startswith("net.") or ".." in key or not path.is_file():
        raise InputError(
            f"unknown or not per-network-namespace sysctl {key!r} "
            "(only net.* keys can be set inside the run's namespace)"
        )
    return path


def parse_sysctl(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"bad --sysctl {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip().strip("'\"")


def parse_target(text: str) -> int | None:
    if text == "max":
        return None
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError as exc:
        raise InputError(f"--target must be a positive number or 'max', not {text!r}") from exc
    if value < 1:
        raise InputError(f"--target must be a positive number or 'max', not {text!r}")
    return value
