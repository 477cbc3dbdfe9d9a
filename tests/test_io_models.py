"""Threads vs epoll and the CPU ceiling, measured."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    IS_ROOT,
    cgroup_controller,
    constraint,
    needs_root,
    probe,
    remove_cgroup,
)

pytestmark = pytest.mark.usefixtures("engine")  # each test on io_uring and on epoll

TCPCEILING = [sys.executable, "-m", "tcpceiling"]


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A throwaway pids cgroup with pids.max 300, removed when its tasks are gone."""
    found = cgroup_controller("pids")
    if not IS_ROOT or found is None:
        pytest.skip("needs root and a pids cgroup controller")
    group = found[0] / f"tcx-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    (group / "pids.max").write_text("300")
    try:
        yield group
    finally:
        remove_cgroup(group)


def in_cgroup(group: Path, *args: str) -> dict[str, Any]:
    """Run tcpceiling ARGS --json as a process of the cgroup; returns its JSON."""
    script = f'echo $$ > {group}/cgroup.procs && exec "$@"'
    proc = subprocess.run(
        ["sh", "-c", script, "sh", *TCPCEILING, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_threads_stop_at_the_pids_cgroup_as_analyze_predicts(pids_cgroup: Path) -> None:
    analysis = in_cgroup(pids_cgroup, "analyze", "--role", "server", "--io-model", "threads")
    predicted = analysis["scenarios"][0]
    assert predicted["binding"] == "cgroup_pids"
    r = in_cgroup(pids_cgroup, "probe", "--target", "max", "--io-model", "threads")
    assert r["stop"]["reason"] in ("cgroup_pids", "threads")
    assert r["stop"]["errno"] == "EAGAIN" and r["stop"]["side"] == "server"
    assert abs(r["served"] - predicted["ceiling"]) <= 0.02 * predicted["ceiling"]
    assert r["predicted"]["binding"] == "cgroup_pids"
    assert abs(r["served"] - r["predicted"]["ceiling"]) <= 0.02 * r["predicted"]["ceiling"]


@needs_root
def test_compare_io_threads_cost_more_memory_per_connection() -> None:
    proc = subprocess.run(
        [*TCPCEILING, "compare-io", "--connections", "5000", "--wake-samples", "50", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    models = {m["io_model"]: m for m in data["models"]}
    assert set(models) == {"epoll", "threads"}
    for m in models.values():
        assert m["connections"] == 5000
        assert m["setup_seconds"] > 0 and m["cpu_seconds"] > 0
        assert m["wake_latency_us"]["p50"] > 0 and m["wake_latency_us"]["p99"] > 0
    ratio = models["threads"]["memory_per_connection"] / models["epoll"]["memory_per_connection"]
    assert ratio >= 3, ratio
    assert math.isclose(data["memory_ratio"], ratio, rel_tol=0.01)
    # where a thread's cost lives: kernel stack + page tables (16 KiB stack alone)
    assert models["threads"]["task_bytes"] > 16_000 > models["epoll"]["task_bytes"]


def _cpu_ceiling(profile: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [*TCPCEILING, "analyze", "--role", "server", "--cost-from", str(profile), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return constraint(json.loads(proc.stdout)["scenarios"][0], "cpu")


@needs_root
def test_cpu_ceiling_from_measured_profiles(tmp_path: Path) -> None:
    ceilings = {}
    for rate in (2, 20):
        code, r = probe("--target", "2000", "--measure-cpu", "--message-rate", str(rate),
                        "--hold", "4")  # fmt: skip
        assert code == 0 and r["traffic"]["messages"] > 0.8 * 2000 * rate * 4
        profile = tmp_path / f"rate{rate}.json"
        profile.write_text(json.dumps(r))
        cpu = _cpu_ceiling(profile)
        t = r["traffic"]
        assert t["cpu_us_per_message"] == pytest.approx(
            t["server_cpu_seconds"] * 1e6 / t["messages"], rel=0.01
        )
        cores = cpu["details"]["cores"]
        expected = math.floor(cores * 0.7 * 1e6 / (rate * t["cpu_us_per_message"]))
        assert cpu["ceiling"] == expected
        ceilings[rate] = cpu["ceiling"]
    assert 5 <= ceilings[2] / ceilings[20] <= 20, ceilings


def _kernel_at_least(major: int, minor: int) -> bool:
    release = platform.release().split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


@pytest.mark.skipif(
    not IS_ROOT or not _kernel_at_least(6, 14),
    reason="needs root, and Linux >= 6.14 where pid_max is per pid namespace (writing it "
    "on an older kernel would change the host's)",
)
def test_threads_in_a_pid_namespace_count_its_own_tasks(tmp_path: Path) -> None:
    """pid_max 400 in a fresh pid namespace: analyze counts that namespace's tasks
    (not the host's), and the thread sink serves what it left, less the pids the
    probe itself took before its threads (coordinator, namespace helpers, sink and
    client processes: every pid up to the last client's)."""
    exe = " ".join(TCPCEILING)
    script = (
        "echo 400 > /proc/sys/kernel/pid_max && "
        f"{exe} analyze --role server --io-model threads --json > {tmp_path}/a.json && "
        f"{exe} probe --io-model threads --target max --json > {tmp_path}/p.json "
        f"2> {tmp_path}/p.err; true"
    )
    subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        check=True,
        timeout=300,
    )
    a = json.loads((tmp_path / "a.json").read_text())
    r = json.loads((tmp_path / "p.json").read_text())
    s = a["scenarios"][0]
    pid_max = constraint(s, "threads")["details"]["pid_max"]
    assert s["binding"] == "threads" and pid_max["capacity"] == 400
    assert pid_max["in_use"] < 10  # this namespace's tasks, not the host's hundreds
    assert r["stop"]["reason"] == "threads" and r["stop"]["side"] == "server"
    taken_by_probe = max(r["worker_pids"]) - a["host"]["pid"]
    assert abs(s["ceiling"] - taken_by_probe - r["served"]) <= 3
    assert abs(r["predicted"]["ceiling"] - r["served"]) <= 3
    head = (tmp_path / "p.err").read_text()
    assert f"{r['served']:,} connections served by the sink" in head
