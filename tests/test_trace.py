"""tcpceiling trace: the kernel's failures per process, from a tracefs instance of its
own. Two processes that fail on purpose and count their own failures (the independent
count); the instance is gone after every run, a SIGKILLed run's by the next one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.host import owned
from tcpceiling.host.parse import parse_netstat
from tcpceiling.host.roots import Roots
from tcpceiling.observe import exporter, listen_drops, trace
from tcpceiling.observe.feed import FailureTotals
from tests.conftest import IS_ROOT, netns_sysctl, run_cli
from tests.test_observe import series
from tests.test_observe_live import wait_for
from tests.test_patterns import free_port

TCPCEILING = [sys.executable, "-m", "tcpceiling"]
TRACEFS = Path("/sys/kernel/tracing")
FIXTURES = Path(__file__).parent / "fixtures"
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root: tracefs instances")

#: Opens sockets until EMFILE (nofile 64), then keeps trying between "go" and "stop"
#: on stdin, and prints how many failed.
NOFILE = """
import errno, socket, sys, time
held = []
while True:
    try:
        held.append(socket.socket())
    except OSError:
        break
print("ready", flush=True)
sys.stdin.readline()
failed, end = 0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        held.append(socket.socket())
    except OSError as exc:
        failed += exc.errno == errno.EMFILE
    time.sleep(0.002)
print(failed, flush=True)
"""
#: In a namespace with 10 ports: holds 10 connections to its own listener, then
#: connects again between "go" and "stop", and prints how many EADDRNOTAVAIL.
PORTS = """
import errno, socket, sys, time
ls = socket.socket(); ls.bind(("127.0.0.1", 9500)); ls.listen(64)
held = []
for _ in range(10):
    s = socket.socket(); s.connect(("127.0.0.1", 9500)); held.append(s)
print("ready", flush=True)
sys.stdin.readline()
failed, end = 0, time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 9500))
        held.append(s)
    except OSError as exc:
        failed += exc.errno == errno.EADDRNOTAVAIL
        s.close()
    time.sleep(0.002)
print(failed, flush=True)
"""
#: The two failures above through io_uring (no socket() or connect() syscall): in a
#: namespace with 10 ports, at nofile 64; between "go" and "stop" a batch of 8
#: IORING_OP_SOCKET (EMFILE) and, with 8 fds freed first, 8 IORING_OP_CONNECT
#: (EADDRNOTAVAIL) at a time; prints the two counts.
URING = """
import ctypes, errno, os, socket, sys, time
from tcpceiling.probe.uring import ring as r
from tcpceiling.probe.uring.connect import sockaddr
ring = r.Ring(64)
ls = socket.socket(); ls.bind(("127.0.0.1", 9600)); ls.listen(64)
held = [socket.create_connection(("127.0.0.1", 9600)) for _ in range(10)]
while True:
    try:
        held.append(socket.socket())
    except OSError:
        break
dst = ctypes.create_string_buffer(sockaddr(socket.AF_INET, "127.0.0.1", 9600), 16)
print("ready", flush=True)
sys.stdin.readline()
counts, end = [0, 0], time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(8):
        ring.prep(r.OP_SOCKET, socket.AF_INET, off=socket.SOCK_STREAM)
    ring.submit(wait=8)
    counts[0] += sum(res == -errno.EMFILE for _u, res, _f in ring.reap())
    spare = [held.pop() for _ in range(8)]
    for s in spare:
        ring.prep(r.OP_CONNECT, s.fileno(), addr=ctypes.addressof(dst), off=16)
    ring.submit(wait=8)
    counts[1] += sum(res == -errno.EADDRNOTAVAIL for _u, res, _f in ring.reap())
    held.extend(spare)
    time.sleep(0.01)
print(*counts, flush=True)
"""

#: A listener with backlog 2 that never accepts; between "go" and "stop" 30 clients
#: connect without blocking; prints how many never got into its accept queue.
FLOOD = """
import socket, sys, time
ls = socket.socket(); ls.bind(("127.0.0.1", 9700)); ls.listen(2)
print("ready", flush=True)
sys.stdin.readline()
clients = []
for _ in range(30):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", 9700))
    clients.append(c)
