"""The names of what tcpceiling makes carry the pid that made it: the parser that
reads it back (table-tested), and the check against a procfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpceiling.host.owned import own_name, owner, owner_gone


@pytest.mark.parametrize(
    ("name", "pid"),
    [
        ("tcpceiling-1234", 1234),
        ("tcpceiling-1234-tour", 1234),
        ("tcpceiling-1234-tour-memory", 1234),
        ("tcpceiling-tour-1234", None),  # not a name of ours: never removed
        ("tcpceiling-", None),
        ("other-1234", None),
        ("tcpceiling1234", None),
    ],
)
def test_owner(name: str, pid: int | None) -> None:
    assert owner(name) == pid


def test_owner_gone_against_a_procfs(tmp_path: Path) -> None:
    (tmp_path / "77").mkdir()
    assert not owner_gone("tcpceiling-77-tour", tmp_path)
    assert owner_gone("tcpceiling-78-tour", tmp_path)
    assert not owner_gone("someone-else-78", tmp_path)
    assert owner(own_name("tour", "pids")) is not None
