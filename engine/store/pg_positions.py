"""The positions a store object wrote itself, as sorted ranges, so that a
tail asked to skip them neither decodes them nor, when nothing else was
written, reads the log at all. This module imports nothing of ours.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["OwnPositions"]


class OwnPositions:
    """Disjoint ``[low, high]`` ranges of positions, sorted by ``low``.

    An append takes consecutive positions (the commit-order lock keeps any
    other writer out of the sequence meanwhile), so one batch is one range.
    """

    def __init__(self) -> None:
        self._lows: list[int] = []
        self._highs: list[int] = []

    def add(self, positions: Sequence[int]) -> None:
        """Remember the positions of one append or claim, in any order."""
        if not positions:
            return
        low, high = min(positions), max(positions)
        if high - low + 1 != len(positions):
            for position in positions:
                self._insert(position, position)
            return
        self._insert(low, high)

    def _insert(self, low: int, high: int) -> None:
        index = bisect.bisect(self._lows, low)
        if index and self._highs[index - 1] + 1 == low:
            self._highs[index - 1] = high  # the common case: right after
            return
        self._lows.insert(index, low)
        self._highs.insert(index, high)

    def __contains__(self, position: int) -> bool:
        index = bisect.bisect(self._lows, position) - 1
        return index >= 0 and position <= self._highs[index]

    def covers(self, after: int, upto: int) -> bool:
        """Whether every position in ``(after, upto]`` is one of ours."""
        position = after + 1
        while position <= upto:
            index = bisect.bisect(self._lows, position) - 1
            if index < 0 or self._highs[index] < position:
                return False
            position = self._highs[index] + 1
        return True

    def forget_through(self, position: int) -> None:
        """Drop the ranges that end at or before ``position``."""
        count = bisect.bisect(self._highs, position)
        if count:
            del self._lows[:count]
            del self._highs[:count]
