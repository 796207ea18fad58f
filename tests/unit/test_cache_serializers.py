"""Value codecs: every supported type comes back as itself, or is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
import zoneinfo
from typing import Any

import pytest

from engine.cache import JsonSerializer, MsgPackSerializer, SerializationError

SERIALIZERS = [MsgPackSerializer(), JsonSerializer()]

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    2**200,
    -(2**200),
    1.5,
    float("inf"),
    "text with \x00 and \ud800",
    b"\x00bytes",
    bytearray(b"mutable"),
    [1, [2, [3]]],
    (1, (2, "x")),
    (),
    {"a": 1, "__t": "not a tag"},
    {1: "int key", (1, 2): "tuple key", None: "none key", b"k": "bytes key"},
    {1, 2, 3},
    frozenset({(1, 2), "x"}),
    dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Oslo")),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 1, tzinfo=dt.UTC),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    uuid.UUID("b4fd93c8-57e3-4fea-bcc6-04be7499b28f"),
    decimal.Decimal("1.10"),
    decimal.Decimal("-Infinity"),
    complex(1, -2),
    {"nested": [({"deep": {dt.date(2024, 1, 1)}},), [bytearray(b"x")]]},
]


def same(left: Any, right: Any) -> bool:
    """Equal values of identical types, all the way down."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(
            same(v, right[k]) for k, v in left.items()
        )
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dt.datetime | dt.time):
        return left == right and left.tzinfo == right.tzinfo and left.fold == right.fold
    return left == right


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=repr)
def test_values_come_back_with_their_types(serializer, value):
    assert same(serializer.loads(serializer.dumps(value)), value)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
def test_nan_comes_back_as_nan(serializer):
    result = serializer.loads(serializer.dumps([float("nan")]))

    assert math.isnan(result[0])


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Text(str):
    pass


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
@pytest.mark.parametrize(
    "value",
    [
        object(),
        Colour.RED,
        Point(1),
        Text("x"),
        [memoryview(b"x")],
        {"k": {1: Point(2)}},
    ],
    ids=repr,
)
def test_unsupported_types_are_refused_with_their_name(serializer, value):
    with pytest.raises(SerializationError, match="cannot be cached"):
        serializer.dumps(value)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
def test_a_self_referencing_value_is_refused(serializer):
    loop: list[Any] = []
    loop.append({"again": loop})

    with pytest.raises(SerializationError, match="refers to itself"):
        serializer.dumps(loop)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
def test_corrupt_bytes_raise_a_serialization_error(serializer):
    with pytest.raises(SerializationError, match="cannot be decoded"):
        serializer.loads(b"\xc1\xff{")


def test_an_unknown_msgpack_extension_is_reported():
    import msgpack

    data = msgpack.packb(msgpack.ExtType(99, b"\x01"))

    with pytest.raises(SerializationError, match="99"):
        MsgPackSerializer().loads(data)
