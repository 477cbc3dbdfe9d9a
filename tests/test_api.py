"""The library's pinned public API: every name in __all__ exists, and docs/python.md's
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
    code = "import sys, tcpceiling; print('tcpceiling.probe.run.coordinator' in sys.modules)"
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


#: The import name of each distribution the package declares.
IMPORT_NAMES = {
    "click": "click",
    "rich": "rich",
    "psutil": "psutil",
    "pyroute2": "pyroute2",
    "prometheus_client": "prometheus_client",
    "matplotlib": "matplotlib",
    "dask[distributed]": "distributed",
}


def test_declared_dependencies_are_imported() -> None:
    """Nothing is declared that the code does not import, and the reverse."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["distributed"]]
    names = {re.split(r"[<>=!~ ]", d)[0] for d in declared}
    assert names == set(IMPORT_NAMES), names
    source = "\n".join(p.read_text() for p in (root / "src" / "tcpceiling").rglob("*.py"))
    for name, module in IMPORT_NAMES.items():
        assert re.search(rf"^\s*(from|import) {module}\b", source, re.M), f"{name} is not imported"
