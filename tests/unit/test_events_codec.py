"""The event schema and the one lossless payload codec."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import threading
import uuid

import pytest
from pydantic import BaseModel

from engine import EventType, PayloadEncodingError, TaskEvent
from engine.events import TERMINAL_TYPES, decode_payload, encode_payload, utcnow


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


class Point(BaseModel):
    x: int
    y: float


def through_json(value):
    text = json.dumps(encode_payload(value), allow_nan=False)
    return decode_payload(json.loads(text))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**70),
        1.5,
        "plain",
        "",
        "héllo wörld ✓",
        "nul\x00inside",
        "lone \udcff surrogate",
        [1, "a", None],
        {"a": 1, "b": [2, 3]},
        {1: "int key", (1, 2): "tuple key"},
        {"$te": "looks like a tag"},
        {"nested": {"$te": ["s", "x"]}},
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.date(2024, 2, 29),
        dt.time(23, 59, 1),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        decimal.Decimal("3.14159265358979323846"),
        b"\x00\xffbytes",
        bytearray(b"abc"),
        (1, "two", (3,)),
        (),
        {1, 2, 3},
        frozenset({"a"}),
        Colour.RED,
        Colour.BLUE,
        [{"deep": [(1, {b"k": dt.date(2020, 1, 1)})]}],
    ],
    ids=repr,
)
def test_value_survives_json_round_trip_with_its_type(value):
    decoded = through_json(value)

    assert decoded == value
    assert type(decoded) is type(value)


def test_pydantic_model_survives_round_trip():
    decoded = through_json(Point(x=1, y=2.5))

    assert decoded == Point(x=1, y=2.5)
    assert isinstance(decoded, Point)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_floats_survive_round_trip(value):
    assert through_json(value) == value


def test_nan_survives_round_trip():
    assert math.isnan(through_json(math.nan))


def test_plain_json_data_is_encoded_unchanged():
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "d"}}

    assert encode_payload(value) == value


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (threading.Lock(), "value"),
        ([1, object()], "value[1]"),
        ({"conn": threading.Lock()}, "value['conn']"),
    ],
)
def test_unencodable_value_raises_naming_its_path(value, path):
    with pytest.raises(PayloadEncodingError) as caught:
        encode_payload(value)

    assert caught.value.path == path
    assert path in str(caught.value)
    assert isinstance(caught.value, TypeError)


def test_unencodable_value_error_uses_given_path():
    with pytest.raises(PayloadEncodingError, match="Argument 'conn'"):
        encode_payload(threading.Lock(), "Argument 'conn'")


def test_encoded_payload_is_json_without_nan():
    encoded = encode_payload({"f": math.nan, "s": "\x00", "b": b"x"})

    json.dumps(encoded, allow_nan=False)


def test_event_types_are_the_log_strings():
    assert [t.value for t in EventType] == [
        "queued",
        "started",
        "progress",
        "completed",
        "failed",
        "cancelled",
    ]
    assert TERMINAL_TYPES == {
        EventType.COMPLETED,
        EventType.FAILED,
        EventType.CANCELLED,
    }


def test_task_event_build_and_with_position():
    at = utcnow()
    event = TaskEvent.build(None, "t1", 1, EventType.QUEUED, at, {"a": 1})

    placed = event.with_position(7)

    assert event.position is None
    assert placed.position == 7
    assert (placed.task_id, placed.version, placed.type) == ("t1", 1, EventType.QUEUED)
    assert placed.at == at
    assert placed.data == {"a": 1}


def test_task_event_is_frozen():
    event = TaskEvent.build(None, "t1", 1, EventType.QUEUED, utcnow(), {})

    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        event.version = 2


def test_utcnow_is_timezone_aware_utc():
    now = utcnow()

    assert now.utcoffset() == dt.timedelta(0)
