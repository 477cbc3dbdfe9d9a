"""Every command with bad input: one line on stderr, exit 2 (3 for a host that cannot
be read), no traceback, and nothing left behind: no namespace, no process, no file,
and a directory that was there before untouched. Plus property tests of the parsers
every option goes through (endpoints, CIDRs, byte sizes)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpceiling.analysis.model import (
    MAX_SOURCES,
    Endpoint,
    expand_sources,
    host_count,
    parse_endpoint,
)
from tcpceiling.errors import InputError
from tcpceiling.host.owned import owner_gone
from tcpceiling.results import SCHEMA_VERSION
from tcpceiling.units import UNITS, parse_bytes
from tests.conftest import IS_ROOT

CLI = [sys.executable, "-m", "tcpceiling"]


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port something else listens on (without SO_REUSEPORT)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "home").mkdir()
    (d / "home" / "keep.txt").write_text("not tcpceiling's\n")
    (d / "garbage.json").write_text("{not json")
    (d / "no-cost.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "kind": "probe"}))
    old = {"schema_version": SCHEMA_VERSION + 1, "kind": "probe", "per_connection": {}}
    (d / "future.json").write_text(json.dumps(old))
    (d / "exists.tar.gz").write_text("someone's archive\n")
    tool = {"name": "tcpceiling", "version": "0"}
    thin = {"schema_version": SCHEMA_VERSION, "tool": tool, "kind": "probe"}
    (d / "thin-probe.json").write_text(json.dumps(thin))
    return d


def our_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def dead_runs(names: set[str]) -> set[str]:
    """The namespaces of tcpceiling runs that no longer exist (a run SIGKILLed, before
    this test began): every run that makes a namespace removes these first."""
    return {n for n in names if owner_gone(n, Path("/proc"))}


def our_processes() -> set[int]:
    """Processes of this tool (the command line names tcpceiling), but this test's."""
    mine = {os.getpid()}
    out = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "tcpceiling" in cmd and "pytest" not in cmd and p.info["pid"] not in mine:
            out.add(p.info["pid"])
    return out


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# (id, argv with {port} {dir} placeholders, exit code, needs root)
CASES: list[tuple[str, list[str], int, bool]] = [
    ("connect-v6-no-brackets", ["probe", "--connect", "::1", "--target", "10"], 2, False),
    ("connect-v6-port-no-brackets", ["analyze", "--connect", "::1:8080"], 2, False),
    ("hold-infinite", ["probe", "--hold", "1e309", "--target", "10"], 2, False),
    ("max-duration-nan", ["probe", "--max-duration", "nan", "--target", "10"], 2, False),
    ("rate-duration-nan", ["rate", "--duration", "nan"], 2, False),
    ("report-no-tool", ["report", "{dir}/no-cost.json", "-o", "{dir}/r.html"], 2, False),
    ("report-thin", ["report", "{dir}/thin-probe.json", "-o", "{dir}/r.html"], 2, False),
    ("cidr-host-bits", ["analyze", "--source-ip", "1.2.3.0/8"], 2, False),
    ("cidr-huge", ["analyze", "--source-ip", "10.0.0.0/8"], 2, False),
    ("source-not-local", ["analyze", "--role", "client", "--source-ip", "10.255.0.1"], 2, False),
    ("source-garbage", ["analyze", "--source-ip", "abc"], 2, False),
    ("connect-port-0", ["analyze", "--connect", "127.0.0.1:0"], 2, False),
    ("connect-port-65536", ["analyze", "--connect", "127.0.0.1:65536"], 2, False),
    ("connect-unknown-host", ["analyze", "--connect", "nohost.invalid:80"], 2, False),
    ("processes-0", ["analyze", "--processes", "0"], 2, False),
    ("processes-negative", ["analyze", "--processes", "-3"], 2, False),
    ("buffered-negative", ["analyze", "--buffered-bytes", "-1"], 2, False),
    ("memory-floor-garbage", ["analyze", "--memory-floor", "lots"], 2, False),
    ("cpu-target-0", ["analyze", "--cpu-target", "0"], 2, False),
    ("cpu-target-2", ["analyze", "--cpu-target", "2"], 2, False),
    ("pid-absent", ["analyze", "--pid", "999999999"], 2, False),
    ("pid-garbage", ["analyze", "--pid", "../1"], 2, False),
    ("netns-absent", ["analyze", "--netns", "tcx-no-such-ns"], 2, True),
    ("procfs-unreadable", ["analyze", "--procfs", "{dir}/no-such-proc"], 3, False),
    ("cost-from-absent", ["analyze", "--cost-from", "{dir}/absent.json"], 2, False),
    ("cost-from-garbage", ["analyze", "--cost-from", "{dir}/garbage.json"], 2, False),
    ("cost-from-no-cost", ["analyze", "--cost-from", "{dir}/no-cost.json"], 2, False),
    ("cost-from-schema", ["analyze", "--cost-from", "{dir}/future.json"], 2, False),
    ("unknown-option", ["analyze", "--no-such-option"], 2, False),
    ("unknown-command", ["no-such-command"], 2, False),
    ("target-0", ["probe", "--target", "0"], 2, False),
    ("target-negative", ["probe", "--target", "-5"], 2, False),
    ("target-garbage", ["probe", "--target", "lots"], 2, False),
    ("rate-0", ["probe", "--rate", "0"], 2, False),
    ("workers-0", ["probe", "--workers", "0"], 2, False),
    ("worker-nofile-small", ["probe", "--worker-nofile", "3"], 2, False),
    ("memory-floor-negative", ["probe", "--memory-floor", "-1G"], 2, False),
    ("check-without-connect", ["probe", "--check", "http"], 2, False),
    ("check-every-0", ["probe", "--connect", "127.0.0.1:{port}", "--check-every", "0"], 2, False),
    (
        "check-every-postgres",  # a one-time handshake: nothing to repeat
        ["probe", "--connect", "127.0.0.1:{port}", "--check", "postgres", "--check-every", "1"],
        2,
        False,
    ),
    ("check-unknown", ["probe", "--connect", "127.0.0.1:{port}", "--check", "gopher"], 2, False),
    (
        "check-bad-regex",
        ["probe", "--connect", "127.0.0.1:{port}", "--check", "send:x,expect:("],
        2,
        False,
    ),
    (
        "rate-check-bad-path",
        ["rate", "--connect", "127.0.0.1:{port}", "--check", "websocket:x"],
        2,
        False,
    ),
    ("probe-connect-port-0", ["probe", "--connect", "127.0.0.1:0"], 2, False),
    ("probe-connect-unknown", ["probe", "--connect", "nohost.invalid:80"], 2, False),
    ("sysctl-bad-value", ["probe", "--sysctl", "net.ipv4.ip_local_port_range=abc"], 2, True),
    ("sysctl-unknown", ["probe", "--sysctl", "net.ipv4.no_such_knob=1"], 2, True),
    ("sysctl-not-per-netns", ["probe", "--sysctl", "kernel.pid_max=400"], 2, True),
    ("sysctl-no-value", ["probe", "--sysctl", "net.ipv4.tcp_tw_reuse"], 2, True),
    ("probe-source-not-local", ["probe", "--no-isolate", "--source-ip", "10.255.0.1"], 2, False),
    ("probe-netns-absent", ["probe", "--netns", "tcx-no-such-ns", "--target", "5"], 2, True),
    ("serve-port-in-use", ["serve", "--listen", "127.0.0.1:{port}", "--duration", "1"], 2, False),
    ("serve-port-0", ["serve", "--listen", "127.0.0.1:0", "--duration", "1"], 2, False),
    ("serve-not-local", ["serve", "--listen", "10.255.0.1:8080", "--duration", "1"], 2, False),
    ("serve-shards-0", ["serve", "--listen", "127.0.0.1:9", "--shards", "0"], 2, False),
    ("compare-io-0", ["compare-io", "--connections", "0"], 2, False),
    ("rate-0", ["rate", "--rate", "0"], 2, False),
    ("rate-garbage", ["rate", "--rate", "fast"], 2, False),
    ("rate-inf", ["rate", "--rate", "inf"], 2, False),
    ("rate-duration-0", ["rate", "--duration", "0"], 2, False),
    ("rate-workers-0", ["rate", "--workers", "0"], 2, False),
    ("rate-close-bogus", ["rate", "--close", "maybe"], 2, False),
    ("rate-engine-bogus", ["rate", "--engine", "kqueue"], 2, False),
    ("probe-engine-bogus", ["probe", "--engine", "kqueue", "--target", "5"], 2, False),
    ("rate-check-without-connect", ["rate", "--check", "http"], 2, False),
    ("rate-connect-port-0", ["rate", "--connect", "127.0.0.1:0"], 2, False),
    ("rate-connect-unknown", ["rate", "--connect", "nohost.invalid:80"], 2, False),
    ("rate-source-garbage", ["rate", "--source-ip", "999.1.1.1"], 2, False),
    (
        "rate-source-not-local",
        ["rate", "--connect", "127.0.0.1:9", "--source-ip", "10.255.0.1", "--duration", "1"],
        2,
        False,
    ),
    ("probe-settle-negative", ["probe", "--connect", "127.0.0.1:9", "--settle", "-1"], 2, False),
    ("rate-netns-absent", ["rate", "--netns", "tcx-no-such-ns", "--duration", "1"], 2, True),
    ("rate-sysctl-bad-value", ["rate", "--sysctl", "net.ipv4.tcp_tw_reuse=abc"], 2, True),
    ("rate-sysctl-unknown", ["rate", "--sysctl", "net.ipv4.nope=1"], 2, True),
    ("snapshot-not-ours", ["snapshot", "{dir}/home"], 2, False),
    ("snapshot-no-target", ["snapshot"], 2, False),
    ("snapshot-pid-absent", ["snapshot", "--pid", "999999999", "{dir}/new-snap"], 2, False),
    ("snapshot-tar-exists", ["snapshot", "--tar", "{dir}/exists.tar.gz"], 2, False),
    ("snapshot-parent-absent", ["snapshot", "{dir}/no/such/parent"], 2, False),
]


