"""snapshot writes only what is its own; unreadable parts of a host are exit 3."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, IS_ROOT

CLI = [sys.executable, "-m", "tcpceiling"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_snapshot_is_read_back_and_replaced_only_with_force(tmp_path: Path) -> None:
    out = tmp_path / "snap"
    assert cli("snapshot", str(out)).returncode == 0
    assert (out / ".tcpceiling-snapshot").is_file() and (out / "sockets.json").is_file()
    a = cli("analyze", "--procfs", f"{out}/proc", "--sysfs", f"{out}/sys", "--json")
    assert a.returncode == 0, a.stderr
    assert json.loads(a.stdout)["host"]["kernel"]  # the snapshot keeps the kernel release
    again = cli("snapshot", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    (out / "notes.txt").write_text("mine\n")
    assert cli("snapshot", str(out), "--force").returncode == 0
    assert not (out / "notes.txt").exists()  # replaced: it was a snapshot of ours
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]  # no staging left


def test_snapshot_into_an_empty_directory(tmp_path: Path) -> None:
    assert cli("snapshot", str(tmp_path)).returncode == 0
    assert (tmp_path / "proc" / "meminfo").is_file()


def test_snapshot_tar_is_one_new_file(tmp_path: Path) -> None:
    archive = tmp_path / "host.tar.gz"
    assert cli("snapshot", "--tar", str(archive)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host.tar.gz"]
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    root = tmp_path / "x" / "host"
    a = cli("analyze", "--procfs", f"{root}/proc", "--sysfs", f"{root}/sys", "--json")
    assert a.returncode == 0, a.stderr


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_unreadable_fd_directory_is_one_line_exit_3(tmp_path: Path) -> None:
    """Another user's /proc/PID/fd: the same PermissionError, made by a root without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH reading a fixture whose fd/ is mode 000."""
    tree = tmp_path / "t"
    shutil.copytree(FIXTURES / "this-machine", tree)
    (tree / "proc" / "self" / "fd").chmod(0)
    drop = "-dac_override,-dac_read_search"
    proc = subprocess.run(
        ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *CLI, "analyze",
         "--procfs", f"{tree}/proc", "--sysfs", f"{tree}/sys"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (tree / "proc" / "self" / "fd").chmod(0o755)
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "permission denied" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(not IS_ROOT, reason="needs root: the probe's own namespace")
def test_probe_adds_a_missing_source_to_its_own_namespace_and_says_so() -> None:
    proc = subprocess.run(
        [*CLI, "probe", "--source-ip", "10.255.0.1", "--target", "20", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["established"] == 20 and r["stop"]["reason"] == "target"
    assert any("10.255.0.1" in n and "loopback" in n for n in r["notes"])
    host = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.255.0.1" not in host  # the host's own addresses were not touched
