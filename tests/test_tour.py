"""tcpceiling tour: the walk, run once for real (about a minute), every step with a
prediction and a proof; the ports, nofile and pids proofs exact, memory within 10 %,
under 120 s here, nothing left behind. The numbers are checked against what is
known without the tool: 10 ports per tuple, a server alone in a pids cgroup of 64
holds 63 threads, 10 ports per 60 s. The summary table is table-tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.tour.model import Measure, Step, Trial
from tcpceiling.tour.table import HostFacts, resources
from tests.conftest import IS_ROOT, run_cli
from tests.test_report import chromium, needs_chromium
from tests.test_trace import AS_NOBODY

TCPCEILING = [sys.executable, "-m", "tcpceiling"]
Toured = tuple[int, dict[str, Any], float, set[str]]
REPORT = Path(tempfile.gettempdir()) / f"tcx-tour-{os.getpid()}.html"
CGROUPS = Path("/sys/fs/cgroup")


def leftovers() -> set[str]:
    """Namespaces, cgroups and processes of tcpceiling's that exist now."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found = {f"netns {ln.split()[0]}" for ln in ns.splitlines() if "tcpceiling" in ln}
    found |= {f"cgroup {p}" for p in CGROUPS.glob("**/tcpceiling-tour-*") if p.is_dir()}
    ps = subprocess.run(["pgrep", "-f", "tcpceiling tour"], capture_output=True, text=True)
    return found | {f"pid {p}" for p in ps.stdout.split()}


@pytest.fixture(scope="module")
def toured() -> Iterator[Toured]:
    if not IS_ROOT:
        pytest.skip("needs root: namespaces and cgroups")
    before = leftovers()
    t0 = time.monotonic()
    done = subprocess.run([*TCPCEILING, "tour", "--json", "--report", str(REPORT)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    wall = time.monotonic() - t0
    assert done.stdout, done.stderr
    try:
        yield done.returncode, json.loads(done.stdout), wall, leftovers() - before
    finally:
        REPORT.unlink(missing_ok=True)


def steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def test_every_step_is_predicted_and_proven(
    toured: Toured,
) -> None:
    code, doc, wall, left = toured
    assert code == 0 and doc["kind"] == "tour"
    assert list(steps(doc)) == ["ports", "fds", "threads", "memory", "cpu", "rate"]
    for s in doc["steps"]:
        for t in s["trials"]:
            assert t["predicted"]["value"] is not None and t["proven"]["value"] is not None, t
    assert wall < 120 and left == set(), (wall, left)


def test_ports_nofile_and_pids_are_exact(
    toured: Toured,
) -> None:
    by = steps(toured[1])
    counts = [(t["predicted"]["value"], t["proven"]["value"]) for t in by["ports"]["trials"]]
    assert counts == [(10, 10), (20, 20), (20, 20), (40, 40)]  # 10 per (src, dst, dport)
    assert all("EADDRNOTAVAIL" in t["observed"] for t in by["ports"]["trials"])
    (nofile,) = by["fds"]["trials"]
    assert nofile["error"] == 0 and 80 < nofile["proven"]["value"] < 100
    assert "EMFILE" in nofile["observed"]
    pids = by["threads"]["trials"][1]
    assert pids["predicted"]["value"] == pids["proven"]["value"] == 63  # 64 less the server
    assert "EAGAIN" in pids["observed"]


def test_memory_within_10_percent_and_no_oom_kill(
    toured: Toured,
) -> None:
    (mem,) = steps(toured[1])["memory"]["trials"]
    assert mem["proven"]["limit"] == "guard:memory" and mem["predicted"]["limit"] == "cgroup_memory"
    assert abs(mem["error"]) <= 0.10 and mem["observed"].endswith("OOM kills in it: 0")


def test_capacity_against_rate(toured: Toured) -> None:
    held, rate = steps(toured[1])["rate"]["trials"]
    assert held["proven"]["value"] == 10
    assert rate["predicted"]["value"] == pytest.approx(10 / 60, abs=0.001)
    assert rate["proven"]["value"] == pytest.approx(10 / 60, rel=0.10)


@needs_chromium
def test_the_report_leads_with_prediction_and_proof(toured: Toured, tmp_path: Path) -> None:
    dom = chromium(REPORT, tmp_path / "tour.png")
    assert dom.order[0][0] == "h2" and dom.order[1] == ("div", "versus"), dom.order
    assert [f["plot"] for f in dom.figures] == ["tour"] and dom.figures[0]["svg"]


def test_bad_report_path_leaves_nothing(tmp_path: Path) -> None:
    code, _out, err = run_cli("tour", "--report", str(tmp_path / "no" / "t.html"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not IS_ROOT, reason="needs root to become nobody")
def test_without_root_one_line_exit_3() -> None:
    done = subprocess.run([sys.executable, "-c", AS_NOBODY, "tour"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 3 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def measure(value: float, unit: str = "connections") -> Measure:
    return Measure(value, unit, None, "")


def step(sid: Any, *trials: Trial, reads: tuple[tuple[str, str], ...] = ()) -> Step:
    return Step(sid, "", "", trials, reads)


def test_agreement_and_the_summary_table() -> None:
    exact = Trial("a", measure(10), measure(10), "connect(): EADDRNOTAVAIL")
    near = Trial("m", measure(1000), measure(950), "guard:memory", tolerance=0.10)
    far = Trial("m", measure(1000), measure(800), "guard:memory", tolerance=0.10)
    units = Trial("c", measure(5000), measure(11.2, "µs per message"), "latency grows")
    assert (exact.error, exact.agrees) == (0, True)
    assert (near.error, near.agrees) == (-0.05, True) and far.agrees is False
    assert units.error is None and units.agrees is None
    done = (
        step("ports", exact),
        step("fds", exact, reads=(("RLIMIT_NOFILE of this process", "1,024 / 4,096"),
                                   ("fs.file-max (every process)", "9,999"))),
        step("memory", near, reads=(("kernel memory per connection, both ends", "7.5 KiB"),)),
        step("cpu", units),
    )  # fmt: skip
    rows = resources(done, HostFacts((32768, 60999), 1000, 32768, 1 << 30, 2))
    by = {r.resource: r for r in rows}
    assert by["ephemeral ports"].capacity.startswith("28,232 per")
    assert by["ephemeral ports"].when_full == "connect(): EADDRNOTAVAIL"
    assert by["file descriptors"].capacity == "nofile 1,024 / 4,096 per process; fs.file-max 9,999"
    assert by["memory"].cost == "7.5 KiB of kernel memory"
    assert by["CPU"].cost == "11.2 µs per message"
    assert by["tasks (a thread per connection)"].when_full == "not observed"  # no threads step
