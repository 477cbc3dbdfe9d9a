"""Stop attribution replayed from recorded worker messages: no root, no sockets.

Each stream under fixtures/streams/ was recorded from a real run with
`tcpceiling probe ... --record-messages NAME.jsonl --json > NAME.result.json`
(the commands are in fixtures/streams/README.md); replaying it must give the
stop that run reported."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from tcpceiling.probe.run import outcome
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.serving import attribution, evidence
from tcpceiling.probe.workers.messages import (
    ChurnProgress,
    ClientProgress,
    ClientStart,
    Failure,
    Frontier,
    SinkProgress,
    SinkReady,
    WatchSummary,
    WorkerState,
    decode,
    encode,
    replay,
)

STREAMS = Path(__file__).parent / "fixtures" / "streams"
RECORDED = sorted(p.stem for p in STREAMS.glob("*.jsonl"))


@pytest.mark.parametrize("name", RECORDED)
def test_replayed_stream_gives_the_runs_stop(name: str) -> None:
    result = json.loads((STREAMS / f"{name}.result.json").read_text())
    clients, sinks = replay((STREAMS / f"{name}.jsonl").read_text().splitlines())
    established = sum(w.established for w in clients)
    assert established == result["established"]
    stop = attribution.final_stop(
        None,
        result["target"],
        established,
        clients,
        sinks,
        result["mode"] == "server",
        server_evidence=lambda s: s,  # the evidence needs the live host; the verdict not
        served=result["served"] if result["mode"] == "server" else None,
    )
    expected = result["stop"]
    if result["mode"] == "server" and stop.reason == "server":
        assert expected["side"] == "server" and expected["reason"].startswith("server")
    else:
        assert (stop.reason, stop.errno, stop.side) == (
            expected["reason"],
            expected["errno"],
            expected["side"],
        )
    assert stop.errno_counts == expected["errno_counts"]


def test_streams_were_recorded() -> None:
    assert len(RECORDED) >= 3


def _client(final: bool, short: bool, **failure: int) -> WorkerState:
    w = WorkerState("client", 0)
    w.apply(ClientStart(0, 100, 20000, 6, 0))
    w.apply(ClientProgress(0, 50, final=final, short=short, failure=Failure(**failure)))
    return w


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        # still opening: nothing is decided
        ([_client(False, False, first=errno.EMFILE, limit=errno.EMFILE)], None),
        # a limit errno stops at once, client side
        ([_client(True, True, first=errno.EMFILE, limit=errno.EMFILE)], ("nofile", "EMFILE")),
        # short of its share with only a port errno: ports
        ([_client(True, True, first=errno.EADDRNOTAVAIL)], ("ports", "EADDRNOTAVAIL")),
        # finished its share: an errno on the way names nothing
        ([_client(True, False, first=errno.EADDRNOTAVAIL)], None),
    ],
)
def test_client_limits(workers: list[WorkerState], expected: tuple[str, str] | None) -> None:
    stop = attribution.limit_stop(workers, [], server_mode=False)
    assert (None if stop is None else (stop.reason, stop.errno)) == expected


def test_a_later_progress_does_not_undo_the_final_one() -> None:
    """While holding, a worker keeps reporting; it had stopped short, and stays so."""
    w = _client(True, True, first=errno.EADDRNOTAVAIL)
    w.apply(ClientProgress(0, 50, failure=Failure(first=errno.EADDRNOTAVAIL)))
    stop = attribution.limit_stop([w], [], server_mode=False)
    assert stop is not None and stop.reason == "ports"


def test_a_full_sink_shard_names_the_task_limit_on_eagain() -> None:
    s = WorkerState("sink", 3)
    s.apply(SinkReady(3, 4242, 0))
    s.apply(SinkProgress(3, 296, full_errno=errno.EAGAIN))
    stop = attribution.limit_stop([], [s], server_mode=False, task_limit="cgroup_pids")
    assert stop == Stop(
        "cgroup_pids", errno="EAGAIN", side="server", detail="sink shard 3 (pid 4242) accepted 296"
    )


def test_server_mode_names_the_kind_of_failure() -> None:
    w = WorkerState("client", 0)
    watch = WatchSummary(held=238, verified=238, best=238, limit_kind="evicted")
    w.apply(ClientProgress(0, 227, final=True, watch=watch))
    stop = attribution.final_stop(
        None,
        600,
        227,
        [w],
        [],
        True,
        server_evidence=lambda s: Stop("server_evicted", side="server"),
    )
    assert stop.reason == "server_evicted" and stop.side == "server"


@pytest.mark.parametrize(
    "msg",
    [
        ClientStart(1, 2, 3, 4, 5),
        ClientProgress(
            2,
            10,
            final=True,
            errors={99: 3},
            failure=Failure(99, 99, 0),
            watch=WatchSummary(totals={"served": 4}),
            hist={12: 1},
            frontier=Frontier(opening_best=259, best=275, added=17, steps=16, one_at_a_time=True),
        ),
        SinkProgress(0, 7, full_errno=24, cpu=0.5),
        ChurnProgress(
            1,
            "client",
            5,
            (3, 2),
            {99: 1},
            {7: 5},
            True,
            0.25,
            ({7: 3}, {}),
        ),
    ],
)
def test_messages_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ran", "served", "says"),
    [
        (
            [Frontier(259, 275, 17, 16, True)],
            275,
            "added 17 connection(s) in 16 settled step(s), doubling after each step the "
            "server took whole, then one at a time after the step it refused in, until the "
            "server refused again: served at once 259 while it was still opening, 275 after",
        ),
        (
            [Frontier(10, 12, 3, 2, False, "held"), Frontier(9, 11, 4, 3, False, "time")],
            23,
            "added 7 connection(s) in 3 settled step(s), doubling after each step the server "
            "took whole, until the target's share was held or until its time was up: served "
            "at once 19 while it was still opening, 23 after",
        ),
        (
            [Frontier(25, 25, 1, 1)],
            25,
            "settled, then tried 1 more: the server refused again (served at once 25 while "
            "it was still opening, 25 after)",
        ),
        (
            [Frontier(30, 31, 3, 3, True, "held", "evictions")],
            31,
            "added 3 connection(s) one at a time, each settled and swept, until it held the "
            "most it had held again: served at once 30 while it was still opening, 31 after",
        ),
        (
            [Frontier(40, 40, ended="held")],
            40,
            "settled and swept again: nothing left to add (served at once 40 while it was "
            "still opening, 40 after)",
        ),
    ],
)
def test_the_result_says_what_the_frontier_did(
    ran: list[Frontier], served: int, says: str
) -> None:
    note = outcome.frontier_note(ran, served)
    assert note.startswith("after the first ") and note.endswith(says), note


def test_a_checked_server_reaches_the_target_only_with_what_it_served() -> None:
    """1,000 ESTABLISHED on the client side, 293 served: SYN cookies completed
    handshakes the server never accepted. The target was not reached; the server's
    silence is the stop."""
    w = WorkerState("client", 0)
    watch = WatchSummary(held=293, verified=293, best=293, totals={"served": 293, "silent": 707})
    w.apply(ClientProgress(0, 1000, final=True, watch=watch))
    seen: list[Stop] = []

    def evidence(stop: Stop) -> Stop:
        seen.append(stop)
        return Stop("server_nofile", side="server")

    stop = attribution.final_stop(
        None, 1000, 1000, [w], [], True, served=293, server_evidence=evidence
    )
    assert seen == [Stop("server", detail="silent", side="server")]
    assert stop.reason == "server_nofile"
    reached = attribution.final_stop(None, 1000, 1000, [w], [], True, served=1000)
    assert reached.reason == "target"


def test_a_checked_server_short_of_the_target_with_no_streak_is_still_the_server() -> None:
    """840 established, 293 served, the silent failures interleaved with successes
    (no streak of 16 to name): the connections' dominant failure names the stop."""
    w = WorkerState("client", 0)
    watch = WatchSummary(held=293, verified=293, best=293, totals={"served": 293, "silent": 547})
    w.apply(ClientProgress(0, 840, final=True, short=True, watch=watch))
    stop = attribution.final_stop(None, 1000, 840, [w], [], True, served=293)
    assert (stop.reason, stop.detail, stop.side) == ("server", "silent", "server")


@pytest.mark.parametrize("kind", ["evicted", "closed", "silent", "timeout", "refused", "reset"])
def test_a_server_of_unknown_kind_is_not_explained_as_nginx(kind: str) -> None:
    """The generic sentences name no server: a server's own words come only from its
    module of tcpceiling.servers, when the registry recognises it."""
    stop = evidence.attribute(kind, {}, evidence.ServerSample(), evidence.ServerSample())
    assert "nginx" not in stop.detail and "worker_connections" not in stop.detail
    assert "server" not in stop.evidence
