"""Shared test helpers: root/netns skips, throwaway network namespaces, the CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import settings

from tcpceiling.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
# Property tests check what the parsers return, never how fast: no deadline (a
# timing assertion in a test fails on a loaded machine, not on a wrong answer).
settings.register_profile("tcpceiling", deadline=None)
settings.load_profile("tcpceiling")
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: creates network namespaces")


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the tcpceiling CLI in-process; returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args: str) -> Any:
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def constraint(scenario: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in scenario["constraints"] if c["id"] == cid)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh named network namespace with loopback up, deleted afterwards."""
    if not IS_ROOT:
        pytest.skip("needs root: creates network namespaces")
    name = f"tcx-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


PROBE = [sys.executable, "-m", "tcpceiling", "probe"]
#: --engine's default for the commands a test starts (click reads it from here)
ENGINE_ENV = "TCPCEILING_ENGINE"


@pytest.fixture(params=["uring", "epoll"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the module's probes and rates on each engine in turn: the tests that use
    it (pytestmark) pass with either, and probe() checks that the asked one ran."""
    monkeypatch.setenv(ENGINE_ENV, request.param)
    return str(request.param)


def paced(args: tuple[str, ...] | list[str]) -> bool:
    """A run whose connections go one at a time, on epoll whatever the engine: toward
    a real server (--connect HOST:PORT or --connect=HOST:PORT), or at a --rate that
    is not max."""
    if any(a.split("=")[0] == "--connect" for a in args):
        return True
    return "--rate" in args and args[list(args).index("--rate") + 1] != "max"


def assert_engine_ran(r: dict[str, Any], toward_sink: bool = True) -> None:
    """With an engine asked for through the environment, the run says it ran on it
    (toward a real server the paced opening is epoll's whatever is asked)."""
    asked = os.environ.get(ENGINE_ENV)
    if asked and toward_sink and "engine" in r:
        assert r["engine"] == asked, (r["engine"], r.get("notes"))


def probe(*args: str, timeout: float = 300) -> tuple[int, dict[str, Any]]:
    """Run `tcpceiling probe ARGS --json` as a subprocess: (exit code, result)."""
    proc = subprocess.run(
        [*PROBE, *args, "--json"], capture_output=True, text=True, timeout=timeout
    )
    assert proc.stdout, proc.stderr
    r = json.loads(proc.stdout)
    assert_engine_ran(r, not paced(args))
    return proc.returncode, r


def cgroup_controller(name: str) -> tuple[Path, int] | None:
    """The mount of cgroup controller `name` and its version (v1 first, as here)."""
    v1 = Path("/sys/fs/cgroup") / name
    if (v1 / "cgroup.procs").exists():
        return v1, 1
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.controllers"
    if controllers.exists() and name in controllers.read_text().split():
        return v2, 2
    return None


def remove_cgroup(group: Path) -> None:
    """rmdir a cgroup of ours once its last task is gone (exits are asynchronous)."""
    for _ in range(100):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def netns_sysctl(name: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"{key}={value}"], check=True)
