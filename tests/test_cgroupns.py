"""A reader in a cgroup namespace of its own (a container's, the DaemonSet's on cgroup
v2) is given other processes' cgroups relative to its namespace's root
(`/../other`, cgroup_namespaces(7)). With the host's hierarchy mounted, their limits
are still found: a process in a sibling cgroup with a 64 MiB limit, analysed with
`--pid` from inside `unshare --cgroup`. The path arithmetic is table-tested."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpceiling.host.cgroups import strip_suffix
from tcpceiling.host.roots import Roots
from tcpceiling.tour.cgroup import LIMIT_FILE, mount
from tests.conftest import IS_ROOT, constraint

LIMIT = 64 * 2**20


@pytest.mark.parametrize(
    ("here", "own", "root"),
    [
        ("/kubepods/pod1/ctr", "/", "/kubepods/pod1/ctr"),  # unshared where it sits
        ("/kubepods/pod1/ctr", "/ctr", "/kubepods/pod1"),  # moved below its root since
        ("/ctr", "/ctr", "/"),
        ("/kubepods/pod1/ctr", "/other", None),  # not our tail: no answer
    ],
)
def test_strip_suffix(here: str, own: str, root: str | None) -> None:
    assert strip_suffix(here, own) == root


@pytest.fixture
def siblings() -> Iterator[tuple[Path, Path]]:
    """Two sibling memory cgroups of this test's: `reader` and `target`, a process in
    target with a 64 MiB limit; (reader, target)."""
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    found = mount(Roots(), "memory")
    if found is None:
        pytest.skip("no memory cgroup controller")
    base, version = found
    tag = uuid.uuid4().hex[:6]
    made = [base / f"tcx-ns-{tag}-reader", base / f"tcx-ns-{tag}-target"]
    for d in made:
        d.mkdir()
    try:
        (made[1] / LIMIT_FILE[("memory", version)]).write_text(str(LIMIT))
        yield made[0], made[1]
    finally:
        for d in made:
            for _ in range(50):  # the processes' exits are asynchronous
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def test_a_sibling_containers_limit_is_found_from_a_private_cgroup_namespace(
    siblings: tuple[Path, Path],
) -> None:
    reader, target = siblings
    sleeper = subprocess.Popen(["sh", "-c", f"echo $$ > {target}/cgroup.procs; exec sleep 60"])
    try:
        for _ in range(100):
            if str(sleeper.pid) in (target / "cgroup.procs").read_text().split():
                break
            time.sleep(0.02)
        inner = f"grep -E '^[0-9]+:(memory)?:' /proc/{sleeper.pid}/cgroup >&2; exec " + " ".join(
            [sys.executable, "-m", "tcpceiling", "analyze", "--pid", str(sleeper.pid), "--json"]
        )
        join_then_unshare = 'echo $$ > "$1/cgroup.procs"; exec unshare --cgroup sh -c "$2"'
        done = subprocess.run(["sh", "-c", join_then_unshare, "sh", str(reader), inner],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f":/../{target.name}" in done.stderr  # what the namespace shows: relative
        scenario = json.loads(done.stdout)["scenarios"][0]
        assert constraint(scenario, "cgroup_memory")["capacity"] == LIMIT
    finally:
        sleeper.kill()
        sleeper.wait(10)
