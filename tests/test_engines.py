"""The io_uring engine beside epoll: it runs where asked (the workers hold rings,
seen in /proc), holds what the epoll engine holds, counts a connect that never
completes as a timeout, and falls back to epoll, saying why, where io_uring is
refused (a seccomp filter on the command, as a container's default profile)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpceiling.probe.uring import ring as r
from tcpceiling.probe.uring.connect import UringBatches, picks
from tcpceiling.probe.workers.connector import Connector, Live
from tcpceiling.probe.workers.conns import ClientPlan, Conns
from tests.conftest import ENGINE_ENV, PROBE, needs_root, probe
from tests.seccomp import refuse_io_uring

RATE = [sys.executable, "-m", "tcpceiling", "rate"]


def ring_fds(pid: int) -> int:
    """The io_uring instances a process holds: its fds that are anon_inode:[io_uring]."""
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:[io_uring]"
        except OSError:
            continue
    return count


def held_run(engine: str, target: int) -> tuple[dict[str, object], list[int]]:
    """probe --hold: the result, and the ring count of each worker while it held."""
    proc = subprocess.Popen(
        [*PROBE, "--target", str(target), "--hold", "4", "--engine", engine, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rings: list[int] = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not rings:
        kids = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                .read_text().split()]  # fmt: skip
        if len(kids) >= 2:
            time.sleep(1.0)  # holding by now: the target is small
            rings = [ring_fds(k) for k in kids]
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert out, err
    return json.loads(out), rings


@needs_root
@pytest.mark.parametrize("engine", ["uring", "epoll"])
def test_the_engine_asked_for_runs_and_holds_the_target(engine: str) -> None:
    """Each worker holds a ring under io_uring and none under epoll (its /proc fds);
    both hold the target, established as the sink counted it."""
    r_, rings = held_run(engine, 4000)
    assert r_["engine"] == engine and r_["established"] == 4000 == r_["sink_accepted"], r_
    assert rings and all((n == 1) == (engine == "uring") for n in rings), rings


@needs_root
def test_refused_io_uring_falls_back_to_epoll_and_says_why() -> None:
    """io_uring_setup() refused (EPERM, a seccomp filter on the command and so on
    its workers): the probe and rate run on epoll, hold and cycle all the same,
    and say why."""
    env = {k: v for k, v in os.environ.items() if k != ENGINE_ENV}
    pr = subprocess.run([*PROBE, "--target", "3000", "--json"], capture_output=True,
                        text=True, preexec_fn=refuse_io_uring, env=env, timeout=120)  # fmt: skip
    p = json.loads(pr.stdout)
    assert p["engine"] == "epoll" and p["established"] == 3000, p
    assert any("io_uring_setup() refused: EPERM" in n for n in p["notes"]), p["notes"]
    rr = subprocess.run([*RATE, "--duration", "2", "--workers", "1", "--json"],
                        capture_output=True, text=True, preexec_fn=refuse_io_uring, env=env,
                        timeout=120)  # fmt: skip
    c = json.loads(rr.stdout)
    assert c["engine"] == "epoll" and c["completed"] > 0, c
    assert any("io_uring_setup() refused: EPERM" in n for n in c["notes"]), c["notes"]


@needs_root
def test_under_the_filter_the_fallback_is_the_filter_not_the_kernel() -> None:
    """The same command without the filter runs on io_uring: what the fallback
    test saw was the refusal, not a kernel without io_uring."""
    code, p = probe("--target", "1000", "--engine", "auto")
    assert code == 0 and p["engine"] == "uring", p


def test_a_connect_that_never_completes_is_cancelled_as_a_timeout(netns: str) -> None:
    """A listener that never accepts, backlog 1, SYN cookies off (in a namespace of
    the test's): past its queue the SYNs are dropped and the connects would wait
    for minutes; the batch cancels them at the connect timeout and counts
    ETIMEDOUT, as the epoll path does."""
    from tcpceiling.host import netns as netns_mod

    with netns_mod.inside(netns):
        Path("/proc/sys/net/ipv4/tcp_syncookies").write_text("0\n")
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        plan = ClientPlan(0, 6, ((None, "127.0.0.1", port),), connect_timeout=1.0)
        c = Conns(plan)
        c.ep = select.epoll()
        with r.Ring(64) as ring:
            batches = UringBatches(c, Connector(c), ring)
            t0 = time.monotonic()
            tried, _more = batches.open_batch(6)
            took = time.monotonic() - t0
        ls.close()
    assert tried == 6
    assert len(c.fds) + c.tally.errors[errno.ETIMEDOUT] == 6, (list(c.fds), c.tally.errors)
    assert len(c.fds) == 2 and c.tally.errors[errno.ETIMEDOUT] == 4, c.tally.errors
    assert took < 30, took  # liveness: the SYN retries alone would take over 2 minutes
    for fd in c.fds:
        os.close(fd)


@needs_root
def test_rate_without_room_for_direct_descriptors_falls_back_and_says_why() -> None:
    """rate's io_uring cycles keep both ends as direct descriptors in a table the
    ring registers, whose size counts against RLIMIT_NOFILE: under a hard limit of
    600 the table is refused (EMFILE) and the worker cycles on epoll, saying so."""
    env = {k: v for k, v in os.environ.items() if k != ENGINE_ENV}
    rr = subprocess.run(["prlimit", "--nofile=600:600", *RATE, "--duration", "2", "--workers",
                         "1", "--engine", "uring", "--json"],
                        capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    c = json.loads(rr.stdout)
    assert c["engine"] == "epoll" and c["completed"] > 0, c
    assert any("direct descriptors refused: EMFILE" in n for n in c["notes"]), c["notes"]


def test_entries_copied_in_bulk_and_completions_read_in_bulk_wrap_both_rings() -> None:
    """Ring.put copies built entries to the tail and Ring.reap reads the completions in
    one copy: 12 rounds of 5 no-ops on a ring of 8 entries and 16 completions cross
    both rings' ends; every no-op completes once, in order, with its user_data."""
    op_nop = 0  # IORING_OP_NOP
    seen: list[int] = []
    with r.Ring(entries=8, completions=16) as ring:
        ring.prep(op_nop, -1, user_data=99, file_index=7, addr=5)
        at = 64 * ((ring.tail - 1) & ring.sq_mask)
        packed = ctypes.string_at(ctypes.addressof(ring.sqes) + at, 64)
        assert packed == r.entry(op_nop, -1, user_data=99, file_index=7, addr=5)
        ring.submit(wait=1, timeout=5)
        assert [u for u, _res, _f in ring.reap()] == [99]
        for k in range(12):
            raw = b"".join(r.entry(op_nop, -1, user_data=5 * k + j) for j in range(5))
            ring.put(raw, 5)
            ring.submit(wait=5, timeout=5)
            seen += [u for u, res, _f in ring.reap() if res == 0]
    assert seen == list(range(60))


def _drop(netns: str, port: int, flags: str) -> None:
    """An nft rule in the test's namespace: drop TCP toward `port` whose SYN and ACK
    flags are `flags` (syn: the handshake's first packet; ack: its last, and more)."""
    rules = (f"add table inet t\nadd chain inet t in {{ type filter hook input priority 0; }}\n"
             f"add rule inet t in tcp dport {port} tcp flags & (syn | ack) == {flags} drop\n")
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules, text=True,
                   check=True)  # fmt: skip