time.sleep(float(sys.argv[1]))
print(sum(c.getsockopt(socket.SOL_TCP, socket.TCP_INFO, 8)[0] == 2 for c in clients), flush=True)
"""


#: Non-blocking connects, each waited on: 40 to a port with no listener (a RST), then 4
#: toward an address whose frames go to a MAC no one has (its veth peer drops them,
#: so no ARP failure turns them into EHOSTUNREACH), which time out
#: after tcp_syn_retries; prints how many were refused and how many timed out, as
#: SO_ERROR says.
REFUSED_AND_TIMED_OUT = """
import select, socket, sys, time
print("ready", flush=True)
sys.stdin.readline()
def outcome(c):
    return c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
refused = 0
for _ in range(40):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", 9800))
    select.select([], [c], [], 2)
    refused += outcome(c) == 111
    c.close()
waiting = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("198.18.0.2", 80))
    waiting.append(c)
timed_out = 0
for c in waiting:
    select.select([], [c], [], 10)
    timed_out += outcome(c) == 110
print(refused, timed_out, flush=True)
"""


@pytest.fixture(autouse=True)
def global_trace_untouched() -> Iterator[None]:
    """Every test here leaves no instance of ours and the global trace's switches
    (tracing_on, the enabled events) as they were."""

    def switches() -> tuple[str, str]:
        if not IS_ROOT or not (TRACEFS / "set_event").exists():
            return ("", "")
        return ((TRACEFS / "tracing_on").read_text(), (TRACEFS / "set_event").read_text())

    before = switches()
    yield
    assert switches() == before and ours() == []


def ours() -> list[str]:
    inst = TRACEFS / "instances"
    return sorted(p.name for p in inst.glob(f"{owned.PREFIX}*")) if inst.is_dir() else []


def start(cmd: list[str]) -> subprocess.Popen[str]:
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def traced(seconds: str, *procs: subprocess.Popen[str]) -> tuple[list[str], str, int]:
    """`trace SECONDS --json` around processes made ready by start(): once its instance
    is on, each is told "go"; (what each printed, the trace's output, its exit code)."""
    tr = subprocess.Popen([*TCPCEILING, "trace", seconds, "--json"], stdout=subprocess.PIPE,
                          text=True)  # fmt: skip
    time.sleep(0.7)  # the instance is on
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    printed = [p.communicate(timeout=30)[0] for p in procs]
    out, _ = tr.communicate(timeout=30)
    return printed, out, tr.returncode


def row(doc: dict[str, Any], pid: int, errno_: str) -> dict[str, Any]:
    found = [r for r in doc["rows"] if r["pid"] == pid and r["errno"] == errno_]
    assert len(found) == 1, doc["rows"]
    return dict(found[0])


@root_only
def test_trace_names_each_failing_process_its_errno_and_limit(netns: str) -> None:
    """A process at nofile 64 and a client out of its 10 ports, failing for 1.5 s
    inside a 3 s trace: each is named with its errno and limit, and the counts agree
    with the processes' own within 10 %; the client's destination too."""
    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60009")
    a = start(["prlimit", "--nofile=64", sys.executable, "-c", NOFILE, "1.5"])
    b = start(["ip", "netns", "exec", netns, sys.executable, "-c", PORTS, "1.5"])
    bpid = b.pid  # ip netns exec execs the command: the same pid
    printed, out, code = traced("3", a, b)
    counts = [int(text.strip()) for text in printed]
    assert code == 1, out
    doc = json.loads(out)
    emfile = row(doc, a.pid, "EMFILE")
    assert emfile["limit"] == "nofile" and emfile["call"] == "socket"
    assert abs(emfile["count"] - counts[0]) <= 0.1 * counts[0], (emfile, counts)
    ports = row(doc, bpid, "EADDRNOTAVAIL")
    assert ports["limit"] == "ports" and ports["call"] == "connect"
    assert abs(ports["count"] - counts[1]) <= 0.1 * counts[1], (ports, counts)
    assert ports["destination"].startswith("127.0.0.1:9500")
    assert ours() == []


@root_only
def test_connects_refused_and_timed_out_are_named_with_errno_and_destination(
    netns: str,
) -> None:
    """Non-blocking connects refused (no listener) and timed out (SYNs that reach no
    one, tcp_syn_retries 1): one row each, its errno and destination, counted as
    the process's own SO_ERROR counts them. The timeouts end in the kernel's timer, so
    their row may name whichever task was running; the refusals the connecting one."""
    netns_sysctl(netns, "net.ipv4.tcp_syn_retries", "1")
    for cmd in ("link add v0 type veth peer name v1", "addr add 198.18.0.1/24 dev v0",
                "link set v0 up", "link set v1 up",
                "neigh add 198.18.0.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent"):  # fmt: skip
        subprocess.run(["ip", "-n", netns, *cmd.split()], check=True)
    p = start(["ip", "netns", "exec", netns, sys.executable, "-c", REFUSED_AND_TIMED_OUT])
    printed, out, _code = traced("7", p)
    refused, timed_out = map(int, printed[0].split())
    doc = json.loads(out)
    assert (refused, timed_out) == (40, 4)
    rows = [r for r in doc["rows"] if r["call"] == "connect"]
    mine = row(doc, p.pid, "ECONNREFUSED")  # ip netns exec execs: the same pid
    assert (mine["destination"], mine["count"]) == ("127.0.0.1:9800", refused), rows
    timers = [r for r in rows if r["errno"] == "ETIMEDOUT" and r["destination"] == "198.18.0.2:80"]
    assert sum(r["count"] for r in timers) == timed_out, rows
    assert ours() == []


@root_only
def test_failures_inside_io_uring_are_named_with_their_limits(netns: str) -> None:
    """A program that opens and connects through io_uring makes no socket() or
    connect() call to trace: its requests' completions are (io_uring_complete,
    filtered on the limits' errnos). EMFILE and EADDRNOTAVAIL are named with their
    limits, counted as the program counted them, the ports' destination found."""
    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60009")
    cmd = ["ip", "netns", "exec", netns, "prlimit", "--nofile=64", sys.executable, "-c", URING]
    p = start([*cmd, "1.5"])
    printed, out, _code = traced("3", p)
    emfiles, no_ports = map(int, printed[0].split())
    doc = json.loads(out)
    emfile, ports = row(doc, p.pid, "EMFILE"), row(doc, p.pid, "EADDRNOTAVAIL")
    assert emfile["call"] == ports["call"] == "io_uring", doc["rows"]
    assert emfile["limit"] == "nofile" and ports["limit"] == "ports", doc["rows"]
    assert emfiles > 0 and abs(emfile["count"] - emfiles) <= 0.1 * emfiles, (emfile, emfiles)
    assert no_ports > 0 and abs(ports["count"] - no_ports) <= 0.1 * no_ports, (ports, no_ports)
    assert ports["destination"].startswith("127.0.0.1:9600")
    assert ours() == []


@root_only
def test_a_flooded_listener_that_never_accepts_is_named_with_its_syn_drops(netns: str) -> None:
    """Every client left in SYN_SENT had its SYN dropped at least once during the
    trace: the listener's port, pid and queue are named, with at least that many drops
    and no more than its namespace's ListenOverflows (a fresh namespace: all ours)."""
    flood = start(["ip", "netns", "exec", netns, sys.executable, "-c", FLOOD, "4"])
    tr = subprocess.Popen([*TCPCEILING, "trace", "3", "--json"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.7)
    assert flood.stdin is not None
    flood.stdin.write("go\n")
    flood.stdin.flush()
    waiting = int(flood.communicate(timeout=30)[0].strip())
    out, _ = tr.communicate(timeout=30)
    netstat = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/netstat"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    total = parse_netstat(netstat)["TcpExt.ListenOverflows"]
    found = row(json.loads(out), flood.pid, "SYN dropped: accept queue full")
    assert found["limit"] == "backlog" and found["call"] == "listen"
    assert found["destination"] == "127.0.0.1:9700 (accept queue 3/3)"
    assert waiting == 27 and waiting <= found["count"] <= total, (found, waiting, total)
    assert any("ListenOverflows" in n for n in json.loads(out)["notes"])
    assert ours() == []


def comm(pid: int) -> str:
    """The process's comm (python or python3, as the interpreter was named)."""
    return Path(f"/proc/{pid}/comm").read_text().strip()


def go(p: subprocess.Popen[str]) -> int:
    """Let a failing process fail; its own count of failures."""
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    return int(p.communicate(timeout=30)[0].strip())


def traced_count(evidence: list[str]) -> int:
    m = next(re.search(r"EMFILE x([\d,]+)", e) for e in evidence if "trace:" in e)
    assert m is not None
    return int(m[1].replace(",", ""))


@root_only
def test_doctor_trace_names_the_failing_process_with_its_count() -> None:
    """doctor --trace 3: the process failing at nofile 64 is a critical nofile finding,
    its count within 10 % of its own."""
    a = start(["prlimit", "--nofile=64", sys.executable, "-c", NOFILE, "1.5"])
    doc = subprocess.Popen([*TCPCEILING, "doctor", "--trace", "3", "--kmsg", "/dev/null",
                            "--json"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(1.0)  # the first sample taken, the trace on
    name = comm(a.pid)
    failed = go(a)
    out, _ = doc.communicate(timeout=60)
    assert doc.returncode == 2, out
    found = [f for f in json.loads(out)["findings"] if f["subject"] == f"{name} (pid {a.pid})"]
    assert found and found[0]["limit"] == "nofile" and found[0]["severity"] == "critical"
    assert abs(traced_count(found[0]["evidence"]) - failed) <= 0.1 * failed, (found, failed)
    assert ours() == []


def test_doctor_goes_on_without_a_trace(tmp_path: Path) -> None:
    code, out, _err = run_cli(
        "doctor", "--procfs", str(FIXTURES / "stock-distro" / "proc"), "--sysfs", str(tmp_path),
        "--trace", "1", "--interval", "0.1", "--kmsg", "/dev/null", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["notes"] == [
        f"no trace: no tracefs under {tmp_path}/kernel/tracing (a fixture root has none)"
    ]


@root_only
def test_watch_trace_shows_a_panel_of_the_failures() -> None:
    a = start(["prlimit", "--nofile=64", sys.executable, "-c", NOFILE, "1"])
    w = subprocess.Popen([*TCPCEILING, "watch", "--trace", "--once", "--interval", "3"],
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    time.sleep(1.0)
    go(a)
    _out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    panel = err[err.index("failing since the last frame") :]
    line = next(ln for ln in panel.splitlines() if f"pid {a.pid}" in ln)
    assert "socket" in line and "EMFILE" in line and "nofile" in line
    assert ours() == []


@root_only
def test_exporter_trace_counts_failures_and_leaves_nothing_on_sigterm() -> None:
    """exporter --trace: tcpceiling_failures_total of the failing comm within 10 % of
    its own count; SIGTERM ends it with exit 0 and the instance removed."""
    port = free_port()
    exp = subprocess.Popen([*TCPCEILING, "exporter", "--trace", "--listen",
                            f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        metrics = wait_for(lambda: scrape(port), 30, "the exporter to serve")
        assert "tcpceiling_failures_total" in metrics
        a = start(["prlimit", "--nofile=64", sys.executable, "-c", NOFILE, "1.5"])
        name = comm(a.pid)
        failed = go(a)
        time.sleep(1.0)  # the trace thread's last read
        counted = sum(v for k, v in series(scrape(port)).items()
                      if k.startswith("tcpceiling_failures_total{") and 'errno="EMFILE"' in k
                      and f'process="{name}"' in k)  # fmt: skip
        assert abs(counted - failed) <= 0.1 * failed, (counted, failed)
    finally:
        exp.send_signal(signal.SIGTERM)
        exp.communicate(timeout=30)
    assert exp.returncode == 0 and ours() == []


def test_exporter_trace_with_a_textfile_is_bad_input(tmp_path: Path) -> None:
    code, _out, err = run_cli("exporter", "--trace", "--textfile", str(tmp_path / "m.prom"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


@root_only
def test_a_killed_trace_leaves_an_instance_the_next_run_removes() -> None:
    tr = subprocess.Popen([*TCPCEILING, "trace", "30"], stdout=subprocess.DEVNULL)
    for _ in range(50):
        if f"{owned.PREFIX}{tr.pid}" in ours():
            break
        time.sleep(0.1)
    assert f"{owned.PREFIX}{tr.pid}" in ours()
    os.kill(tr.pid, signal.SIGKILL)
    tr.wait()
    code, out, _err = run_cli("trace", "0.2", "--json")
    assert code in (0, 1) and ours() == []
    assert any("stale" in n for n in json.loads(out)["notes"])


#: Run in a private mount namespace where tracefs is not mounted (as on a new machine,
#: whatever the host has): a trace that mounted it and was SIGKILLed leaves it mounted,
#: the next run unmounts it; of two runs, the one that ends last unmounts.
UNMOUNTED = """
import subprocess, sys, time
from pathlib import Path
T = Path("/sys/kernel/tracing")
subprocess.run(["umount", str(T)], capture_output=True)
def mounted():
    return any(l.split()[4] == str(T) for l in open("/proc/self/mountinfo"))
def trace(seconds):
    return subprocess.Popen([sys.executable, "-m", "tcpceiling", "trace", seconds],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def started(p):
    for _ in range(100):
        if (T / "instances" / f"tcpceiling-{p.pid}").is_dir():
            return True
        time.sleep(0.05)
    return False
print("before", mounted())
killed = trace("30")
print("started", started(killed))
killed.kill(); killed.wait()
print("after kill", mounted())
print("next run", trace("0.2").wait(), mounted())
first = trace("30")
started(first)
second = trace("1.5")
started(second)
first.terminate(); first.wait()
print("first ended", mounted())
print("second ended", second.wait(), mounted())
"""


@root_only
def test_a_run_that_mounted_tracefs_leaves_it_unmounted_even_killed() -> None:
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", UNMOUNTED],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.splitlines() == [
        "before False",
        "started True",
        "after kill True",  # SIGKILL: nothing could unmount
        "next run 0 False",  # the next run removed its instance, then the mount
        "first ended True",  # the mounter ended while another run of ours used it
        "second ended 0 False",
    ], done.stderr


@root_only
def test_sigterm_removes_the_instance() -> None:
    tr = subprocess.Popen([*TCPCEILING, "trace", "30"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    for _ in range(50):
        if ours():
            break
        time.sleep(0.1)
    tr.send_signal(signal.SIGTERM)
    _out, err = tr.communicate(timeout=10)
    assert tr.returncode == 130 and len(err.strip().splitlines()) == 1
    assert ours() == []


@root_only
@pytest.mark.parametrize("delay", [0.025 * i for i in range(24)])
def test_a_signal_at_any_moment_of_the_start_leaves_no_instance(delay: float) -> None:
    """SIGTERM or SIGINT anywhere in the start (before the handler, between creating the
    instance and enabling its events, while reading): the run ends and removes it."""
    tr = subprocess.Popen([*TCPCEILING, "trace", "30"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(delay)
    sent = signal.SIGTERM if round(delay * 40) % 2 else signal.SIGINT
    tr.send_signal(sent)
    try:
        tr.wait(timeout=10)
    except subprocess.TimeoutExpired:
        ended(tr)  # this failure alone: the later tests find nothing of this run's
        pytest.fail(f"the run went on after {sent.name} at {delay:.3f} s")
    assert ours() == []


def ended(tr: subprocess.Popen[bytes]) -> None:
    """Our run ended by SIGTERM (its clean-up runs), SIGKILL as the last resort."""
    tr.terminate()
    try:
        tr.wait(timeout=10)
    except subprocess.TimeoutExpired:
        tr.kill()
        tr.wait()


class SignalledWhileEnabling(trace.Tracer):
    """A real SIGTERM to this process once the instance exists and its events are on,
    before __enter__ returns: the moment a `with` statement cannot clean up by itself."""

    def _enable(self) -> None:
        super()._enable()
        os.kill(os.getpid(), signal.SIGTERM)


@root_only
def test_a_sigterm_inside_the_start_removes_the_instance_and_ends_the_run() -> None:
    before = signal.getsignal(signal.SIGTERM)
    roots = Roots()
    with (
        pytest.raises(KeyboardInterrupt),
        trace.mounted(TRACEFS, roots.procfs),  # a new machine has no tracefs mounted
        SignalledWhileEnabling(TRACEFS, roots),
    ):
        pytest.fail("the run went on after SIGTERM")
    assert ours() == [] and signal.getsignal(signal.SIGTERM) is before


#: The CLI run as nobody: imported as root (the package may be under /root), then every
#: uid and gid dropped before main() runs.
AS_NOBODY = """
import os, sys
from tcpceiling.cli import main
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
sys.argv = ["tcpceiling", *sys.argv[1:]]
main()
"""


@root_only
def test_without_root_one_line_exit_3() -> None:
    done = subprocess.run([sys.executable, "-c", AS_NOBODY, "trace", "1"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 3 and "root" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and ours() == []


def test_without_tracefs_one_line_exit_3(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    code, _out, err = run_cli(
        "trace", "1", "--procfs", str(tmp_path / "proc"), "--sysfs", str(tmp_path / "sys")
    )
    assert code == 3 and "tracefs" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("          python-4242    [001] ..... 1234.567890: sys_connect -> 0xfffffffffffffff5",
         trace.Event("python", 4242, "syscall", "connect", 11)),
        ("     nginx: worker-88      [000] d..1. 99.000001: sys_accept4 -> 0xffffffffffffffe8",
         trace.Event("nginx: worker", 88, "syscall", "accept4", 24)),
        ("          <...>-7 [000] ..... 1.0: sys_socket -> 0x3", None),
        ("  curl-99 [001] ..s1. 5.5: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
         "sport=40000 dport=443 saddr=10.0.0.1 daddr=10.0.0.5 saddrv6=::ffff:10.0.0.1 "
         "daddrv6=::ffff:10.0.0.5 oldstate=TCP_SYN_SENT newstate=TCP_CLOSE",
         trace.Event("curl", 99, "connect_failed", "connect", 0, "10.0.0.5:443")),
        ("  <idle>-0 [000] ..s2. 8.5: inet_sk_error_report: family=AF_INET6 protocol=IPPROTO_TCP "
         "sport=40002 dport=8080 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=::1 daddrv6=::1 error=111",
         trace.Event("<idle>", 0, "connect_failed", "connect", 111, "[::1]:8080")),
        ("  java-7 [001] ..s1. 9.0: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP "
         "sport=40003 dport=80 saddr=10.0.0.1 daddr=10.0.0.6 saddrv6=::ffff:10.0.0.1 "
         "daddrv6=::ffff:10.0.0.6 error=110",
         trace.Event("java", 7, "connect_failed", "connect", 110, "10.0.0.6:80")),
        ("# tracer: nop", None),
        ("  python-4242 [001] ..... 12.3: io_uring_complete: ring 00000000a1b2c3d4, req "
         "000000001a2b3c4d, user_data 0x5, result -99, cflags 0x0 extra1 0 extra2 0",
         trace.Event("python", 4242, "syscall", "io_uring", 99)),
        ("  python-4242 [001] ..... 12.3: io_uring_complete: ring 00000000a1b2c3d4, req "
         "000000001a2b3c4d, user_data 0x5, result 7, cflags 0x2 extra1 0 extra2 0", None),
        ("  <idle>-0 [001] ..s2. 7.0: tcp_retransmit_synack: family=AF_INET sport=9700 "
         "dport=40000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 "
         "daddrv6=::ffff:127.0.0.1",
         trace.Event("kernel", 0, "synack_retransmit", "synack", 0, "127.0.0.1:9700")),
    ],
)  # fmt: skip
def test_trace_lines(line: str, event: trace.Event | None) -> None:
    assert trace.parse_line(line) == event


def test_counting_joins_a_refused_connect_to_its_destination() -> None:
    refused = trace.Event("curl", 99, "syscall", "connect", 111)
    state = trace.Event("curl", 99, "connect_failed", "connect", 0, "10.0.0.5:443")
    async_only = trace.Event("java", 7, "connect_failed", "connect", 0, "10.0.0.6:80")
    reported = trace.Event("java", 7, "connect_failed", "connect", 110, "10.0.0.7:80")
    rows = trace.count([refused, state, refused, state, async_only, reported, reported])
    assert rows == (
        trace.Row("curl", 99, "connect", "ECONNREFUSED", "refused", 2, "10.0.0.5:443"),
        trace.Row("java", 7, "connect", "ETIMEDOUT", "server", 2, "10.0.0.7:80"),
        trace.Row("java", 7, "connect", "refused or timed out", "server", 1, "10.0.0.6:80"),
    )
    clone = trace.count([trace.Event("java", 7, "syscall", "clone3", 11)])
    assert clone[0].limit == "threads"


def test_the_kernels_own_events_are_rows_per_listening_address() -> None:
    synack = trace.Event("kernel", 0, "synack_retransmit", "synack", 0, "10.0.0.1:443")
    assert trace.count([synack, synack]) == (
        trace.Row("kernel", 0, "synack", "SYN-ACK retransmitted", "backlog", 2, "10.0.0.1:443"),
    )


def test_failure_counters_keep_a_bounded_label_set() -> None:
    """The first `most` comms are series of their own; every later one is other."""
    totals = FailureTotals(most=2)
    totals.add([trace.Row("java", 1, "connect", "EADDRNOTAVAIL", "ports", 500),
                trace.Row("nginx", 2, "accept4", "EMFILE", "nofile", 40)])  # fmt: skip
    totals.add([trace.Row("curl", 3, "connect", "EADDRNOTAVAIL", "ports", 7),
                trace.Row("java", 9, "connect", "EADDRNOTAVAIL", "ports", 5)])  # fmt: skip
    assert totals.totals == {
        ("ports", "java", "EADDRNOTAVAIL"): 505,
        ("nofile", "nginx", "EMFILE"): 40,
        ("ports", "other", "EADDRNOTAVAIL"): 7,
    }
    text = "".join(
        f"{s.name} {s.labels} {s.value}\n"
        for m in exporter.failure_metrics(totals)
        for s in m.samples
    )
    assert "tcpceiling_failures_total {'limit': 'ports', 'process': 'other'" in text


def test_namespaces_whose_overflows_rose() -> None:
    before = {"net:[1]": 5, "net:[2]": 9}
    after = {"net:[1]": 5, "net:[2]": 12, "net:[3]": 4}
    assert listen_drops.moved(before, after) == {"net:[2]": 3, "net:[3]": 4}


@pytest.mark.parametrize("has_report", [True, False])
def test_the_error_report_is_used_where_the_kernel_has_it(tmp_path: Path,
                                                          has_report: bool) -> None:  # fmt: skip
    """An instance's event switches, as tracefs lays them out: the error report is
    enabled where the kernel has it, else SYN_SENT -> CLOSE stands in and says so."""
    inst = tmp_path / "instances" / "ours"
    events = ["sock/inet_sock_set_state", "io_uring/io_uring_complete"]
    events += ["sock/inet_sk_error_report"] if has_report else []
    for event in events:
        (inst / "events" / event).mkdir(parents=True)
    t = trace.Tracer(tmp_path, Roots(tmp_path, tmp_path))
    t.inst = inst
    t._enable()

    def switched(event: str) -> tuple[str, str] | None:
        d = inst / "events" / event
        if not (d / "enable").exists():
            return None
        return (d / "filter").read_text(), (d / "enable").read_text()

    state = switched("sock/inet_sock_set_state")
    if has_report:
        assert switched("sock/inet_sk_error_report") == (trace.ERROR_FILTER, "1")
        assert state is None and t.notes == []
    else:
        assert state == (trace.STATE_FILTER, "1") and t.notes == [trace.NO_ERROR_REPORT]
    assert trace.ERROR_FILTER == "error == 111 || error == 110 || error == 113 || error == 101"
    assert (inst / "tracing_on").read_text() == "1"
