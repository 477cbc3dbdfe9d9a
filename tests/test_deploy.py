"""The shipped deployments: the systemd unit passes `systemd-analyze verify` (with no
warning) and scores at most 3.0 in `systemd-analyze security`; the Kubernetes
manifests validate strictly against the Kubernetes schemas; both grant the same
capabilities and serve the exporter's default port."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "tcpceiling-exporter.service"
MANIFESTS = DEPLOY / "kubernetes" / "tcpceiling-exporter.yaml"
KUBERNETES = "1.30.0"  # the oldest release still supported when this was written
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (systemd)"
)


def unit_caps(text: str) -> set[str]:
    m = re.search(r"^AmbientCapabilities=(.*)$", text, re.M)
    assert m is not None
    return {c.removeprefix("CAP_") for c in m[1].split()}


def image_root(tmp: Path, unit_text: str) -> Path:
    """A root with the system's own units (for the default dependencies), the unit
    under /etc/systemd/system and an executable where its ExecStart points."""
    shutil.copytree("/usr/lib/systemd/system", tmp / "usr/lib/systemd/system", symlinks=True)
    (tmp / "etc/systemd/system").mkdir(parents=True)
    (tmp / "etc/systemd/system" / UNIT.name).write_text(unit_text)
    m = re.search(r"^ExecStart=(\S+)", unit_text, re.M)
    assert m is not None
    exe = tmp / m[1].lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return tmp


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args, f"--root={root}", UNIT.name],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@needs_systemd
def test_the_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    done = analyze(image_root(tmp_path, UNIT.read_text()), "verify")
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr


@needs_systemd
def test_verify_would_see_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    broken = UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege=")
    done = analyze(image_root(tmp_path, broken), "verify")
    assert "Unknown key 'NoNewPrivilege'" in done.stderr


@needs_systemd
def test_the_unit_is_hardened(tmp_path: Path) -> None:
    done = analyze(image_root(tmp_path, UNIT.read_text()), "security", "--offline=yes")
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert m is not None, done.stdout + done.stderr
    assert float(m[1]) <= 3.0, done.stdout


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


def test_the_manifests_validate_against_the_kubernetes_schemas() -> None:
    docs = manifests()
    assert [d["kind"] for d in docs] == ["ServiceAccount", "DaemonSet", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_schema_check_would_see_a_mistake() -> None:
    ds = manifests()[1]
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES, strict=True)


def test_both_deployments_grant_the_same_capabilities_and_port() -> None:
    pod = manifests()[1]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert pod["hostNetwork"] and pod["hostPID"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"]
    assert set(sc["capabilities"]["add"]) == unit_caps(UNIT.read_text())
    assert container["ports"][0]["containerPort"] == 9877
    assert ":9877" in container["args"] and "--listen :9877" in UNIT.read_text()
    assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"
