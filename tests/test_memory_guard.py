"""The memory guard inside a memory cgroup (a container, a systemd service with
MemoryMax=): every command that opens connections stops at the cgroup's line with a
complete result naming the cgroup, and the kernel's OOM killer never acts, neither
on the run nor on a process beside it. Real cgroups (v1 here, v2 where mounted so),
real sockets; the v2 arithmetic is table-tested in test_cgroup_memory.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.host.parse import parse_flat_keyed
from tests.conftest import (
    IS_ROOT,
    assert_engine_ran,
    cgroup_controller,
    constraint,
    paced,
    remove_cgroup,
)
from tests.conftest import probe as probe_json

TCPCEILING = [sys.executable, "-m", "tcpceiling"]
MIB = 1 << 20
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]  # on both engines


class Group:
    """A throwaway memory cgroup of ours."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version

    def set_limit(self, nbytes: int) -> None:
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        (self.path / name).write_text(str(nbytes))

    @property
    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return parse_flat_keyed((self.path / name).read_text())["oom_kill"]

    @property
    def tasks(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def run(self, *args: str, timeout: float = 300) -> tuple[int, dict[str, Any]]:
        """tcpceiling ARGS --json as a process of this cgroup: (exit code, JSON)."""
        script = f'echo $$ > {self.path}/cgroup.procs && exec "$@"'
        proc = subprocess.run(
            ["sh", "-c", script, "sh", *TCPCEILING, *args, "--json"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.stdout, proc.stderr
        r = json.loads(proc.stdout)
        # compare-io runs its own sinks; toward a real server the opening is epoll's
        assert_engine_ran(r, args[0] in ("probe", "rate") and not paced(args))
        return proc.returncode, r

    def sibling(self, nbytes: int) -> subprocess.Popen[bytes]:
        """A process of the cgroup holding `nbytes` of touched memory (the application
        a probe runs beside), until killed."""
        code = (
            f"import sys, time; b = bytearray({nbytes}); b[::4096] = b'x' * len(b[::4096]); "
            "print('ready', flush=True); time.sleep(600)"
        )
        script = f'echo $$ > {self.path}/cgroup.procs && exec "$@"'
        p = subprocess.Popen(
            ["sh", "-c", script, "sh", sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        return p


@pytest.fixture
def memory_group() -> Iterator[Group]:
    found = cgroup_controller("memory")
    if not IS_ROOT or found is None:
        pytest.skip("needs root and a memory cgroup controller")
    root, version = found
    group = Group(root / f"tcx-{uuid.uuid4().hex[:8]}", version)
    group.path.mkdir()
    try:
        yield group
    finally:
        remove_cgroup(group.path)


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("tcpceiling-")}


def _assert_guarded(group: Group, code: int, stop: dict[str, Any]) -> None:
    assert code == 1
    assert stop["reason"] == "guard:memory", stop
    assert stop["evidence"]["protects"] == "cgroup_memory"
    assert group.path.name in stop["evidence"]["where"] and group.path.name in stop["detail"]
    assert stop["evidence"]["used"] < stop["evidence"]["limit"]


def test_probe_stops_at_the_cgroup_as_analyze_predicts(memory_group: Group) -> None:
    """256 MiB, a target far past what fits (both ends of each connection are ours):
    guard:memory, the cgroup named, within 10 % of analyze's prediction with the same
    floor and a local peer, and no OOM kill."""
    memory_group.set_limit(256 * MIB)
    before, spaces = memory_group.oom_kills, _namespaces()
    code, a = memory_group.run(
        "analyze", "--role", "server", "--peer-local", "--cgroup-floor", "auto"
    )
    predicted = constraint(a["scenarios"][0], "cgroup_memory")
    assert predicted["details"]["floor"] == 32 * MIB
    assert memory_group.path.name in predicted["details"]["path"]
    code, r = memory_group.run("probe", "--target", "60000")
    _assert_guarded(memory_group, code, r["stop"])
    assert r["established"] == pytest.approx(predicted["ceiling"], rel=0.10)
    assert r["predicted"]["binding"] == "cgroup_memory"
    assert r["established"] == pytest.approx(r["predicted"]["ceiling"], rel=0.10)
    guard = r["memory_guard"]
    assert guard["protects"] == "cgroup_memory"
    mine = [c for c in guard["cgroups"] if memory_group.path.name in c["path"]]
    assert mine and mine[0]["oom_kills_before"] == mine[0]["oom_kills_after"] == before
    assert memory_group.oom_kills == before
    assert memory_group.tasks == [] and _namespaces() == spaces


def test_compare_io_stops_both_models_at_the_cgroup(memory_group: Group) -> None:
    """A thread per connection charges ~20x an epoll connection: both models stop at
    the line, the thread sink included (it stops accepting there)."""
    memory_group.set_limit(256 * MIB)
    before = memory_group.oom_kills
    code, r = memory_group.run("compare-io", "--connections", "50000")
    assert code == 1
    for m in r["models"]:
        assert m["stop"] == "guard:memory", m
        assert memory_group.path.name in m["stop_detail"]
        assert 0 < m["connections"] < 50_000
    assert memory_group.oom_kills == before and memory_group.tasks == []


def test_rate_stops_at_the_cgroup(memory_group: Group) -> None:
    """rate --rate max holds no connection: TIME_WAIT sockets are made in softirq and
    charged to no cgroup, so in 256 MiB it peaks near 50 MiB here (its processes) and
    ends on its own limit. Its guard is shown where its processes do not fit: 64 MiB
    (line 32 MiB). One worker fits there and the second does not: the guard's stop is
    the run's, though the ramp's best step is the first."""
    memory_group.set_limit(64 * MIB)
    before = memory_group.oom_kills
    code, r = memory_group.run("rate", "--rate", "max", "--duration", "10")
    _assert_guarded(memory_group, code, r["stop"])
    assert memory_group.oom_kills == before and memory_group.tasks == []


def test_a_process_beside_the_run_survives(memory_group: Group) -> None:
    """The application the probe runs beside, holding 64 MiB of its own, outlives a
    probe, a compare-io and a rate run in its cgroup."""
    memory_group.set_limit(256 * MIB)
    before = memory_group.oom_kills
    app = memory_group.sibling(64 * MIB)
    try:
        code, r = memory_group.run("probe", "--target", "60000")
        _assert_guarded(memory_group, code, r["stop"])
        code, c = memory_group.run("compare-io", "--connections", "50000")
        assert [m["stop"] for m in c["models"]] == ["guard:memory", "guard:memory"]
        code, _ = memory_group.run("rate", "--rate", "max", "--duration", "5")
        assert app.poll() is None, "the kernel killed the process beside the run"
        assert memory_group.oom_kills == before
        assert memory_group.tasks == [app.pid]
    finally:
        app.kill()
        app.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_stops_accepting_at_the_cgroup(memory_group: Group) -> None:
    """`serve` in a 96 MiB cgroup (three shards, three ports: room for 60,000 by fds
    and ports), probed from outside it past what fits: its shards stop accepting at
    the line (the probe's surplus waits in the accept queue) and it says so; the
    kernel kills nothing."""
    memory_group.set_limit(96 * MIB)  # the line: 64 MiB; 60,000 accepted need ~75 MiB
    before = memory_group.oom_kills
    ports = [_free_port() for _ in range(3)]
    script = f'echo $$ > {memory_group.path}/cgroup.procs && exec "$@"'
    listen = [f"--listen=127.0.0.1:{p}" for p in ports]
    args = ["serve", *listen, "--shards", "3", "--duration", "90", "--json-lines"]
    server = subprocess.Popen(
        ["sh", "-c", script, "sh", *TCPCEILING, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline()  # listening
        connect = [f"--connect=127.0.0.1:{p}" for p in ports]
        # established counts handshakes in full accept queues too (check none)
        _code, r = probe_json(*connect, "--target", "60000", "--connect-timeout", "1")
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=60)
    final = json.loads(out.splitlines()[-1])  # the last line: {"accepted", "final", "guard"}
    assert final["final"] and memory_group.path.name in final["guard"], final
    assert 0 < final["accepted"] < r["established"]
    assert memory_group.oom_kills == before
