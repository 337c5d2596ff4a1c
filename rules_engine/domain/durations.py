"""Summaries of durations (whole seconds) that add up: a count, a sum, the report's fixed
distribution buckets, and a logarithmic quantile sketch (DDSketch-style) whose medians,
p90s and maxima are within ``RELATIVE_ERROR`` of the exact nearest-rank values.

The sketch's buckets are sets of whole seconds: bucket 0 holds 0 s; bucket ``k`` holds the
integers in one interval ``(gamma**(j-1), gamma**j]``, with ``gamma = (1 + a) / (1 - a)``;
intervals holding no integer are left out, so every second below about 50 is a bucket of its
own (and exact). A bucket's value is ``2 * gamma**j / (gamma + 1)`` kept within its integers,
at most ``a`` away from any of them, relatively. Summaries merge by adding their counts (and
subtract the same way), so a report over many days merges per-day summaries.
"""
from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import sys
from array import array
from dataclasses import dataclass, field

Buckets = tuple[tuple[str, float], ...]

# Resolution-time histogram buckets: (label, upper bound in seconds, exclusive).
BUCKETS: Buckets = (
    ("< 5 min", 300), ("5-15 min", 900), ("15-30 min", 1800), ("30-60 min", 3600),
    ("1-2 h", 7200), ("2-4 h", 14400), ("4-8 h", 28800), ("8-24 h", 86400),
    ("1-3 days", 259200), ("> 3 days", float("inf")),
)

# First-response buckets: most first replies come within minutes, so finer at the start.
FIRST_RESPONSE_BUCKETS: Buckets = (
    ("< 1 min", 60), ("1-5 min", 300), ("5-15 min", 900), ("15-30 min", 1800),
    ("30-60 min", 3600), ("1-2 h", 7200), ("2-4 h", 14400), ("4-8 h", 28800),
    ("8-24 h", 86400), ("> 1 day", float("inf")),
)

RELATIVE_ERROR = 0.01  # of the sketch's medians, p90s and maxima
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LARGEST = 2 ** 53  # seconds beyond any stored duration


def _sketch_buckets() -> tuple[list[int], list[float]]:
    """(the largest integer of each bucket, its value), bucket 0 being exactly zero."""
    uppers, values = [0], [0.0]
    for j in itertools.count():
        if uppers[-1] >= _LARGEST:
            return uppers, values
        upper = math.floor(GAMMA ** j)
        if upper > uppers[-1]:
            lowest = uppers[-1] + 1
            values.append(min(max(2 * GAMMA ** j / (GAMMA + 1), lowest), upper))
            uppers.append(upper)
    raise AssertionError("unreachable")


_UPPERS, _VALUES = _sketch_buckets()
SKETCH_SIZE = len(_UPPERS)


def sketch_index(seconds: int) -> int:
    """The sketch bucket of a duration (negative durations count as 0 s)."""
    return bisect.bisect_left(_UPPERS, max(0, seconds))


@functools.cache
def _bounds(buckets: Buckets) -> list[float]:
    return [bound for _, bound in buckets[:-1]]


def bucket_index(seconds: int, buckets: Buckets) -> int:
    """The distribution bucket of a duration (the first whose bound exceeds it)."""
    return bisect.bisect_right(_bounds(buckets), seconds)


def _encode(counts: list[int]) -> bytes:
    packed = array("i", counts)
    if sys.byteorder == "big":  # stored little-endian, whatever the machine
        packed.byteswap()
    return packed.tobytes()


def _decode(data: bytes) -> array[int]:
    packed = array("i")
    packed.frombytes(data)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed


def _unpack(packed: int, size: int) -> array[int]:
    """Counts packed by ``int.from_bytes`` of stored little-endian 32-bit counts."""
    return _decode(packed.to_bytes(4 * size, "little"))