@pytest.mark.parametrize(
    ("argv", "code", "root"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(argv: list[str], code: int, root: bool, busy_port: int, files: Path) -> None:
    if root and not IS_ROOT:
        pytest.skip("needs root")
    args = [a.format(port=busy_port, dir=files) for a in argv]
    ns, procs, before = our_netns(), our_processes(), tree(files)
    dead = dead_runs(ns)
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("tcpceiling: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    after = our_netns()
    assert after <= ns  # nothing left behind
    assert ns - after <= dead  # and nothing removed but a dead run's leftovers
    assert our_processes() <= procs
    assert tree(files) == before


def _dead_pid() -> int:
    """The PID of a process that has ended (reaped: /proc has no entry for it)."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists()
    return child.pid


@pytest.mark.skipif(not IS_ROOT, reason="needs root: creates network namespaces")
def test_bad_input_removes_a_dead_runs_namespace_and_no_other() -> None:
    """A run refused for its input still sweeps first: the namespace a SIGKILLed run
    left goes; a live run's and one not named by tcpceiling stay."""
    dead, live, other = f"tcpceiling-{_dead_pid()}", f"tcpceiling-{os.getpid()}", "tcx-keep-me"
    planted = {dead, live, other}
    for name in planted:
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        argv = ["probe", "--sysctl", "net.ipv4.ip_local_port_range=abc"]
        proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert our_netns() & planted == {live, other}
    finally:
        for name in planted & our_netns():
            subprocess.run(["ip", "netns", "del", name], check=False)


# -- parsers, by property ---------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@given(host=st.one_of(ipv4, ipv6), port=st.integers(1, 65535))
def test_endpoint_round_trips(host: str, port: int) -> None:
    e = Endpoint(host, port)
    assert parse_endpoint(str(e)) == e


@given(text=st.text(max_size=40))
def test_endpoint_is_parsed_or_refused(text: str) -> None:
    try:
        e = parse_endpoint(text)
    except InputError:
        return
    assert 0 < e.port < 65536 and e.host


@given(host=ipv4, port=st.integers().filter(lambda p: not 0 < p < 65536))
def test_endpoint_port_out_of_range_is_refused(host: str, port: int) -> None:
    with pytest.raises(InputError):
        parse_endpoint(f"{host}:{port}")


@given(net=st.one_of(st.integers(16, 32), st.integers(112, 128)).flatmap(
    lambda bits: st.builds(
        lambda a: ipaddress.ip_network(f"{a}/{bits}", strict=False),
        st.ip_addresses(v=4 if bits <= 32 else 6),
    )
))  # fmt: skip
def test_cidr_count_is_arithmetic_and_exact(net: ipaddress.IPv4Network) -> None:
    assert host_count(net) <= MAX_SOURCES
    assert len(expand_sources((str(net),))) == host_count(net)


@given(addr=ipv4, bits=st.integers(0, 31))
def test_cidr_with_host_bits_is_refused(addr: str, bits: int) -> None:
    net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    text = f"{addr}/{bits}"
    if str(net.network_address) == addr:
        return  # no host bits set
    with pytest.raises(InputError, match="host bits"):
        expand_sources((text,))


@given(bits=st.integers(0, 15))
def test_cidr_too_large_is_refused_without_listing(bits: int) -> None:
    with pytest.raises(InputError, match="at most"):
        expand_sources((f"0.0.0.0/{bits}",))


@given(text=st.text(max_size=30))
def test_cidr_is_parsed_or_refused(text: str) -> None:
    try:
        out = expand_sources((text,))
    except InputError:
        return
    assert all(ipaddress.ip_address(a) for a in out)


@given(
    n=st.integers(0, 10**6),
    unit=st.sampled_from(sorted(UNITS)),
    suffix=st.sampled_from(["", "B", "iB", "ib", "b"]),
    space=st.sampled_from(["", " "]),
)
def test_bytes_with_units(n: int, unit: str, suffix: str, space: str) -> None:
    text = f"{n}{space}{unit}{suffix if unit or suffix in ('B', 'b') else ''}"
    assert parse_bytes(text) == n * UNITS[unit]
    assert parse_bytes(text.lower()) == n * UNITS[unit]


@given(whole=st.integers(0, 1000), tenths=st.integers(0, 9), unit=st.sampled_from("KMG"))
def test_bytes_with_a_fraction(whole: int, tenths: int, unit: str) -> None:
    scale = UNITS[unit]
    assert parse_bytes(f"{whole}.{tenths}{unit}") == whole * scale + tenths * scale // 10


@given(text=st.text(max_size=20))
def test_bytes_are_parsed_or_refused(text: str) -> None:
    try:
        value = parse_bytes(text)
    except InputError:
        return
    assert value >= 0


@pytest.mark.parametrize("text", ["-1G", "nan", "inf", "1e9", "", "G", "1.2.3K", "12 XB"])
def test_bytes_refused(text: str) -> None:
    with pytest.raises(InputError):
        parse_bytes(text)
