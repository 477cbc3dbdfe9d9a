"""A thread per connection against one event loop. compare-io holds the same number
both ways and measures what a thread adds (its stack, page tables, task_struct and
the runtime's share); then a thread-per-connection server alone in a pids cgroup
stops where analyze says, pids.max less the tasks it already has, when
pthread_create() fails with EAGAIN."""

from __future__ import annotations

import select
import socket
import subprocess
import sys

from tcpceiling.analysis.analyze import analyze
from tcpceiling.analysis.model import build_scenarios
from tcpceiling.compare.compare import Comparison, compare_io
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.cgroup import throwaway
from tcpceiling.tour.model import Measure, Step, Trial

CONNECTIONS = 2000
PIDS_MAX = 64
#: A thread per connection, each blocked in recv(); prints its port once it listens,
#: then "thread N" per thread started, and "EAGAIN N" when one cannot be. It dies with
#: the tour (prctl(2) PR_SET_PDEATHSIG, SIGKILL), and without its "go" (the tour gone
#: before the prctl: end of file) it never listens.
THREAD_SERVER = """
import ctypes, socket, sys, threading
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
if sys.stdin.readline() != "go\\n":
    sys.exit(1)
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(256)
print(ls.getsockname()[1], flush=True)
n = 0
while True:
    c, _ = ls.accept()
    try:
        threading.Thread(target=c.recv, args=(1,), daemon=True).start()
        n += 1
        print("thread", n, flush=True)
    except RuntimeError:
        print("EAGAIN", n, flush=True)
        c.close()
"""
LINE_WAIT_S = 5.0


def thread_cost(c: Comparison) -> Trial:
    """What a thread adds per connection: analyze's figure against the measured
    difference of the two models at the same N (both ends of each are on this host;
    only the server's side changes model)."""
    by = {m.io_model: m for m in c.models}
    extra = None
    if by["threads"].memory_per_connection and by["epoll"].memory_per_connection:
        extra = by["threads"].memory_per_connection - by["epoll"].memory_per_connection
    scenario = build_scenarios("server", io_model="threads")
    memory = analyze(scenario).scenarios[0].constraint("memory")
    breakdown = memory.details.get("per_connection_breakdown", [])
    thread = next((b["bytes"] for b in breakdown if "thread" in b["item"]), None)
    return Trial(
        "what a thread adds per connection",
        Measure(thread, "bytes", "memory", "analyze --io-model threads: the thread's share"),
        Measure(extra, "bytes", "memory", f"compare-io at {c.connections:,}: threads - epoll"),
        "",
        0.15,  # analyze's figure is one measurement of a Python thread (docs/limits.md §6)
    )


def ratios(c: Comparison) -> tuple[tuple[str, str], ...]:
    by = {m.io_model: m for m in c.models}
    e, t = by["epoll"], by["threads"]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "not measured"

    return (
        ("memory per connection, threads / epoll",
         ratio(t.memory_per_connection, e.memory_per_connection)),
        ("setup time, threads / epoll", ratio(t.setup_seconds, e.setup_seconds)),
        ("CPU while opening, threads / epoll", ratio(t.cpu_seconds, e.cpu_seconds)),
    )  # fmt: skip


def pids_trial(roots: Roots, netns: str) -> Trial:
    """The thread server alone in a pids cgroup of PIDS_MAX, in the tour's namespace;
    connections opened one at a time until it says EAGAIN."""
    with throwaway(roots, "pids", PIDS_MAX, f"{netns}-pids") as group:
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", THREAD_SERVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            group.add(server.pid)  # ip netns exec execs python: the same pid
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write("go\n")
            server.stdin.flush()
            port = int(_line(server))
            result = analyze(build_scenarios("server", io_model="threads"), roots,
                             str(server.pid)).scenarios[0]  # fmt: skip
            pids = result.constraint("cgroup_pids")
            held, observed = _fill(server, netns, port, int(pids.ceiling or PIDS_MAX) + 5)
        finally:
            server.kill()
            server.wait(10)
    return Trial(
        f"a thread-per-connection server in a pids cgroup of {PIDS_MAX}",
        Measure(pids.ceiling, "connections", "cgroup_pids",
                "analyze --io-model threads --pid: pids.max less the tasks in the cgroup"),
        Measure(held, "connections", "cgroup_pids", "the server's own count of threads"),
        observed,
    )  # fmt: skip


def _line(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], LINE_WAIT_S)
    if not ready:
        raise TimeoutError("the thread server said nothing")
    return server.stdout.readline().strip()


def _fill(server: subprocess.Popen[str], netns: str, port: int, most: int) -> tuple[int, str]:
    """Connect one at a time (at most `most`) until the server cannot start a thread."""
    held: list[socket.socket] = []
    try:
        with netns_mod.inside(netns):
            for _ in range(most):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                word, n = _line(server).split()
                if word == "EAGAIN":
                    return int(n), "pthread_create(): EAGAIN"
        return len(held), "none: the server never refused"
    finally:
        for s in held:
            s.close()


def step(roots: Roots, netns: str) -> Step:
    c = compare_io(CONNECTIONS, wake_samples=100, base=ProbeConfig(isolate=True))
    for m in c.models:
        unless_interrupted(m.stop)
    return Step(
        "threads",
        "A thread per connection against one event loop, and the task limit",
        "A thread per connection costs its stack and page tables on top of the socket, "
        "and makes the task limits (pids.max, threads-max, pid_max) the ceiling; one "
        "event loop holds every connection in one task.",
        (thread_cost(c), pids_trial(roots, netns)),
        reads=(("connections held both ways", f"{CONNECTIONS:,}"), *ratios(c)),
        notes=(c.verdict,),
    )
