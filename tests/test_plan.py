"""The probe's layout arithmetic: how many sink shards and ports, and which
sources, for a given run, on the this-machine fixture (hard nofile 20000, ports
32768-60999: 28,232 usable). Pure arithmetic on a Plan; the real runs are in
test_probe.py."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tcpceiling.analysis.analyze import evaluate, read_snapshot
from tcpceiling.analysis.model import Endpoint
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import plan as pl
from tcpceiling.probe.run.config import ProbeConfig
from tests.conftest import FIXTURES

HARD = 20_000
USABLE = 60999 - 32768 + 1


def plan_for(expected: int) -> pl.Plan:
    base = FIXTURES / "this-machine"
    snap, _ = read_snapshot(Roots(procfs=base / "proc", sysfs=base / "sys"))
    assert snap.net.port_range == (32768, 60999)
    one = Endpoint("127.0.0.1", 32767)
    routes: dict[Endpoint, tuple[str | None, bool]] = {one: ("127.0.0.1", True)}
    return pl.Plan(HARD - pl.FD_MARGIN, 0, expected, 1, (one,), (), 0, snap, routes=routes)


@pytest.mark.parametrize("expected", [1, 100_000, 1_000_000, 2_000_000])
def test_owned_ports_even_shares_and_spread(expected: int) -> None:
    plan = plan_for(expected)
    plan = pl.owned_ports(ProbeConfig(), plan, HARD)
    ports = [e.port for e in plan.endpoints]
    assert plan.sources == ()  # no bind(): the kernel picks 127.0.0.1
    assert len(ports) == plan.sink_shards * plan.owned_ports  # every shard owns as many
    assert max(ports) < 32768 and min(ports) >= 1024  # outside the ephemeral range
    assert len(ports) >= math.ceil(pl.SPREAD * expected / USABLE)  # each pair <= 1/8 full
    assert plan.sink_capacity == HARD - pl.FD_MARGIN - plan.owned_ports
    assert plan.sink_shards * plan.sink_capacity >= expected * pl.OWNED_HEADROOM
    assert (plan.sink_shards - 1) * plan.sink_capacity < expected * pl.OWNED_HEADROOM


def test_one_million_is_51_shards_of_6_ports() -> None:
    plan = plan_for(1_000_000)
    plan = pl.owned_ports(ProbeConfig(), plan, HARD)
    assert (plan.sink_shards, plan.owned_ports, len(plan.endpoints)) == (53, 6, 318)


def test_shared_ports_pick_sources_and_headroom() -> None:
    plan = plan_for(1_000_000)
    plan = pl.shared_ports(ProbeConfig(sink_ports=1), plan, HARD)
    assert len(plan.sources) == math.ceil(pl.SPREAD * 1_000_000 / USABLE) == 284
    assert plan.sink_shards == math.ceil(1_000_000 * pl.SINK_HEADROOM / (HARD - pl.FD_MARGIN - 1))


def test_given_sources_are_kept() -> None:
    plan = replace(plan_for(1_000_000), sources=("127.0.0.9",))
    plan = pl.shared_ports(ProbeConfig(sources=("127.0.0.9",)), plan, HARD)
    assert plan.sources == ("127.0.0.9",)


def test_sink_ports_above_the_range_when_below_is_full() -> None:
    assert pl.sink_ports((1100, 60999), 200) == list(range(61000, 61200))
    assert pl.sink_ports((1100, 65500), 200) == list(range(65501, 65536))


@pytest.mark.parametrize(
    ("cfg", "watches"),
    [
        (ProbeConfig(), 0),  # hold: clients poll per batch, the sink never watches
        (ProbeConfig(wake_samples=10), 1),  # echo under epoll: the sink's end
        (ProbeConfig(wake_samples=10, io_model="threads"), 0),  # a thread per connection
    ],
)
def test_probe_scenario_counts_only_the_watches_it_makes(cfg: ProbeConfig, watches: int) -> None:
    """A held loopback connection costs two idle sockets and no epoll watch: the
    CI run that overestimated the guard's stop by 13 % counted two (416 B)."""
    plan = plan_for(10_000)
    res = evaluate(plan.snapshot, pl.client_scenario(cfg, plan, 1), plan.routes)
    mem = next(c for c in res.constraints if c.id == "memory")
    items = {i["item"]: i["count"] for i in mem.details["per_connection_breakdown"]}
    assert items["idle socket"] == 2
    assert items.get("epoll watch", 0) == watches
    ep = next(c for c in res.constraints if c.id == "epoll_watches")
    assert ep.per_connection == watches and (ep.ceiling is None) == (watches == 0)


def test_probe_layout_shares_port_buckets() -> None:
    """Over 318 sink ports the clients' local ports are shared: the prediction counts
    the range's bucket pairs once, not one pair per connection (7 MB, not 256 MB)."""
    plan = plan_for(1_000_000)
    plan = pl.owned_ports(ProbeConfig(), plan, HARD)
    res = evaluate(plan.snapshot, pl.client_scenario(ProbeConfig(), plan, 60), plan.routes)
    mem = next(c for c in res.constraints if c.id == "memory")
    rows = {r["item"]: r for r in mem.details["per_connection_breakdown"]}
    n = mem.ceiling
    assert n is not None and n > USABLE
    assert rows["client port buckets"]["count"] == pytest.approx(USABLE / n, abs=1e-3)