@dataclass
class Summary:
    """Durations summarised: count, sum, per distribution bucket, per sketch bucket. Only the
    sketch's buckets in [``low``, ``high``) may be non-zero.

    Stored summaries are merged as integers: their little-endian 32-bit counts read as one
    number each (``int.from_bytes``), shifted to their offset and added, which adds every
    bucket at once (a bucket's count never reaches 2**32, so none carries into the next);
    the counts are unpacked once, when read."""

    size: int  # how many distribution buckets
    count: int = 0
    seconds: int = 0
    low: int = SKETCH_SIZE
    high: int = 0
    _buckets: list[int] = field(default_factory=list)
    _sketch: list[int] = field(default_factory=lambda: [0] * SKETCH_SIZE)
    _packed_buckets: int = 0
    _packed_sketch: int = 0

    def __post_init__(self) -> None:
        self._buckets = [0] * self.size

    def add(self, seconds: int, distribution: Buckets, times: int = 1) -> None:
        """Count a duration ``times`` times."""
        self.add_indexed(seconds, bucket_index(seconds, distribution), sketch_index(seconds),
                         times)

    def add_indexed(self, seconds: int, bucket: int, index: int, times: int = 1) -> None:
        """``add`` for a duration whose distribution bucket and sketch bucket are known."""
        self.count += times
        self.seconds += seconds * times
        self._buckets[bucket] += times
        self._sketch[index] += times
        if index < self.low:
            self.low = index
        if index >= self.high:
            self.high = index + 1

    def merge_stored(self, count: int, seconds: int, buckets: bytes, offset: int,
                     sketch: bytes) -> None:
        """Add a summary kept by ``stored_summary``."""
        self.count += count
        self.seconds += seconds
        self._packed_buckets += int.from_bytes(buckets, "little")
        if sketch:
            self._packed_sketch += int.from_bytes(sketch, "little") << (32 * offset)
            self.low, self.high = min(self.low, offset), max(self.high, offset + len(sketch) // 4)

    def merge(self, other: Summary) -> None:
        """Add another summary to this one."""
        self.count += other.count
        self.seconds += other.seconds
        self._buckets[:] = map(operator.add, self._buckets, other.buckets)
        low, high = other.low, other.high
        if low < high:
            self._sketch[low:high] = map(operator.add, self._sketch[low:high],
                                         other.sketch[low:high])
            self.low, self.high = min(self.low, low), max(self.high, high)

    @property
    def buckets(self) -> list[int]:
        """How many durations fall in each distribution bucket."""
        if self._packed_buckets:
            self._buckets[:] = map(operator.add, self._buckets,
                                   _unpack(self._packed_buckets, self.size))
            self._packed_buckets = 0
        return self._buckets

    @property
    def sketch(self) -> list[int]:
        """How many durations fall in each sketch bucket."""
        if self._packed_sketch:  # every packed count lies in [low, high)
            low, high = self.low, self.high
            self._sketch[low:high] = map(operator.add, self._sketch[low:high],
                                         _unpack(self._packed_sketch >> (32 * low), high - low))
            self._packed_sketch = 0
        return self._sketch

    @property
    def mean(self) -> float | None:
        """The mean duration; None when empty."""
        return self.seconds / self.count if self.count else None

    def quantile(self, p: float) -> float | None:
        """The nearest-rank ``p`` quantile (the value at rank ``ceil(p * count)``), within
        ``RELATIVE_ERROR``; None when empty."""
        if self.count <= 0:
            return None
        ranks = list(itertools.accumulate(self.sketch[self.low:self.high]))
        return _VALUES[min(self.low + bisect.bisect_left(ranks, p * self.count), self.high - 1)]

    @property
    def maximum(self) -> float | None:
        """The largest duration, within ``RELATIVE_ERROR``; None when empty."""
        if self.count <= 0:
            return None
        sketch = self.sketch
        last = next(index for index in range(self.high - 1, self.low - 1, -1) if sketch[index])
        return _VALUES[last]


def stored_summary(summary: Summary) -> tuple[bytes, int, bytes]:
    """(distribution counts, the first sketch bucket kept, the sketch's counts from there up
    to the last non-empty one): a summary as a rollup row keeps it."""
    sketch = summary.sketch
    nonzero = [index for index in range(summary.low, summary.high) if sketch[index]]
    first, last = (nonzero[0], nonzero[-1] + 1) if nonzero else (0, 0)
    return _encode(summary.buckets), first, _encode(sketch[first:last])


def add_to_stored(buckets: bytes, offset: int, sketch: bytes, bucket_changes: list[int],
                  sketch_changes: dict[int, int]) -> tuple[bytes, int, bytes]:
    """A stored summary's distribution and sketch with a few buckets' counts changed (the
    write path: the run grows at its ends, and is trimmed only when counts were taken out).
    ``sketch_changes`` maps sketch buckets to non-zero changes; it is never empty."""
    counts = list(map(operator.add, _decode(buckets), bucket_changes))
    run = _decode(sketch).tolist()
    if not run:
        offset = min(sketch_changes)
    low = min(offset, *sketch_changes)
    high = max(offset + len(run), *(index + 1 for index in sketch_changes))
    run = [0] * (offset - low) + run + [0] * (high - offset - len(run))
    for index, change in sketch_changes.items():
        run[index - low] += change
    if min(sketch_changes.values()) < 0:
        kept = [index for index, count in enumerate(run) if count]
        if not kept:
            return _encode(counts), 0, b""
        low, run = low + kept[0], run[kept[0]:kept[-1] + 1]
    return _encode(counts), low, _encode(run)
