"""The memory budget's arithmetic and readers, on literal text and on cgroup trees
laid out in a temporary directory (v2 and v1): no root, no live cgroup."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tcpceiling.analysis.analyze import evaluate, read_snapshot
from tcpceiling.analysis.limits.memory import cgroup_floor
from tcpceiling.analysis.model import Endpoint, Scenario
from tcpceiling.errors import ParseError
from tcpceiling.host import cgroups, parse
from tcpceiling.host.read import CgroupView, ProcessView, read_process
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget
from tests.conftest import FIXTURES

MIB = 1 << 20

V2_STAT = """anon 104857600
file 209715200
kernel 8388608
sock 0
slab 6291456
active_file 52428800
inactive_file 157286400
"""
V1_OOM = """oom_kill_disable 0
under_oom 0
oom_kill 3
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (V2_STAT, {"inactive_file": 157286400, "anon": 104857600}),
        (V1_OOM, {"oom_kill": 3, "under_oom": 0}),
        ("low 0\nhigh 12\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n", {"high": 12}),
        ("", {}),
    ],
)
def test_flat_keyed(text: str, expected: dict[str, int]) -> None:
    got = parse.parse_flat_keyed(text)
    assert expected.items() <= got.items()


@pytest.mark.parametrize("text", ["oom_kill", "oom_kill three", "a 1 2"])
def test_flat_keyed_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse.parse_flat_keyed(text)


@pytest.mark.parametrize(
    ("limit", "given", "floor"),
    [
        (256 * MIB, None, 32 * MIB),  # 10 % is 25.6 MiB: the 32 MiB minimum
        (1 << 30, None, (1 << 30) // 10),
        (64 * MIB, None, 32 * MIB),
        (1 << 30, 0, 0),
        (1 << 30, 5 * MIB, 5 * MIB),
    ],
)
def test_cgroup_floor(limit: int, given: int | None, floor: int) -> None:
    assert cgroup_floor(limit, given) == floor


def _write(base: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _v2_tree(tmp_path: Path) -> Roots:
    """A pod in a v2 hierarchy: the pod's memory.max 300 MiB with 200 MiB used, of
    which 150 MiB is inactive file cache; its container's memory.high 250 MiB; the
    kubepods slice 1 GiB."""
    cg = "sys/fs/cgroup/"
    _write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
            cg + "cgroup.controllers": "cpuset cpu io memory pids\n",
            cg + "kubepods/memory.max": str(1 << 30),
            cg + "kubepods/memory.current": str(400 * MIB),
            cg + "kubepods/pod1/memory.max": str(300 * MIB),
            cg + "kubepods/pod1/memory.current": str(200 * MIB),
            cg + "kubepods/pod1/memory.stat": V2_STAT,
            cg + "kubepods/pod1/memory.events": "oom 0\noom_kill 2\n",
            cg + "kubepods/pod1/ctr/memory.max": "max\n",
            cg + "kubepods/pod1/ctr/memory.high": str(250 * MIB),
            cg + "kubepods/pod1/ctr/memory.current": str(190 * MIB),
            cg + "kubepods/pod1/ctr/memory.stat": V2_STAT,
        },
    )
    return Roots.fixture(tmp_path)


def _process(cgroup: dict[str, str]) -> ProcessView:
    """A process of the container-v2 fixture, moved to `cgroup`."""
    return replace(read_process(Roots.fixture(FIXTURES / "container-v2")), cgroups=cgroup)


def test_v2_every_limited_ancestor_is_a_line(tmp_path: Path) -> None:
    roots = _v2_tree(tmp_path)
    proc = _process({"": "/kubepods/pod1/ctr"})
    found = cgroups.memory_cgroups(roots, proc)
    assert [c.path for c in found] == ["kubepods/pod1/ctr", "kubepods/pod1", "kubepods"]
    ctr, pod, _slice = found
    assert ctr.line == 250 * MIB  # memory.max is max: memory.high is its line
    assert pod.working_set == 200 * MIB - 157286400
    assert pod.oom_kills == 2 and pod.sockets_charged
    assert cgroups.tightest(found) == ctr  # 250 - 40 = 210 MiB of room against 300 - 50
    view = cgroups.read_cgroup(roots, proc)
    assert (view.memory_limit, view.memory_path) == (250 * MIB, "kubepods/pod1/ctr")
    assert view.memory_reclaimable == 157286400 and view.sockets_charged


