"""The package as a user gets it: a wheel whose metadata carries the SPDX licence, and
`pipx install` of a copy of the clone by a user who is not root, whose `tcpceiling`
then runs. Downloads the dependencies from PyPI (the pip cache makes a second run
quick)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpceiling import __version__
from tests.conftest import IS_ROOT
from tests.test_deploy import UNIT, unit_caps

REPO = Path(__file__).parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the user's python, not root's (under /root)
NOBODY = 65534
pytestmark = pytest.mark.skipif(
    not IS_ROOT or not SYSTEM_PYTHON.exists(), reason="needs root (to become nobody) and python3"
)


def copy_of_the_clone(dest: Path) -> Path:
    """The clone's tracked and new files (no .git, caches or build output)."""
    junk = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", ".*cache")
    shutil.copytree(REPO, dest, ignore=junk)
    return dest


def as_nobody(cmd: list[str], home: Path, timeout: float = 600) -> str:
    env = {
        "HOME": str(home),
        "PATH": f"{home}/bin:{home}/tools/bin:/usr/bin:/bin",
        "PIPX_HOME": str(home / "pipx"),
        "PIPX_BIN_DIR": str(home / "bin"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A home of nobody's with a venv holding pipx, and a copy of the clone it can read."""
    with tempfile.TemporaryDirectory(prefix="tcx-pkg-") as tmp:
        home = Path(tmp)
        os.chmod(home, 0o755)
        copy_of_the_clone(home / "clone")
        os.chown(home, NOBODY, NOBODY)
        for path in home.rglob("*"):
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        as_nobody([str(SYSTEM_PYTHON), "-m", "venv", str(home / "tools")], home)
        as_nobody([str(home / "tools/bin/pip"), "install", "-q", "pipx"], home)
        yield home


def test_a_wheel_builds_with_an_spdx_licence(home: Path) -> None:
    as_nobody([str(home / "tools/bin/pip"), "wheel", "-q", "--no-deps", "-w",
               str(home / "dist"), str(home / "clone")], home)  # fmt: skip
    (wheel,) = (home / "dist").glob("tcpceiling-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"tcpceiling-{__version__}.dist-info/METADATA").decode()
        names = z.namelist()
    assert "License-Expression: MIT" in meta
    assert f"tcpceiling-{__version__}.dist-info/licenses/LICENSE" in names
    assert "tcpceiling/cli/probe.py" in names and "tcpceiling/py.typed" in names


@pytest.fixture(scope="module")
def installed(home: Path) -> str:
    """tcpceiling pipx-installed by nobody from the copy of the clone."""
    as_nobody([str(home / "tools/bin/pipx"), "install", str(home / "clone")], home)
    return str(home / "bin" / "tcpceiling")


def test_pipx_installs_the_clone_for_a_user_who_is_not_root(home: Path, installed: str) -> None:
    tool = installed
    assert as_nobody([tool, "--version"], home).strip().endswith(__version__)
    # a real run as that user: analyze reads this host without root
    out = as_nobody([tool, "analyze", "--role", "server", "--json"], home, timeout=60)
    assert '"kind": "analyze"' in out


#: A root process holding sockets: the exporter must see its fds to count them.
HOLDER = """
import socket, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(8)
held = [socket.create_connection(ls.getsockname()) for _ in range(5)]
print("ready", flush=True)
sys.stdin.readline()
"""


def exported_fds(tool: str, home: Path, caps: set[str], pid: int) -> float | None:
    """Run the exporter once as nobody with only these capabilities (ambient, as the
    unit's AmbientCapabilities gives them); the fds it saw of process pid."""
    out = home / "metrics.prom"
    out.unlink(missing_ok=True)
    cap_list = ",".join(f"+{c.lower()}" for c in sorted(caps)) or "-all"
    bounding = "-all," + cap_list if caps else "-all"
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           f"--inh-caps={cap_list}", f"--ambient-caps={cap_list}", f"--bounding-set={bounding}",
           tool, "exporter", "--textfile", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    m = re.search(rf'^tcpceiling_process_open_fds{{comm="\w+",pid="{pid}"}} (\S+)$',
                  out.read_text(), re.M)  # fmt: skip
    return float(m[1]) if m else None


def test_the_units_capabilities_are_enough_and_needed(home: Path, installed: str) -> None:
    """The exporter as a user who is not root, with exactly the unit's capabilities,
    counts a root process's fds (as /proc says); with none it cannot see them."""
    caps = unit_caps(UNIT.read_text())
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        fds = len(os.listdir(f"/proc/{holder.pid}/fd"))
        assert exported_fds(installed, home, caps, holder.pid) == fds
        assert exported_fds(installed, home, set(), holder.pid) is None
    finally:
        holder.communicate("\n", timeout=10)
