"""``OwnPositions``: the ranges of positions a store object wrote itself."""

from __future__ import annotations

from engine.store.pg_positions import OwnPositions


def test_consecutive_batches_merge_and_cover_their_span():
    own = OwnPositions()

    own.add([3, 4, 5])
    own.add([6, 7])
    own.add([10])

    assert own.covers(2, 7)
    assert not own.covers(2, 8)
    assert not own.covers(7, 10)
    assert 4 in own and 10 in own and 8 not in own


def test_scattered_positions_and_forgetting():
    own = OwnPositions()

    own.add([9, 2])
    own.add([5, 4, 3])
    assert own.covers(1, 5)
    own.forget_through(5)

    assert 2 not in own and 5 not in own
    assert 9 in own
    assert own.covers(8, 9)
    assert not own.covers(5, 9)
