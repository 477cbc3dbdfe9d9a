"""`tcpceiling tune`: plan, show the files and their diffs, prove the net.* part in a
private namespace (--verify), write them (--apply) or put back what was there
(--restore). The steps are library functions; the CLI only parses and renders."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tcpceiling.analysis.analyze import prepare
from tcpceiling.analysis.model import Scenario
from tcpceiling.errors import InputError
from tcpceiling.host.read import HostSnapshot
from tcpceiling.host.roots import Roots
from tcpceiling.tune import apply as writer
from tcpceiling.tune import files as render
from tcpceiling.tune.model import TunePlan
from tcpceiling.tune.planner import plan as make_plan

#: systemd unit names: letters, digits and ":-_.\\@" (systemd.unit(5)); no path.
UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]+")
#: The per-netns values the model reads; --verify copies them into its namespace so
#: the probe starts from the analysed namespace, then sets the plan's.
NETNS_KEYS = (
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.core.somaxconn",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_tw_buckets",
)


@dataclass(frozen=True)
class FileView:
    path: str  # on the target system
    written_to: str  # under --root
    content: str
    takes_effect: str
    diff: str  # against what is there now


@dataclass(frozen=True)
class Verified:
    """The probe run with the plan's net.* values in a namespace of its own."""

    target: int
    established: int
    reached: bool
    stop: str
    detail: str
    sysctls: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TuneResult:
    plan: TunePlan
    reachable: bool
    files: tuple[FileView, ...]
    docker: tuple[str, ...]
    kubernetes: str
    kubernetes_unsafe: tuple[str, ...]
    host_only: tuple[str, ...]
    check_command: str
    root: str = "/"
    applied: tuple[str, ...] = ()
    loaded: tuple[tuple[str, str], ...] = ()
    load_failed: tuple[str, ...] = ()
    verified: Verified | None = None
    host: dict[str, Any] = field(default_factory=dict)


def _views(root: Path, planned: tuple[render.PlannedFile, ...]) -> tuple[FileView, ...]:
    out = []
    for f in planned:
        target = writer.under(root, f.path)
        old = target.read_text(errors="replace") if target.exists() else None
        out.append(
            FileView(
                f.path, str(target), f.content, f.takes_effect, render.diff(f.path, old, f.content)
            )
        )
    return tuple(out)


def check_command(plan: TunePlan, netns: str | None) -> str:
    """The analyze command that checks the plan with the what-if model."""
    s = plan.before.scenario
    words = ["tcpceiling", "analyze", "--role", s.role]
    words += [w for d in s.connect for w in ("--connect", str(d))]
    words += [w for src in s.sources for w in ("--source-ip", src)]
    if s.processes != 1:
        words += ["--processes", str(s.processes)]
    if s.io_model != "epoll":
        words += ["--io-model", s.io_model]
    if netns:
        words += ["--netns", netns]
    words += [w for k, v in plan.settings for w in ("--set", f"{k}={v}")]
    return shlex.join(words)


def build(
    scenario: Scenario,
    target: int,
    headroom: float = 0.1,
    service: str | None = None,
    roots: Roots | None = None,
    pid: str = "self",
    netns: str | None = None,
    root: Path = Path("/"),
) -> tuple[TuneResult, HostSnapshot]:
    """The plan and everything it is shown as; nothing is written."""
    if scenario.role not in ("server", "client", "nat"):
        raise InputError("tune plans one side: --role server, client or nat")
    if service is not None and not UNIT.fullmatch(service):
        raise InputError(f"--service {service!r}: not a systemd unit name")
    if not root.is_dir():
        raise InputError(f"--root {root}: not a directory")
    scenarios, snap, routes = prepare([scenario], roots or Roots(), pid, netns)
    p = make_plan(snap, scenarios[0], routes, target, headroom, service)
    reachable = p.reachable
    k8s, unsafe = render.kubernetes(p)
    result = TuneResult(
        plan=p,
        reachable=reachable,
        files=_views(root, render.planned_files(p)) if reachable else (),
        docker=tuple(render.docker_flags(p)),
        kubernetes=k8s,
        kubernetes_unsafe=tuple(unsafe),
        host_only=tuple(f"{c.key} = {c.value}" for c in render.host_only(p)),
        check_command=check_command(p, netns),
        root=str(root),
    )
    return result, snap


