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
    # 2520.6 + 862.3 + 195.0 + 195.0 + LSM fallbacks 32 + 24 (shared brief §3.1: 3,829)
    assert round(item.bytes) == 3829


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
