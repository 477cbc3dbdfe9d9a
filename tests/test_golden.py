"""Golden tests: `analyze --json` on each fixture tree, diffed against expected/CASE.json.

Set UPDATE_GOLDEN=1 to rewrite the expected files after an intended change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, cli_json, constraint

CASES = [
    (tree.name, case, args)
    for tree in sorted(p for p in FIXTURES.iterdir() if (p / "cases.json").exists())
    for case, args in json.loads((tree / "cases.json").read_text()).items()
]


@pytest.mark.parametrize(("tree", "case", "args"), CASES, ids=[f"{t}-{c}" for t, c, _ in CASES])
def test_golden(tree: str, case: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES / tree)  # relative roots keep paths in the output stable
    got = cli_json("analyze", "--procfs", "proc", "--sysfs", "sys", *args)
    assert got["host"].pop("time")  # when the analysis ran: the one field that moves
    expected_file = Path("expected") / f"{case}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.parent.mkdir(exist_ok=True)
        expected_file.write_text(json.dumps(got, indent=2) + "\n")
    assert got == json.loads(expected_file.read_text())


def _analyze(tree: str, *args: str) -> dict[str, object]:
    base = FIXTURES / tree
    data = cli_json("analyze", "--procfs", str(base / "proc"), "--sysfs", str(base / "sys"), *args)
    return data["scenarios"][0]  # type: ignore[no-any-return]


def test_this_machine_server_is_nofile_bound() -> None:
    s = _analyze("this-machine", "--role", "server")
    assert s["binding"] == "nofile"
    nofile = constraint(s, "nofile")
    assert abs(nofile["ceiling"] - 20000) <= 10
    assert nofile["details"]["hard_raisable"] is False


def test_container_v2_limits_bind() -> None:
    s = _analyze("container-v2", "--role", "server", "--io-model", "threads")
    assert s["binding"] == "cgroup_pids"
    assert constraint(s, "cgroup_pids")["ceiling"] == 512 - 12
    mem = constraint(s, "cgroup_memory")
    assert mem["capacity"] == 536870912
    assert mem["ceiling"] == (536870912 - 52428800) // mem["per_connection"]
    assert constraint(s, "file_max")["ceiling"] is not None  # no CAP_SYS_ADMIN: enforced


def test_stock_distro_soft_nofile() -> None:
    s = _analyze("stock-distro", "--role", "server")
    assert s["binding"] == "nofile"
    nofile = constraint(s, "nofile")
    assert nofile["capacity"] == 1024
    assert "ulimit -n 524288" in nofile["raise"]
    threads = _analyze("stock-distro", "--role", "server", "--io-model", "threads")
    assert constraint(threads, "threads")["details"]["RLIMIT_NPROC"]["capacity"] == 62967


def test_stock_distro_ports_count_existing_connections() -> None:
    s = _analyze(
        "stock-distro",
        "--role",
        "client",
        "--connect",
        "140.82.121.4:443",
        "--source-ip",
        "192.168.1.20",
    )
    ports = constraint(s, "ports")
    # 28,232 in range, port 40000 held by a listener, 3 used toward the tuple (TIME_WAIT
    # counts: tcp_tw_reuse=2 is loopback-only).
    assert ports["details"]["bind_held_in_range"] == 1
    assert ports["ceiling"] == 28232 - 1 - 3


def test_cpu_ceiling_arithmetic() -> None:
    """2 CPUs x 0.7 / (0.5 msg/s x 12.5 us) = 224,000 connections; 10x the rate, 1/10."""
    args = ["--role", "server", "--cpu-us-per-message", "12.5"]
    slow = constraint(_analyze("this-machine", *args, "--message-rate", "0.5"), "cpu")
    fast = constraint(_analyze("this-machine", *args, "--message-rate", "5"), "cpu")
    assert (slow["ceiling"], fast["ceiling"]) == (224_000, 22_400)
    assert slow["capacity"] == 1_400_000 and slow["per_connection"] == 6.25
    idle = constraint(_analyze("this-machine", "--role", "server"), "cpu")
    assert idle["ceiling"] is None and "idle" in idle["note"]
