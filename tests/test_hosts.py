"""probe --scheduler on Dask distributed, with "hosts" made of network namespaces:
a server namespace (the server, the Dask scheduler and the coordinator) and three
client namespaces, joined by veth pairs to a bridge in the server namespace, with
addresses from the benchmarking range 198.18.0.0/15 (RFC 2544). Each client
namespace runs one `dask worker` and has ip_local_port_range 60000 60999 and one
source IP: 3 x 1,000 connections toward the server's one port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tcpceiling.probe.run.hosts import HostOutcome, one_per_host, summarise
from tests.conftest import IS_ROOT, run_cli

SERVER_IP, PORT, SCHED = "198.18.0.1", 9000, 8786
CLIENTS = ("198.18.0.11", "198.18.0.12", "198.18.0.13")
PY = [sys.executable, "-m"]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Net:
    server: str
    clients: list[str]
    procs: dict[str, subprocess.Popen[str]]

    def run(
        self, ns: str, args: list[str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=timeout
        )

    def start(self, name: str, ns: str, args: list[str]) -> None:
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )


def _workers_registered(net: Net, n: int) -> bool:
    code = ("from distributed import Client\n"
            f"c = Client('tcp://{SERVER_IP}:{SCHED}', timeout=5)\n"
            "print(len(c.scheduler_info()['workers']))\nc.close()\n")  # fmt: skip
    out = net.run(net.server, [sys.executable, "-c", code], timeout=60).stdout.strip()
    return out.isdigit() and int(out) >= n


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    if not IS_ROOT:
        pytest.skip("needs root: creates network namespaces")
    tag = uuid.uuid4().hex[:6]
    server, clients = f"tcxh-s-{tag}", [f"tcxh-c{i}-{tag}" for i in range(3)]
    made: list[str] = []
    net = Net(server, clients, {})
    try:
        for ns in (server, *clients):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", server, "link", "add", "br0", "type", "bridge")
        ip("-n", server, "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
        ip("-n", server, "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(clients, CLIENTS, strict=True)):
            ip(
                "-n",
                server,
                "link",
                "add",
                f"v{i}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            ip("-n", server, "link", "set", f"v{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            net.run(ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=60000 60999"])
        serve = [*PY, "tcpceiling", "serve", "--listen", f"{SERVER_IP}:{PORT}", "--json-lines"]
        net.procs["serve"] = subprocess.Popen(
            ["ip", "netns", "exec", server, *serve], stdout=subprocess.PIPE, text=True
        )
        net.start("scheduler", server, [*PY, "distributed.cli.dask_scheduler", "--host", SERVER_IP,
                  "--port", str(SCHED), "--dashboard-address", ":0", "--no-show"])  # fmt: skip
        for i, (ns, addr) in enumerate(zip(clients, CLIENTS, strict=True)):
            # its listeners (comm, HTTP) on fixed ports below the range, so the 1,000
            # ports of 60000-60999 are all the probe's (a listener's port is not handed
            # out by connect())
            worker = [*PY, "distributed.cli.dask_worker", f"tcp://{SERVER_IP}:{SCHED}",
                      "--host", addr, "--worker-port", "7001", "--dashboard-address", ":7002",
                      "--nthreads", "2", "--no-nanny", "--name", f"client{i}"]  # fmt: skip
            net.start(f"worker{i}", ns, worker)
        deadline = time.monotonic() + 90
        while not _workers_registered(net, 3):
            assert time.monotonic() < deadline, "the Dask workers did not register"
            time.sleep(1)
        yield net
    finally:
        for p in net.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in net.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def probe_hosts(net: Net, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [*PY, "tcpceiling", "probe", "--connect", f"{SERVER_IP}:{PORT}",
            "--scheduler", f"tcp://{SERVER_IP}:{SCHED}", *args, "--json"]  # fmt: skip
    proc = net.run(net.server, argv, timeout=600)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def established_at_server(net: Net) -> int:
    out = net.run(net.server, ["ss", "-Htn", "state", "established", f"sport = :{PORT}"]).stdout
    return len(out.splitlines())


def test_three_hosts_hold_three_times_their_ports(net: Net) -> None:
    """Each host stops at `ports` (1,000 in 60000-60999 toward one ip:port), the total
    is 3,000 = analyze --client-hosts 3, and the server held all of them at once."""
    code, r = probe_hosts(net, "--target", "max", "--hold", "2")
    assert r["kind"] == "probe-hosts" and r["hosts_asked"] == 3, r
    assert [h["status"] for h in r["hosts"]] == ["done"] * 3, r["hosts"]
    assert sorted(h["host"] for h in r["hosts"]) == list(CLIENTS)
    assert all(h["stop"] == "ports" and h["established"] == 1000 for h in r["hosts"]), r["hosts"]
    assert r["established"] == 3000 and r["stop"] == "limits" and code == 1
    analyze = [*PY, "tcpceiling", "analyze", "--role", "client", "--connect",
               f"{SERVER_IP}:{PORT}", "--client-hosts", "3", "--json"]  # fmt: skip
    analysis = net.run(net.clients[0], analyze)
    assert json.loads(analysis.stdout)["scenarios"][0]["ceiling"] == r["established"]
    serve = net.procs["serve"]  # its count of accepted connections (none closed yet)
    assert serve.stdout is not None
    accepted = 0
    deadline = time.monotonic() + 10
    while accepted < 3000 and time.monotonic() < deadline:
        accepted = json.loads(serve.stdout.readline())["accepted"]
    assert accepted == r["established"] == 3000


def test_a_lost_worker_is_named_and_the_others_kept(net: Net) -> None:
    """Kill one client host's Dask worker while the hosts hold: the result names that
    host lost and keeps the two others' 2,000."""
    argv = [*PY, "tcpceiling", "probe", "--connect", f"{SERVER_IP}:{PORT}", "--scheduler",
            f"tcp://{SERVER_IP}:{SCHED}", "--target", "max", "--hold", "15", "--json"]  # fmt: skip
    run = subprocess.Popen(["ip", "netns", "exec", net.server, *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while established_at_server(net) < 3000:
        assert time.monotonic() < deadline and run.poll() is None, run.stderr
        time.sleep(0.5)
    victim = net.procs["worker1"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    out, _err = run.communicate(timeout=300)
    r = json.loads(out)
    lost = [h for h in r["hosts"] if h["status"] == "lost"]
    assert [h["host"] for h in lost] == [CLIENTS[1]], r["hosts"]
    assert r["stop"] == "host_lost" and CLIENTS[1] in r["detail"]
    assert sum(h["established"] for h in r["hosts"] if h["status"] == "done") == 2000
    # the killed worker's probe child got SIGTERM from the kernel and released
    deadline = time.monotonic() + 30
    while established_at_server(net) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert established_at_server(net) == 0


def test_scheduler_unreachable_is_one_line() -> None:
    code, _out, err = run_cli(
        "probe", "--connect", "127.0.0.1:9", "--scheduler", "tcp://127.0.0.1:9"
    )
    assert (
        code == 2
        and "cannot reach the Dask scheduler" in err
        and len(err.strip().splitlines()) == 1
    )


def test_one_worker_per_host_and_the_totals() -> None:
    workers: dict[str, object] = {
        "tcp://10.0.0.1:4000": {},
        "tcp://10.0.0.1:4001": {},
        "tcp://10.0.0.2:4000": {},
    }
    assert one_per_host(workers, None) == ["tcp://10.0.0.1:4000", "tcp://10.0.0.2:4000"]
    assert one_per_host(workers, 1) == ["tcp://10.0.0.1:4000"]
    a = HostOutcome("10.0.0.1", "w1", "done", 1000, stop="ports")
    b = HostOutcome("10.0.0.2", "w2", "done", 1000, stop="ports")
    assert summarise("s", 2000, 2, [a, b]).stop == "target"
    assert summarise("s", None, 2, [a, b]).stop == "limits"
    lost = summarise("s", None, 2, [a, HostOutcome("10.0.0.2", "w2", "lost", detail="gone")])
    assert lost.stop == "host_lost" and lost.established == 1000
    assert os.getpid() > 0