def verify_sysctls(result: TuneResult, snap: HostSnapshot) -> tuple[tuple[str, str], ...]:
    """The analysed namespace's per-netns values, then the plan's."""
    net = snap.net
    values = {
        "net.ipv4.ip_local_port_range": "{} {}".format(*net.port_range),
        "net.core.somaxconn": str(net.somaxconn),
        "net.ipv4.tcp_tw_reuse": str(net.tw_reuse),
        "net.ipv4.tcp_max_tw_buckets": str(net.max_tw_buckets),
    }
    if net.reserved_ports:
        values["net.ipv4.ip_local_reserved_ports"] = ",".join(map(str, sorted(net.reserved_ports)))
    values.update({c.key: c.value for c in result.plan.changes if c.key in NETNS_KEYS})
    return tuple(values.items())


def verify(result: TuneResult, snap: HostSnapshot) -> TuneResult:
    """Open the target's connections in a namespace of its own with the plan's net.*
    values set: the built-in sink stands for the server (its destination ports as
    many as the scenario's), the workers shard to stay under this process's fd limit."""
    from tcpceiling.probe.run.config import ProbeConfig
    from tcpceiling.probe.run.coordinator import run as run_probe

    s = result.plan.before.scenario
    sysctls = verify_sysctls(result, snap)
    cfg = ProbeConfig(
        target=result.plan.target,
        sources=s.sources,
        sink_ports=max(1, len({d.port for d in s.connect})) if s.role == "client" else None,
        isolate=True,
        sysctls=sysctls,
        io_model=s.io_model,
    )
    probe = run_probe(cfg)
    reached = probe.established >= result.plan.target
    verified = Verified(
        result.plan.target,
        probe.established,
        reached,
        probe.stop.reason,
        probe.stop.detail,
        sysctls,
    )
    return replace(result, verified=verified)


def apply(result: TuneResult, root: Path, procfs: Path = Path("/proc")) -> TuneResult:
    """Write the files under root; on the live root also load the sysctls (and
    record what they replaced, for --restore)."""
    if not result.reachable:
        raise InputError("the target cannot be reached by settings here: nothing written")
    planned = tuple(render.PlannedFile(f.path, f.content, f.takes_effect) for f in result.files)
    writer.write_files(root, planned)
    loaded: list[tuple[str, str]] = []
    failed: list[str] = []
    if root == Path("/"):
        sysctls = [(c.key, c.value) for c in result.plan.changes if c.where == "sysctl"]
        before, failed = writer.load_sysctls(procfs, sysctls)
        writer.record_sysctls(root, tuple(before))
        loaded = [(k, v) for k, v in sysctls if k in dict(before)]
    applied = tuple(f.written_to for f in result.files)
    return replace(result, applied=applied, loaded=tuple(loaded), load_failed=tuple(failed))


@dataclass(frozen=True)
class Restored:
    root: str
    files: tuple[str, ...]
    sysctls: tuple[tuple[str, str], ...]
    sysctl_failed: tuple[str, ...] = ()


def restore(root: Path, procfs: Path = Path("/proc")) -> Restored:
    """Undo the last --apply under root: files, directories, and live sysctls."""
    manifest = writer.restore_files(root)
    _, failed = writer.load_sysctls(procfs, list(manifest.sysctls_before))
    files = tuple(str(writer.under(root, e.path)) for e in manifest.entries)
    return Restored(str(root), files, manifest.sysctls_before, tuple(failed))
