"""A mergeable latency histogram: log-spaced buckets, so shards add bucket by bucket
and percentiles come out within one bucket width (~5 %)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GROWTH = 1.05
MIN_US = 1.0
BUCKETS = int(math.log(1e8 / MIN_US, GROWTH)) + 2  # 1 µs .. 100 s


def bucket(us: float) -> int:
    if us <= MIN_US:
        return 0
    return min(BUCKETS - 1, int(math.log(us / MIN_US, GROWTH)) + 1)


def upper(index: int) -> float:
    return float(MIN_US * GROWTH**index)


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, us: float, count: int = 1) -> None:
        """`count` connections that each took `us` (a batch's share of its time)."""
        b = bucket(us)
        self.counts[b] = self.counts.get(b, 0) + count

    def merge(self, other: dict[int, int]) -> None:
        for b, n in other.items():
            self.counts[int(b)] = self.counts.get(int(b), 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0-100) in µs, as the upper edge of its bucket."""
        total = self.total
        if not total:
            return None
        rank, seen = math.ceil(total * p / 100), 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return round(upper(b), 1)
        return round(upper(max(self.counts)), 1)

    def buckets(self) -> tuple[tuple[float, int], ...]:
        """(upper edge in µs, count) of every bucket that holds anything, in order:
        the distribution the percentiles come from (the report draws it)."""
        return tuple((round(upper(b), 1), self.counts[b]) for b in sorted(self.counts))

    def summary(self) -> dict[str, float | None]:
        return {f"p{p}": self.percentile(p) for p in (50, 95, 99)}