@needs_root
@pytest.mark.parametrize(("flags", "why"), [("syn", "SYN dropped"), ("ack", "last ACK dropped")])
def test_rate_cycles_that_neither_fail_nor_are_accepted_time_out(
    netns: str, flags: str, why: str
) -> None:
    """rate's io_uring cycles post no completion for a connect that succeeds: a cycle
    ends at its accept or its failure. With the SYNs dropped the connects hang and
    are cancelled; with the handshake's last ACK dropped they succeed and no accept
    ever comes. Either way the burst ends within its timeout's bound, 0 cycles done
    and ETIMEDOUT, and once the packets pass again the next bursts do all theirs."""
    from tcpceiling.host import netns as netns_mod
    from tcpceiling.probe.uring.churn import CHURN_ENTRIES, TIMEOUT, UringCycles

    with netns_mod.inside(netns):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(128)
        _drop(netns, ls.getsockname()[1], flags)
        with r.Ring(CHURN_ENTRIES) as ring:
            cycles = UringCycles(ring, ls, "client", ())
            t0 = time.monotonic()
            blocked = cycles.burst(8)
            took = time.monotonic() - t0
            subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
            after = [cycles.burst(8)[0::2] for _ in range(3)]
        ls.close()
    assert blocked[0::2] == (0, errno.ETIMEDOUT), why
    assert took < 2 * TIMEOUT + 1, took
    assert after[1:] == [(8, 0), (8, 0)], after


LIVE: Live = [(i, socket.AF_INET6 if i == 2 else socket.AF_INET, None, ("127.0.0.1", 9000 + i))
              for i in range(3)]  # fmt: skip


@pytest.mark.parametrize(
    ("burst", "k", "n", "runs"),
    [
        (1, 0, 4, [(0, 2, 1), (1, 2, 1), (2, 10, 1), (0, 2, 1)]),
        (16, 0, 40, [(0, 2, 16), (1, 2, 16), (2, 10, 8)]),
        (16, 40, 20, [(2, 10, 8), (0, 2, 12)]),  # starts mid-burst, wraps the tuples
        (4, 5, 3, [(1, 2, 3)]),
    ],
)
def test_a_batch_picks_its_tuples_in_runs_as_the_epoll_path_does(
    burst: int, k: int, n: int, runs: list[tuple[int, int, int]]
) -> None:
    """Connection j of the fast path goes to live[j // burst % len(live)] on either
    engine; io_uring builds a batch from runs of one tuple."""
    assert picks(LIVE, burst, k, n) == runs
    one_by_one = [LIVE[j // burst % len(LIVE)][:2] for j in range(k, k + n)]
    assert [(ti, fam) for ti, fam, count in runs for _ in range(count)] == one_by_one
