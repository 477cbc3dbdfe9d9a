"""The plan in the formats admins use: /etc/sysctl.d, /etc/security/limits.d, a
systemd drop-in, `docker run` flags and a Kubernetes securityContext. Pure: text
from a TunePlan; no dates in the files, so the same plan gives the same bytes."""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass

from tcpceiling.tune.model import Change, TunePlan

NAME = "90-tcpceiling.conf"
SYSCTL_FILE = f"/etc/sysctl.d/{NAME}"
LIMITS_FILE = f"/etc/security/limits.d/{NAME}"
#: sysctls the kernel keeps per network namespace, so a container sets its own;
#: the rest are the host's (tcp_mem and nf_conntrack_max/buckets are global).
HOST_ONLY_NET = (
    "net.ipv4.tcp_mem",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
)
#: The kubelet's safe set (pkg/kubelet/sysctl/safe_sysctls.go, Kubernetes 1.29+);
#: every other namespaced sysctl is "unsafe" and needs --allowed-unsafe-sysctls.
K8S_SAFE = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
)
SYSTEMD_KEYS = {
    "nofile": "LimitNOFILE",
    "nproc": "LimitNPROC",
    "memory.max": "MemoryMax",
    "pids.max": "TasksMax",
}


@dataclass(frozen=True)
class PlannedFile:
    path: str  # where it goes on the target system (under --root when given)
    content: str
    takes_effect: str


def _header(plan: TunePlan, what: str) -> str:
    return (
        f"# {what}, written by tcpceiling tune for {plan.target:,} connections as a "
        f"{plan.role}\n# (every limit raised to {plan.goal:,}: {plan.headroom:.0%} headroom). "
        "`tcpceiling tune --restore` puts back what was here.\n"
    )


def namespaced(key: str) -> bool:
    return key.startswith("net.") and key not in HOST_ONLY_NET


def _sysctls(plan: TunePlan) -> list[Change]:
    return [c for c in plan.changes if c.where == "sysctl"]


def sysctl_file(plan: TunePlan) -> PlannedFile | None:
    changes = _sysctls(plan)
    if not changes:
        return None
    lines = [_header(plan, "sysctl.d(5)")]
    for c in changes:
        lines.append(f"# {c.limit}: {c.why} (was {c.now})\n{c.key} = {c.value}\n")
    return PlannedFile(SYSCTL_FILE, "".join(lines), "now (loaded with --apply), and at every boot")


def limits_file(plan: TunePlan) -> PlannedFile | None:
    """pam_limits: a '*' line does not match root (limits.conf(5)), so root has its own."""
    rlimits = [c for c in plan.changes if c.where == "rlimit"]
    if not rlimits:
        return None
    lines = [_header(plan, "limits.conf(5)")]
    for c in rlimits:
        soft, _, hard = c.value.partition(":")
        for who in ("*", "root"):
            lines.append(f"{who:<5} soft {c.key} {soft}\n{who:<5} hard {c.key} {hard or soft}\n")
    return PlannedFile(LIMITS_FILE, "".join(lines), "new login sessions (pam_limits)")


def unit_name(service: str) -> str:
    return service if "." in service else f"{service}.service"


def systemd_file(plan: TunePlan) -> PlannedFile | None:
    """A drop-in for the service: its rlimits and cgroup limits (systemd.exec(5),
    systemd.resource-control(5))."""
    keys = [c for c in plan.changes if c.key in SYSTEMD_KEYS]
    if not plan.service or not keys:
        return None
    unit = unit_name(plan.service)
    body = "".join(f"{SYSTEMD_KEYS[c.key]}={c.value.partition(':')[0]}\n" for c in keys)
    path = f"/etc/systemd/system/{unit}.d/{NAME}"
    effect = f"systemctl daemon-reload && systemctl restart {unit}"
    return PlannedFile(path, _header(plan, "systemd drop-in") + "[Service]\n" + body, effect)


def planned_files(plan: TunePlan) -> tuple[PlannedFile, ...]:
    found = (sysctl_file(plan), limits_file(plan), systemd_file(plan))
    return tuple(f for f in found if f is not None)


def docker_flags(plan: TunePlan) -> list[str]:
    """`docker run` flags for what a container can set for itself."""
    flags = []
    for c in plan.changes:
        if c.where == "rlimit":
            flags.append(
                f"--ulimit {c.key}={c.value if ':' in c.value else c.value + ':' + c.value}"
            )
        elif c.key == "memory.max":
            flags.append(f"--memory {c.value}")
        elif c.key == "pids.max":
            flags.append(f"--pids-limit {c.value}")
        elif namespaced(c.key):
            flags.append(f"--sysctl {shlex.quote(f'{c.key}={c.value}')}")
    return flags


def kubernetes(plan: TunePlan) -> tuple[str, list[str]]:
    """A pod's securityContext.sysctls, and the names the kubelet calls unsafe."""
    pod = [c for c in plan.changes if namespaced(c.key)]
    limits = [c for c in plan.changes if c.where == "rlimit"]
    if not pod and not limits:
        return "", []
    lines = ["securityContext:", "  sysctls:"] if pod else []
    for c in pod:
        lines += [f"  - name: {c.key}", f'    value: "{c.value}"']
    for c in limits:  # a pod spec has no ulimits: they come from the container runtime
        lines.append(
            f"# {c.key} {c.value}: no pod field sets it; raise the runtime's default "
            "(containerd/CRI-O LimitNOFILE=) or run `ulimit -n` in the entrypoint"
        )
    return "\n".join(lines) + "\n", [c.key for c in pod if c.key not in K8S_SAFE]


def host_only(plan: TunePlan) -> list[Change]:
    """Changes a container cannot make: the node's sysctls."""
    return [c for c in _sysctls(plan) if not namespaced(c.key)]


def diff(path: str, old: str | None, new: str) -> str:
    """A unified diff of a file against what is there now (all added when absent)."""
    before = (old or "").splitlines(keepends=True)
    label = path if old is not None else "/dev/null"
    return "".join(difflib.unified_diff(before, new.splitlines(keepends=True), label, path))
