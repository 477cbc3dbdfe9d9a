"""tcpceiling tour: the walk, run once for real (about a minute), every step with a
prediction and a proof; the ports, nofile and pids proofs exact, memory within 10 %,
nothing left behind. The numbers are checked against what is
known without the tool: 10 ports per tuple, a server alone in a pids cgroup of 64
holds 63 threads, 10 ports per 60 s. The summary table is table-tested."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.host.roots import Roots
from tcpceiling.tour.model import Measure, Step, Trial
from tcpceiling.tour.run import sweep_stale
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
    found |= {f"cgroup {p}" for p in CGROUPS.glob("*/tcpceiling-*") if p.is_dir()}
    ps = subprocess.run(["pgrep", "-f", "tcpceiling tour"], capture_output=True, text=True)
    return found | {f"pid {p}" for p in ps.stdout.split()}


def dead_pid() -> int:
    """A pid that no longer exists: a process of ours that has ended."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def plant_leftovers(pid: int) -> set[str]:
    """What a tour killed with SIGKILL leaves, as its names say: its namespace and its
    cgroups (one of them with a task still in it), pid the dead tour's."""
    name = f"tcpceiling-{pid}-tour"
    subprocess.run(["ip", "netns", "add", name], check=True)
    for controller in ("memory", "pids"):
        (CGROUPS / controller / f"{name}-{controller}").mkdir()
    sleeper = subprocess.Popen(["sleep", "300"])
    (CGROUPS / "pids" / f"{name}-pids" / "cgroup.procs").write_text(str(sleeper.pid))
    return {x for x in leftovers() if f"tcpceiling-{pid}-" in x}


@pytest.fixture(scope="module")
def toured() -> Iterator[Toured]:
    if not IS_ROOT:
        pytest.skip("needs root: namespaces and cgroups")
    planted = plant_leftovers(dead_pid())
    before = leftovers()
    t0 = time.monotonic()
    done = subprocess.run([*TCPCEILING, "tour", "--json", "--report", str(REPORT)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    wall = time.monotonic() - t0
    assert done.stdout, done.stderr
    try:
        left = leftovers()
        yield done.returncode, json.loads(done.stdout), wall, (left - before) | (left & planted)
    finally:
        REPORT.unlink(missing_ok=True)
        sweep_stale(Roots())  # the planted ones, were the tour's own sweep to fail


def steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def test_the_proxy_step_answers_the_articles_open_question(toured: Toured) -> None:
    """nginx toward one upstream port in the 10-port range serves 10; with proxy_bind
    over two source addresses, 20: a proxy can reach one upstream port from several
    sources, each with its own ports. Predicted by analyze, proven by the probe."""
    one, two = steps(toured[1])["proxy"]["trials"]
    assert (one["predicted"]["value"], one["proven"]["value"]) == (10, 10)
    assert (two["predicted"]["value"], two["proven"]["value"]) == (20, 20)
    assert one["predicted"]["limit"] == two["proven"]["limit"] == "upstream_ports"


def test_every_step_is_predicted_and_proven(
    toured: Toured,
) -> None:
    code, doc, _wall, left = toured
    assert code == 0 and doc["kind"] == "tour"
    assert list(steps(doc)) == ["ports", "fds", "threads", "memory", "cpu", "proxy", "rate"]
    for s in doc["steps"]:
        for t in s["trials"]:
            assert t["predicted"]["value"] is not None and t["proven"]["value"] is not None, t
    # its wall time (64 s here, under the 120 s it must stay in) is measured and
    # reported (docs/tour.md), not asserted: a test holds no timing assertion
    assert left == set(), left


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


def started(cmd: list[str], ready: Path) -> subprocess.Popen[str]:
    """The tour started; returned once `ready` (a path with {pid}) exists."""
    tour = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path = Path(str(ready).format(pid=tour.pid))
    for _ in range(1800):  # 90 s
        if path.exists() or tour.poll() is not None:
            break
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"
    return tour


def gone(before: set[str]) -> set[str]:
    """What is left that was not there before, once the tour's children have ended."""
    for _ in range(300):  # 30 s: a child ends its probe's clean-up
        left = leftovers() - before
        if not left:
            break
        time.sleep(0.1)
    return left


@pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces and cgroups")
def test_sigterm_mid_tour_removes_everything_it_made() -> None:
    """SIGTERM in the memory step (a probe in a child, in a cgroup of the tour's own,
    the rate's churn running in another child): exit 130, one line, nothing left."""
    before = leftovers()
    tour = started([*TCPCEILING, "tour"], CGROUPS / "memory" / "tcpceiling-{pid}-tour-memory")
    tour.send_signal(signal.SIGTERM)
    _out, err = tour.communicate(timeout=60)
    assert tour.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "tcpceiling: interrupted"
    assert gone(before) == set()


@pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces and cgroups")
def test_what_a_sigkilled_tour_left_is_removed_by_the_next() -> None:
    """SIGKILL while the thread server is in its pids cgroup: the tour's namespace and
    cgroup stay (the server dies with the tour); the next tour's sweep removes them."""
    before = leftovers()
    tour = started([*TCPCEILING, "tour"], CGROUPS / "pids" / "tcpceiling-{pid}-tour-pids")
    tour.kill()
    tour.communicate(timeout=10)
    time.sleep(1)  # the children's PR_SET_PDEATHSIG clean-up
    left = leftovers() - before
    assert f"cgroup {CGROUPS}/pids/tcpceiling-{tour.pid}-tour-pids" in left
    swept = sweep_stale(Roots())
    assert f"tcpceiling-{tour.pid}-tour-pids" in swept
    assert gone(before) == set()


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
