"""The memory guard's meter (probe/run/slabmeter.py): arithmetic on literal numbers."""

from __future__ import annotations

import pytest

from tcpceiling.host.parse import Meminfo, SlabCache, parse_meminfo
from tcpceiling.probe.run import slabmeter
from tcpceiling.probe.run.slabmeter import SlabMeter

KIB = 1024

#: this VM's geometry (/sys/kernel/slab, Linux 6.18): TCP 2,521 + filp 195 + LSM
#: blobs 32 + 24 unreclaimable; sock_inode_cache 862 + dentry 195 reclaimable
SLABS = {
    "TCP": SlabCache("TCP", 2368, 13, 8, reclaimable=False),
    "sock_inode_cache": SlabCache("sock_inode_cache", 832, 19, 4, reclaimable=True),
    "filp": SlabCache("filp", 192, 21, 1, reclaimable=False),
    "dentry": SlabCache("dentry", 192, 21, 1, reclaimable=True),
    "lsm_inode_cache": SlabCache("lsm_inode_cache", 32, 128, 1, reclaimable=False),
    "lsm_file_cache": SlabCache("lsm_file_cache", 24, 170, 1, reclaimable=False),
}


def test_one_sockets_share_is_its_inode_and_dentry_over_the_rest() -> None:
    share = slabmeter.socket_share(SLABS)
    assert share == pytest.approx((862.3 + 195.0) / (2520.6 + 195.0 + 32.0 + 24.1), rel=1e-3)


@pytest.mark.parametrize(
    "slabs",
    [
        {k: v for k, v in SLABS.items() if k != "dentry"},  # a cache not read
        {**SLABS, "dentry": SlabCache("dentry", 192, 21, 1)},  # slabinfo: no flag
    ],
)
def test_no_share_without_every_cache_flag(slabs: dict[str, SlabCache]) -> None:
    assert slabmeter.socket_share(slabs) is None


# (SUnreclaim growth, SReclaimable growth, share) -> (grown, foreign)
@pytest.mark.parametrize(
    ("du", "dr", "share", "grown", "foreign"),
    [
        (1000, 380, 0.4, 1380, 0),  # the sockets' own: all counted
        (1000, 1900, 0.4, 1400, 1500),  # an agent's proc inodes: past the share left out
        (1000, -500, 0.4, 500, 0),  # another's cache freed: the host gained room
        (1000, 1900, None, 2900, 0),  # flags unknown: Slab whole
        (-200, 300, 0.4, -200, 300),  # nothing of ours grew: none of it is ours
    ],
)
def test_grown_counts_reclaimable_up_to_the_share(
    du: int, dr: int, share: float | None, grown: int, foreign: int
) -> None:
    m = SlabMeter(unreclaimable=50_000, reclaimable=20_000, room=1400, share=share)
    now = (50_000 + du, 20_000 + dr)
    assert (m.grown(*now), m.foreign(*now)) == (grown, foreign)
    assert m.over(*now) == (grown > 1400)


MEMINFO = "MemTotal: 100 kB\nMemFree: 1 kB\nMemAvailable: 50 kB\nSlab: 7 kB\n"


def test_start_reads_the_split_and_gives_room_above_the_floor() -> None:
    m = parse_meminfo(MEMINFO + "SReclaimable: 2 kB\nSUnreclaim: 5 kB\n")
    meter = slabmeter.start(m, 10 * KIB, SLABS)
    assert (meter.unreclaimable, meter.reclaimable, meter.room) == (5 * KIB, 2 * KIB, 40 * KIB)
    assert meter.fields == (b"SUnreclaim:", b"SReclaimable:") and meter.share is not None


def test_without_the_split_slab_is_metered_whole() -> None:
    m = parse_meminfo(MEMINFO)
    meter = slabmeter.start(m, 0, SLABS)
    assert (meter.unreclaimable, meter.share, meter.fields) == (7 * KIB, None, (b"Slab:",))
    assert meter.grown(9 * KIB) == 2 * KIB


def test_growth_between_two_readings() -> None:
    a = Meminfo(0, 0, 0, s_reclaimable=10_000, s_unreclaim=50_000)
    b = Meminfo(0, 0, 0, s_reclaimable=13_000, s_unreclaim=55_000)
    assert slabmeter.growth(a, b, 0.4) == (7_000, 1_000)
    assert slabmeter.growth(a, b, None) == (8_000, 0)
