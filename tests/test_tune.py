"""tcpceiling tune: the plan against the model (analyze --set), the files it writes
and puts back byte for byte, the memory it cannot conjure, and --verify in a
namespace."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.tune.ports import _ranges
from tcpceiling.tune.raisers import nice
from tests.conftest import FIXTURES, constraint, needs_root, netns_sysctl, run_cli

TREES = ("this-machine", "container-v2", "stock-distro")


def tune(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli("tune", *args, "--json")
    assert out, err
    return code, json.loads(out)


def analyze_with(doc: dict[str, Any], *args: str) -> dict[str, Any]:
    """The analyze command the plan prints (its scenario and every change as --set),
    run as printed, with `args` (the roots of a fixture tree, source IPs) added."""
    printed = shlex.split(doc["check_command"])
    assert printed[:2] == ["tcpceiling", "analyze"]
    code, out, err = run_cli(*printed[1:], *args, "--json")
    assert code == 0, err
    return dict(json.loads(out)["scenarios"][0])


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(0, 0), (999, 999), (1000, 1000), (1001, 1010), (1_100_011, 1_110_000), (19_992, 20_000)],
)
def test_nice_rounds_up_to_three_significant_digits(value: int, rounded: int) -> None:
    assert nice(value) == rounded


def test_reserved_port_lists_in_the_kernels_syntax() -> None:
    assert _ranges([80, 8080, 8081, 8082, 9000]) == "80,8080-8082,9000"


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize(
    ("role", "extra"),
    [
        ("server", ()),
        ("client", ("--connect", "10.0.0.1:443")),
        ("server", ("--io-model", "threads")),
    ],
)  # fmt: skip
def test_the_plan_holds_in_the_model(
    tree: str, role: str, extra: tuple[str, ...], tmp_path: Path
) -> None:
    """On each fixture machine: analyze --set with the plan's values reports a ceiling
    of at least the target for every limit the plan changes."""
    base = FIXTURES / tree
    where = ("--procfs", str(base / "proc"), "--sysfs", str(base / "sys"))
    target = 200_000 if "threads" in extra else 1_000_000
    code, doc = tune(
        "--role", role, *extra, *where, "--target", str(target), "--root", str(tmp_path)
    )
    after = analyze_with(doc, *where)
    changed = {c["limit"] for c in doc["plan"]["changes"]}
    assert changed, doc["plan"]["rows"]
    sources = next((o for o in doc["plan"]["options"] if o["kind"] == "sources"), None)
    if sources and constraint(after, "ports")["ceiling"] < target:
        # the widest range is not enough for one source: add the sources it names
        ips = [w for i in range(sources["count"]) for w in ("--source-ip", f"198.18.0.{i + 1}")]
        after = analyze_with(doc, *where, *ips)
    for limit in changed - {"backlog"}:
        got = constraint(after, limit)["ceiling"]
        assert got is None or got >= target, (tree, limit, got)
    options = {o["limit"] for o in doc["plan"]["options"]}
    if code == 0:  # reachable: every total limit is at the target, or has an option
        short = {
            c["id"]
            for c in after["constraints"]
            if c["kind"] == "total" and c["ceiling"] is not None and c["ceiling"] < target
        }
        assert short <= options, short
    else:
        assert doc["plan"]["requirements"] and doc["files"] == []


def test_server_million_here_names_nofile_epoll_and_memory(tmp_path: Path) -> None:
    """This machine: RLIMIT_NOFILE 20000 binds; the plan raises nofile (and fs.nr_open
    past 1,048,576) or shards, leaves epoll watches (5.5 M here) and says what memory
    the connections take, as analyze computes it."""
    code, doc = tune(
        "--role", "server", "--target", "1000000", "--service", "app", "--root", str(tmp_path)
    )
    plan = doc["plan"]
    rows = {r["limit"]: r for r in plan["rows"]}
    assert code == 0 and {"nofile", "epoll_watches", "memory"} <= set(rows)
    keys = {c["key"]: c["value"] for c in plan["changes"]}
    assert int(keys["nofile"].split(":")[0]) >= 1_100_000
    shards = next(o for o in plan["options"] if o["kind"] == "processes")
    assert shards["count"] == -(-1_000_000 // (20_000 - 8))  # the fds the process holds
    code, out, _ = run_cli("analyze", "--role", "server", "--json")
    memory = constraint(json.loads(out)["scenarios"][0], "memory")
    per = memory["per_connection"]
    assert abs(plan["memory_needed"] - per * plan["goal"]) < 0.02 * plan["memory_needed"]
    assert (
        rows["memory"]["after"] >= plan["goal"] and rows["epoll_watches"]["after"] >= plan["goal"]
    )
    unit = [f for f in doc["files"] if "app.service.d" in f["path"]]
    assert unit and "LimitNOFILE=" in unit[0]["content"]
    assert "no pod field sets it" in doc["kubernetes"]  # nofile is the runtime's, not the pod's


def test_a_threaded_service_gets_tasks_max(tmp_path: Path) -> None:
    code, doc = tune(
        "--role", "server", "--io-model", "threads", "--target", "50000", "--service", "app",
        "--root", str(tmp_path),
    )  # fmt: skip
    unit = next(f for f in doc["files"] if "app.service.d" in f["path"])["content"]
    tasks = int(unit.split("TasksMax=")[1].split()[0])
    assert code == 0 and tasks >= doc["plan"]["goal"]


def test_a_target_past_memory_is_answered_with_the_memory_it_needs(tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    code, doc = tune(
        "--role", "server", "--target", "100000000", "--apply", "--root", str(tmp_path)
    )
    assert code == 1 and doc["files"] == [] and doc["applied"] == []
    need = next(q for q in doc["plan"]["requirements"] if q["limit"] == "memory")
    assert need["short_bytes"] > 100 * 2**30 and "GiB" in need["text"]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def tree_bytes(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root: its mode and, for files, its bytes."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
    return out


def test_apply_then_restore_leaves_the_root_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.d/99-site.conf").write_text("vm.swappiness = 10\n")
    limits = root / "etc/security/limits.d/90-tcpceiling.conf"
    limits.parent.mkdir(parents=True)
    limits.write_text("# limits.conf(5), written by tcpceiling tune (by hand, earlier)\n")
    limits.chmod(0o640)
    (root / "etc/systemd/system").mkdir(parents=True)
    before = tree_bytes(root)
    args = ("--role", "server", "--target", "1000000", "--service", "app", "--root", str(root))
    code, doc = tune(*args, "--apply")
    assert code == 0 and len(doc["applied"]) == 3 and doc["loaded"] == []  # not the live root
    written = root / "etc/systemd/system/app.service.d/90-tcpceiling.conf"
    assert "LimitNOFILE=" in written.read_text() and tree_bytes(root) != before
    assert "fs.nr_open" in (root / "etc/sysctl.d/90-tcpceiling.conf").read_text()
    applied = tree_bytes(root)
    code, _out, err = run_cli("tune", *args, "--apply")
    assert code == 2 and "run --restore first" in err  # one apply at a time
    assert tree_bytes(root) == applied
    code, _out, err = run_cli("tune", "--restore", "--root", str(root))
    assert code == 0, err
    assert tree_bytes(root) == before


def test_apply_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "etc/sysctl.d/90-tcpceiling.conf"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("net.core.somaxconn = 8192\n")
    before = tree_bytes(tmp_path)
    code, _out, err = run_cli(
        "tune", "--role", "server", "--target", "1000000", "--apply", "--root", str(tmp_path)
    )
    assert code == 2 and "not written by tcpceiling" in err and len(err.strip().splitlines()) == 1
    assert tree_bytes(tmp_path) == before


def test_restore_refuses_a_file_changed_since(tmp_path: Path) -> None:
    args = ("--role", "server", "--target", "1000000", "--root", str(tmp_path))
    assert tune(*args, "--apply")[0] == 0
    conf = tmp_path / "etc/sysctl.d/90-tcpceiling.conf"
    conf.write_text(conf.read_text() + "vm.swappiness = 1\n")
    code, _out, err = run_cli("tune", "--restore", "--root", str(tmp_path))
    assert code == 2 and "changed since --apply" in err
    assert conf.read_text().endswith("vm.swappiness = 1\n")  # left as the admin made it


@needs_root
def test_client_in_a_namespace_widens_the_range_or_asks_for_sources(
    netns: str, tmp_path: Path
) -> None:
    """100 ports toward one destination: 1,000 connections need the range widened
    (1,100 usable with headroom) or 10 source IPs, or 10 destination ports; --verify
    holds 1,000 in a private namespace with the widened range."""
    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60099")
    code, doc = tune(
        "--role", "client", "--connect", "127.0.0.1:7000", "--netns", netns,
        "--target", "1000", "--verify", "--root", str(tmp_path),
    )  # fmt: skip
    plan = doc["plan"]
    assert code == 0 and plan["rows"][0]["limit"] == "ports" and plan["rows"][0]["before"] == 100
    low, high = map(int, next(c["value"] for c in plan["changes"]).split())
    assert high - low + 1 >= 1100
    options = {o["kind"]: o for o in plan["options"]}
    assert options["sources"]["count"] == 10 and options["sources"]["with_headroom"] == 11
    assert options["destination_ports"]["count"] == 10
    assert len(options["sources"]["commands"]) == 10  # 127.0.0.2-11 beside 127.0.0.1
    verified = doc["verified"]
    assert verified["reached"] and verified["established"] == 1000 and verified["stop"] == "target"
    assert ["net.ipv4.ip_local_port_range", f"{low} {high}"] in verified["sysctls"]
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize(
    "args",
    [
        ("--role", "both", "--target", "1000"),
        ("--role", "server"),
        ("--role", "server", "--target", "max"),
        ("--role", "server", "--target", "-3"),
        ("--role", "server", "--target", "10", "--headroom", "-1"),
        ("--restore", "--root", "/nonexistent-tcpceiling-root"),
        ("--role", "server", "--target", "10", "--service", "../../etc/passwd"),
        ("--role", "server", "--target", "10", "--root", "/nonexistent-tcpceiling-root"),
    ],
)
def test_bad_tune_input_is_one_line(args: tuple[str, ...]) -> None:
    code, _out, err = run_cli("tune", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