def test_v1_socket_accounting_follows_the_tcp_limit(tmp_path: Path) -> None:
    cg = "sys/fs/cgroup/memory/"
    _write(
        tmp_path,
        {
            cg + "app/memory.limit_in_bytes": str(256 * MIB),
            cg + "app/memory.usage_in_bytes": str(16 * MIB),
            cg + "app/memory.oom_control": V1_OOM,
            cg + "app/memory.kmem.tcp.limit_in_bytes": "9223372036854771712\n",
            cg + "tcp/memory.limit_in_bytes": str(256 * MIB),
            cg + "tcp/memory.usage_in_bytes": str(16 * MIB),
            cg + "tcp/memory.kmem.tcp.limit_in_bytes": str(64 * MIB),
        },
    )
    roots = Roots.fixture(tmp_path)
    app = cgroups.memory_cgroups(roots, _process({"memory": "/app"}))
    tcp = cgroups.memory_cgroups(roots, _process({"memory": "/tcp"}))
    assert [(c.path, c.sockets_charged, c.oom_kills) for c in app] == [("memory/app", False, 3)]
    assert [(c.path, c.sockets_charged) for c in tcp] == [("memory/tcp", True)]


def _server_ceiling(view: CgroupView, **scenario: object) -> tuple[int | float | None, float]:
    snap, _ = read_snapshot(Roots.fixture(FIXTURES / "this-machine"))
    snap = replace(snap, cgroup=view)
    sc = Scenario(role="server", listen=(Endpoint("0.0.0.0", 80),), **scenario)  # type: ignore[arg-type]
    c = evaluate(snap, sc).constraint("cgroup_memory")
    return c.ceiling, c.per_connection or 0.0


def test_the_cgroup_is_charged_what_the_kernel_charges_it() -> None:
    """v1 without socket accounting: an accepted socket charges its file, inode and
    dentry, not its struct sock (measured here: 1.3 KiB); v2 charges the whole. A
    local peer in the cgroup adds the connecting end (the whole idle socket)."""
    v1 = CgroupView(1, 256 * MIB, 16 * MIB, None, None, "memory/app", "")
    v2 = replace(v1, version=2, sockets_charged=True)
    _, accepted = _server_ceiling(v1)
    _, whole = _server_ceiling(v2)
    assert 1200 < accepted < 1700 and 3800 < whole < 4400
    _, both = _server_ceiling(v1, peer_local=True)
    assert both == pytest.approx(accepted + whole, abs=1)
    ceiling, per = _server_ceiling(v1, peer_local=True, cgroup_floor=None)
    assert ceiling == pytest.approx((240 * MIB - 32 * MIB) // per, abs=1)


def test_working_set_excludes_reclaimable_cache() -> None:
    """A container whose page cache filled its limit is not full: the kernel
    reclaims inactive file cache before it OOM-kills."""
    full = CgroupView(2, 256 * MIB, 256 * MIB, None, None, "app", "", 200 * MIB, True)
    ceiling, per = _server_ceiling(full)
    # 256 MiB less a working set of 56 (per_connection is rounded to 0.1 B)
    assert ceiling == pytest.approx((200 * MIB) // per, abs=1)


def test_a_budget_with_no_cgroup_is_the_hosts() -> None:
    view = CgroupView(1, None, 16 * MIB, None, None, "/", "")
    alone = budget.MemoryBudget(1 << 30, 2 << 30, (), view)
    assert (alone.room, alone.protects) == (1 << 30, "memory")
    line = budget.CgroupLine("memory/app", "/x", 1, 256 * MIB, 32 * MIB, 40 * MIB, 0)
    boxed = budget.MemoryBudget(1 << 30, 2 << 30, (line,), view)
    assert (boxed.room, boxed.protects) == (184 * MIB, "cgroup_memory")


def test_breach_reads_usage_then_the_working_set(tmp_path: Path) -> None:
    roots = _v2_tree(tmp_path)
    proc = _process({"": "/kubepods/pod1/ctr"})
    lines = budget.lines_of(cgroups.memory_cgroups(roots, proc), None)
    assert budget.cgroup_breach(lines) is None
    ctr = tmp_path / "sys/fs/cgroup/kubepods/pod1/ctr"
    (ctr / "memory.current").write_text(str(240 * MIB))  # past 250 - 32, but cache is reclaimable
    assert budget.cgroup_breach(lines) is None
    (ctr / "memory.stat").write_text("inactive_file 0\n")
    breach = budget.cgroup_breach(lines)
    assert breach is not None
    assert (breach.where, breach.used, breach.stop_at) == (
        "kubepods/pod1/ctr",
        240 * MIB,
        218 * MIB,
    )
    assert "kubepods/pod1/ctr" in breach.detail and breach.protects == "cgroup_memory"
    stop = budget.guard_stop(breach)
    assert stop.reason == "guard:memory" and stop.evidence["where"] == "kubepods/pod1/ctr"
