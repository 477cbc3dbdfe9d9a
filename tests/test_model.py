"""Pure arithmetic and input validation of the analysis model."""

from __future__ import annotations

import pytest

from tcpceiling.analysis import costs
from tcpceiling.analysis.limits import fit
from tcpceiling.analysis.model import Endpoint, Scenario, expand_sources, parse_endpoint
from tcpceiling.errors import InputError
from tcpceiling.host.parse import SlabCache


@pytest.mark.parametrize(
    ("cap", "used", "per", "expected"),
    [(20000, 8, 1, 19992), (100, 0, 3, 33), (10, 20, 1, 0), (24e9, 0, 4050.1, 5925779)],
)
def test_fit(cap: float, used: float, per: float, expected: int) -> None:
    assert fit(cap, used, per) == expected


def test_idle_socket_cost_from_slab_geometry() -> None:
    slabs = {
        "TCP": SlabCache("TCP", 2368, 13, 8),
        "sock_inode_cache": SlabCache("sock_inode_cache", 832, 19, 4),
        "filp": SlabCache("filp", 192, 21, 1),
        "dentry": SlabCache("dentry", 192, 21, 1),
    }
    item = costs.idle_socket(slabs, ipv6=False)
    # 2520.6 + 862.3 + 195.0 + 195.0 + LSM fallbacks 32 + 24 (docs/limits.md §4: 3,829)
    assert round(item.bytes) == 3829


P = 28_232  # this machine's ephemeral range, 32768-60999


@pytest.mark.parametrize(
    ("pool", "n", "expected"),
    [
        (costs.PortPool(P, 1, 1), 20_000, 20_000),  # one destination: a port each
        (costs.PortPool(P, 2, 1), 50_000, 50_000),
        (costs.PortPool(P, 1, 2), 2 * P, P),  # two destinations, every port in use twice
        (costs.PortPool(P, 1, 30), 100_000, 27_581),  # P (1 - (1 - 100000/(30 P))^30)
        (costs.PortPool(P, 1, 318), 1_000_000, P),  # the probe at 1M: the whole range
    ],
)
def test_port_pool_pairs(pool: costs.PortPool, n: int, expected: int) -> None:
    assert round(pool.pairs(n)) == expected


def test_fit_shares_port_buckets() -> None:
    """With one destination a connection costs its own bucket pair; with many, the
    pairs are shared, so more fit, and the fit is the largest n within the budget."""
    items = (
        costs.CostItem("idle socket", 3829.0, 2, "x"),
        costs.CostItem(costs.PORT_BUCKETS, 256.0, 1, "x"),
    )
    budget = 8e9
    one = costs.ConnectionCost(items, costs.PortPool(P, 1, 1))
    many = costs.ConnectionCost(items, costs.PortPool(P, 1, 318))
    assert one.fit(budget) == int(budget // 7914) == fit(budget, 0, 7914)
    n = many.fit(budget)
    assert many.bytes_for(n) <= budget < many.bytes_for(n + 1)
    assert n == int((budget - P * 256) // 7658)  # the range's buckets, then sockets only
    assert costs.ConnectionCost(items).fit(0) == 0


def test_buffered_cost_is_page_rounded() -> None:
    assert costs.buffered(1).bytes == 4096
    assert costs.buffered(4097).bytes == 8192
    assert costs.buffered(0).bytes == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", Endpoint("127.0.0.1", 9000)),
        ("[::1]:80", Endpoint("::1", 80)),
        ("localhost:6379", Endpoint("localhost", 6379)),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["nonsense", "host:0", "host:70000", ":80", "1.2.3.4:x"])
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_endpoint(text)


def test_expand_sources() -> None:
    assert expand_sources(("127.0.0.2/31",)) == ("127.0.0.2", "127.0.0.3")
    assert len(expand_sources(("10.0.0.0/24",))) == 254
    with pytest.raises(InputError):
        expand_sources(("not-an-ip",))


def test_scenario_validates() -> None:
    with pytest.raises(InputError):
        Scenario(role="server", processes=0)
