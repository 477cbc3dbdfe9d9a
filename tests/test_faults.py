"""Faults, as they happen to a run: the coordinator SIGKILLed, SIGTERM, and a client
that floods `serve` with data. Real processes, real namespaces, real signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import IS_ROOT, PROBE, needs_root
from tests.test_probe import _children_when_opening, _start_slow_probe, our_namespaces


def _alive(kids: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for k in kids:
        try:
            if k.is_running() and k.status() != psutil.STATUS_ZOMBIE:
                out.append(k)
        except psutil.NoSuchProcess:
            continue
    return out


def _tcp_inuse(netns: str) -> int:
    """Sockets held (not TIME_WAIT) in a namespace: its /proc/net/sockstat."""
    text = subprocess.run(
        ["ip", "netns", "exec", netns, "cat", "/proc/net/sockstat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in text.splitlines() if x.startswith("TCP:")).split()
    return int(line[line.index("inuse") + 1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_gives_interrupted_with_the_full_result(sig: int) -> None:
    proc = _start_slow_probe()
    kids = _children_when_opening(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    r = json.loads(out)
    assert r["schema_version"] == 1 and r["kind"] == "probe" and r["host"]["kernel"]
    assert r["stop"]["reason"] == "interrupted"
    assert r["established"] > 0 and r["sink_accepted"] > 0
    assert r["per_connection"]["kernel_bytes"] is not None
    assert r["predicted"]["ceiling"] is not None
    assert not _alive(kids)


@needs_root
def test_sigkill_of_the_coordinator_leaves_nothing_running() -> None:
    """The workers die with it (PR_SET_PDEATHSIG), their sockets go within 10 s, and
    the next run deletes the namespace the dead run left."""
    proc = _start_slow_probe()
    kids = _children_when_opening(proc)
    ns = f"tcpceiling-{proc.pid}"
    assert ns in our_namespaces()
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while (_alive(kids) or _tcp_inuse(ns) > 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kids)
    assert _tcp_inuse(ns) == 0
    again = subprocess.run([*PROBE, "--target", "10", "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert ns not in our_namespaces()
    assert our_namespaces() == []


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_rate_ended_by_a_signal_removes_its_namespace_and_workers(sig: int) -> None:
    """`rate` holds nothing worth a result; a signal ends it (exit 130, one line) with
    its namespace deleted and its workers gone, SIGTERM as Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "tcpceiling", "rate", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    ns = f"tcpceiling-{proc.pid}"
    for _ in range(200):  # 20 s
        kids = psutil.Process(proc.pid).children(recursive=True)
        if ns in our_namespaces() and kids:
            break
        time.sleep(0.1)
    assert ns in our_namespaces() and kids
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "tcpceiling: interrupted"
    assert ns not in our_namespaces() and not _alive(kids)


def test_killed_worker_is_named_and_the_others_results_kept() -> None:
    proc = _start_slow_probe()
    kids = _children_when_opening(proc)
    victim = kids[-1]
    victim.kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    r = json.loads(out)
    assert r["stop"]["reason"] == "worker_died"
    assert f"pid {victim.pid}" in r["stop"]["detail"]
    assert r["established"] > 0 and r["per_connection"]["kernel_bytes"] is not None
    assert not _alive(kids)
    if IS_ROOT:
        assert our_namespaces() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shards(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids
        time.sleep(0.1)
    raise AssertionError("serve started no shard")


def _flood(port: int, seconds: float, clients: int = 8) -> int:
    """Clients that only send, as fast as the sink takes it, for `seconds`."""
    chunk = b"x" * 65536
    socks = [socket.create_connection(("127.0.0.1", port), timeout=1) for _ in range(clients)]
    for s in socks:
        s.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in socks:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                continue
    for s in socks:
        s.close()
    return sent


@pytest.mark.parametrize("mode", ["discard", "echo"])
def test_serve_under_a_flood_keeps_its_memory(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """RSS of every shard before and after a 3 s flood of 8 clients that never read
    (the echo has nowhere to go): it reads into one fixed buffer and drops what the
    socket will not take, so memory does not follow the bytes."""
    port = _free_port()
    args = ["serve", "--listen", f"127.0.0.1:{port}", "--shards", "2", "--duration", "30"]
    cmd = [sys.executable, "-m", "tcpceiling", *args, *(["--echo"] if mode == "echo" else [])]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        shards = _shards(proc)
        time.sleep(0.5)
        before = sum(s.memory_info().rss for s in shards)
        sent = _flood(port, 3.0)
        after = sum(s.memory_info().rss for s in shards)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    with capsys.disabled():
        print(f"\n  serve {mode}: {sent / 2**20:,.0f} MiB flooded, shard RSS {before / 2**20:.1f} "
              f"-> {after / 2**20:.1f} MiB")  # fmt: skip
    assert sent > 100 * 2**20  # a real flood, not a trickle
    assert after - before < 4 * 2**20
    assert proc.returncode == 0
