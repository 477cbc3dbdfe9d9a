"""What a probe run is asked to do, validated before anything is touched."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tcpceiling.analysis.model import Endpoint, IoModel
from tcpceiling.errors import InputError
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.roots import Roots
from tcpceiling.probe.serving import checks
from tcpceiling.probe.uring.engine import EngineChoice

GIB = 1 << 30


@dataclass(frozen=True)
class ProbeConfig:
    """A probe of the embedded loopback sink, or with `connect` of real servers.

    target None means "until the first limit or guard". memory_floor None means
    max(1 GiB, 10 % of MemTotal) kept available; cgroup_floor None means
    max(32 MiB, 10 % of the limit) kept free in every memory cgroup of the run.
    `netns` runs the probe in an existing namespace (created by someone else, never
    deleted by us).
    """

    target: int | None = 100_000
    hold: float = 0.0
    rate: float | None = None
    sources: tuple[str, ...] = ()
    sink_ports: int | None = None  # None: as many as spread the run (coordinator)
    sink_host: str = "127.0.0.1"
    isolate: bool | None = None
    sysctls: tuple[tuple[str, str], ...] = ()
    memory_floor: int | None = None
    cgroup_floor: int | None = None  # None: max(32 MiB, 10 % of each cgroup's limit)
    max_duration: float = 600.0
    workers: int | None = None
    worker_nofile: int | None = None
    parallel: int = 3
    connect_timeout: float = 5.0
    connect: tuple[Endpoint, ...] = ()
    check: str = "none"
    check_timeout: float = 2.0
    check_every: float | None = None
    settle: float = 0.1  # seconds a passing check must stay unrefused to count as served
    server_pid: int | None = None
    path_netns: str | None = None  # a namespace on the path whose evidence is read (path.py)
    netns: str | None = None
    max_pending: int = 1024
    io_model: IoModel = "epoll"  # the sink's: epoll (one loop) or threads (one per connection)
    #: the fast path's and the sink's accepts: io_uring where allowed (auto), or not
    engine: EngineChoice = "auto"
    message_rate: float = 0.0  # messages per held connection per second
    message_bytes: int = 64
    wake_samples: int = 0  # echo round trips on random held connections, after opening
    record: Path | None = None  # every worker message, as JSON lines (for replay tests)

    @property
    def server_mode(self) -> bool:
        return bool(self.connect)

    @property
    def active(self) -> bool:
        """Held connections carry traffic or wake-up samples: the sink echoes."""
        return self.message_rate > 0 or self.wake_samples > 0

    @property
    def traffic_seconds(self) -> float:
        """The traffic window is the hold (5 s when no --hold was given)."""
        return self.hold or 5.0

    def __post_init__(self) -> None:
        self._check_counts()
        check = checks.parse(self.check)
        if check.kind != "none" and not self.connect:
            raise InputError("--check needs --connect (the built-in sink is not a service)")
        if self.check_every is not None and self.check_every <= 0:
            raise InputError("--check-every must be positive")
        if self.check_every is not None and not check.repeatable:
            raise InputError(
                f"--check-every sends a request on held connections; the {self.check} check "
                "is a one-time handshake with nothing to repeat"
            )
        if self.connect and (self.sink_ports is not None or self.sink_host != "127.0.0.1"):
            raise InputError("--sink-ports/--sink-host are for the built-in sink, not --connect")
        if self.connect and (self.active or self.io_model != "epoll"):
            raise InputError(
                "--io-model, --message-rate and --wake-samples drive the built-in sink, "
                "not --connect"
            )
        if self.message_rate < 0 or self.message_bytes < 1 or self.wake_samples < 0:
            raise InputError("--message-rate must be >= 0 and --message-bytes >= 1")

    def _check_counts(self) -> None:
        if self.target is not None and self.target < 1:
            raise InputError(f"--target must be a positive number or 'max', not {self.target}")
        if self.rate is not None and self.rate <= 0:
            raise InputError("--rate must be positive")
        if (
            (self.sink_ports is not None and self.sink_ports < 1)
            or self.parallel < 1
            or (self.workers is not None and self.workers < 1)
        ):
            raise InputError("--sink-ports, --parallel and --workers must be at least 1")
        if self.worker_nofile is not None and self.worker_nofile < 16:
            raise InputError("--worker-nofile must be at least 16")

    @property
    def isolated(self) -> bool:
        """A private namespace of our own: by default when root and probing the sink."""
        if self.isolate is None:
            return os.geteuid() == 0 and not self.connect and self.netns is None
        return self.isolate

    def check_environment(self, roots: Roots | None = None) -> None:
        """Errors that depend on the machine: root for --isolate, known per-netns sysctls."""
        if self.isolate and os.geteuid() != 0:
            raise InputError("--isolate needs root (it creates a network namespace)")
        if self.isolate and (self.connect or self.netns):
            raise InputError(
                "--isolate makes a fresh namespace that no server lives in; "
                "use --netns NAME to probe inside an existing one"
            )
        if self.netns and os.geteuid() != 0:
            raise InputError("--netns needs root (it enters a network namespace)")
        if self.path_netns and not self.connect:
            raise InputError("--path-netns needs --connect (a path leads to a real server)")
        if self.path_netns:
            netns_mod.require(self.path_netns)
        if self.sysctls and not self.isolated:
            raise InputError(
                "--sysctl is applied only inside the run's own namespace: "
                "needs --isolate (and root); host sysctls are never changed"
            )
        for key, _value in self.sysctls:
            check_sysctl_key(key, roots)
        if self.record is not None and (self.record.exists() or not self.record.parent.is_dir()):
            raise InputError(f"--record-messages {self.record}: must be a new file in a directory")


def check_sysctl_key(key: str, roots: Roots | None = None) -> Path:
    """A per-netns sysctl (net.*) that exists; returns its path under procfs/sys."""
    path = (roots or Roots()).procfs / "sys" / Path(*key.split("."))
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
