"""The library's pinned public API: every name in __all__ exists, and the README's
Python example runs (on a fixture tree, so it needs nothing of the machine)."""

from __future__ import annotations

import subprocess
import sys

import tcpceiling
from tests.conftest import FIXTURES


def test_every_public_name_resolves() -> None:
    for name in tcpceiling.__all__:
        assert getattr(tcpceiling, name) is not None, name
    assert callable(tcpceiling.run_probe) and callable(tcpceiling.analyze)


def test_importing_the_library_does_not_load_the_probe() -> None:
    code = "import sys, tcpceiling; print('tcpceiling.probe.coordinator' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_analyze_from_python_on_a_fixture() -> None:
    base = FIXTURES / "this-machine"
    roots = tcpceiling.Roots(procfs=base / "proc", sysfs=base / "sys")
    result = tcpceiling.analyze(tcpceiling.build_scenarios("server"), roots)
    server = result.scenarios[0]
    assert server.binding == "nofile" and server.ceiling is not None
    doc = tcpceiling.document("analyze", result, {"time": "t"})
    assert doc["schema_version"] == tcpceiling.SCHEMA_VERSION
    assert doc["tool"]["version"] == tcpceiling.__version__


def test_probe_config_validates_without_running() -> None:
    cfg = tcpceiling.ProbeConfig(target=10)
    assert cfg.target == 10 and callable(tcpceiling.run_probe)
