"""Readers pointed at small trees built in tmp_path (the fixture trees in fixtures/
are copies, where sysfs symlinks became directories)."""

from __future__ import annotations

from pathlib import Path

from tcpceiling.host.read import SOCKET_SLABS, read_slab_links, read_slabs
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import measure

MEMINFO = "MemTotal: 100 kB\nMemFree: 1 kB\nMemAvailable: 50 kB\nSlab: 7 kB\n"
SLABINFO = (
    "slabinfo - version: 2.1\n"
    "TCP 26 26 2368 13 8 : tunables 0 0 0 : slabdata 2 2 0\n"
    "eventpoll_epi 405 512 128 32 1 : tunables 0 0 0 : slabdata 16 16 0\n"
)


def merged_tree(root: Path) -> Roots:
    """sysfs as SLUB shows a merge: two names linking to one cache directory."""
    slab = root / "sys" / "kernel" / "slab"
    (slab / ":A-0000128").mkdir(parents=True)
    (slab / "TCP").mkdir()
    for name in ("eventpoll_epi", "tcp_bind_bucket"):
        (slab / name).symlink_to(":A-0000128")
    proc = root / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(
        "MemTotal: 100 kB\nMemFree: 1 kB\nMemAvailable: 50 kB\nSlab: 7 kB\n"
    )
    (proc / "slabinfo").write_text(SLABINFO)
    return Roots(procfs=proc, sysfs=root / "sys")


def test_read_slab_links(tmp_path: Path) -> None:
    links = read_slab_links(merged_tree(tmp_path))
    assert set(links) == set(SOCKET_SLABS)
    assert links["eventpoll_epi"] == links["tcp_bind_bucket"] == ":A-0000128"
    assert links["TCP"] is None  # a cache of its own
    assert links["tcp_bind2_bucket"] is None  # absent


def test_sample_names_what_a_merged_cache_carries(tmp_path: Path) -> None:
    roots = merged_tree(tmp_path)
    before = measure.Sample.take(roots)
    assert before.aliases == {
        "eventpoll_epi": ("tcp_bind_bucket",),
        "tcp_bind_bucket": ("eventpoll_epi",),
    }
    grown = SLABINFO.replace("eventpoll_epi 405", "eventpoll_epi 1405")
    (roots.procfs / "slabinfo").write_text(grown)
    after = measure.Sample.take(roots)
    pc = measure.per_connection(before, after, 1000, measure.Usage(0.0, 0), 0, None)
    assert pc.slab_breakdown == {"eventpoll_epi": 128.0}
    assert pc.slab_shared == {"eventpoll_epi": ["tcp_bind_bucket"]}  # only what is shown


def test_read_slabs_says_which_caches_count_as_reclaimable(tmp_path: Path) -> None:
    """reclaim_account is SLAB_RECLAIM_ACCOUNT: 1 for dentry, 0 for TCP; a cache
    read from slabinfo alone has no flag (None)."""
    roots = merged_tree(tmp_path)
    slab = tmp_path / "sys" / "kernel" / "slab"
    for name, size, per, flag in (("dentry", 192, 21, "1"), ("TCP", 2368, 13, "0")):
        (slab / name).mkdir(exist_ok=True)
        for f, v in (("order", "0"), ("objs_per_slab", str(per)), ("slab_size", str(size)),
                     ("reclaim_account", flag)):  # fmt: skip
            (slab / name / f).write_text(v + "\n")
    slabs = read_slabs(roots)
    assert (slabs["dentry"].reclaimable, slabs["TCP"].reclaimable) == (True, False)
    assert slabs["eventpoll_epi"].reclaimable is None  # from slabinfo
