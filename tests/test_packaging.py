"""The package as a user gets it: a wheel whose metadata carries the SPDX licence, and
`pipx install` of a copy of the clone by a user who is not root, whose `tcpceiling`
then runs. Downloads the dependencies from PyPI (the pip cache makes a second run
quick)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpceiling import __version__
from tests.conftest import IS_ROOT

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


def test_pipx_installs_the_clone_for_a_user_who_is_not_root(home: Path) -> None:
    as_nobody([str(home / "tools/bin/pipx"), "install", str(home / "clone")], home)
    tool = str(home / "bin" / "tcpceiling")
    assert as_nobody([tool, "--version"], home).strip().endswith(__version__)
    # a real run as that user: analyze reads this host without root
    out = as_nobody([tool, "analyze", "--role", "server", "--json"], home, timeout=60)
    assert '"kind": "analyze"' in out
