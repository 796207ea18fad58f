"""The event schema of the log: :class:`TaskEvent`, :class:`EventType` and
the one payload codec every store uses.

This module depends on nothing else of ours except the exceptions, so that
``projections`` can import it without pulling in the runtime.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import decimal
import enum
import importlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from engine.exceptions import PayloadEncodingError

__all__ = [
    "EventType",
    "TaskEvent",
    "TERMINAL_TYPES",
    "decode_payload",
    "encode_payload",
    "parse_payload",
    "is_plain",
    "plain_json",
    "utcnow",
]


class EventType(enum.StrEnum):
    """The transitions a task goes through, as written in the log."""

    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_TYPES = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


class TaskEvent(BaseModel):
    """One immutable entry of the log.

    ``position`` is the global order of the log, assigned by the store in
    commit order (``None`` until the event is durable); ``version`` counts the
    events of one task from 1.
    """

    model_config = ConfigDict(frozen=True)

    position: int | None
    task_id: str
    version: int
    type: EventType
    at: dt.datetime
    data: dict[str, Any]

    @classmethod
    def build(
        cls,
        position: int | None,
        task_id: str,
        version: int,
        type: EventType,  # noqa: A002 - the column's name
        at: dt.datetime,
        data: dict[str, Any],
    ) -> TaskEvent:
        """Make an event from trusted parts without validation (hot path)."""
        event = cls.__new__(cls)
        _set_attr(
            event,
            "__dict__",
            {
                "position": position,
                "task_id": task_id,
                "version": version,
                "type": type,
                "at": at,
                "data": data,
            },
        )
        _set_attr(event, "__pydantic_fields_set__", _EVENT_FIELDS)
        _set_attr(event, "__pydantic_extra__", None)
        _set_attr(event, "__pydantic_private__", None)
        return event

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> TaskEvent:
        """A copy, with ``update`` applied (unvalidated, as pydantic's own)."""
        d = copied_fields(self, update, deep)
        return TaskEvent.build(
            d["position"], d["task_id"], d["version"], d["type"], d["at"], d["data"]
        )

    def with_position(self, position: int) -> TaskEvent:
        """A copy of this event carrying its log position."""
        d = self.__dict__
        return TaskEvent.build(
            position, d["task_id"], d["version"], d["type"], d["at"], d["data"]
        )


_EVENT_FIELDS = frozenset(TaskEvent.model_fields)


def copied_fields(
    model: BaseModel, update: Mapping[str, Any] | None, deep: bool
) -> dict[str, Any]:
    """A model's field values for ``model_copy``: copied (deeply when
    asked), then ``update`` applied. Models built without validation share
    one frozen ``fields_set``, which pydantic's own ``model_copy`` cannot
    update."""
    values = copy.deepcopy(model.__dict__) if deep else model.__dict__.copy()
    if update:
        values.update(update)
    return values


_set_attr = object.__setattr__


_now = dt.datetime.now
_UTC = dt.UTC


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return _now(_UTC)


# The codec.
#
# Payloads are JSON. A value JSON cannot carry is written as a one-key object
# ``{"$te": [tag, body]}``; a plain dict that happens to use the key "$te" is
# itself wrapped, so decoding is unambiguous. Strings holding NUL or lone
# surrogates are wrapped too, because PostgreSQL's jsonb rejects both
# (https://www.postgresql.org/docs/current/datatype-json.html).

_TAG = "$te"
_Path = str


def encode_payload(value: Any, path: _Path = "value") -> Any:
    """Turn ``value`` into JSON-compatible data that decodes back to it.

    Raises:
        PayloadEncodingError: naming ``path`` when a part cannot be encoded.
    """
    try:
        return _encode(value, path)
    except RecursionError:
        raise PayloadEncodingError(
            f"{path} is nested too deeply, or contains itself, to be written "
            "to the event log; pass a shallower value, or use the memory store.",
            path=path,
        ) from None


def _encode(value: Any, path: _Path) -> Any:
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is str:
        return value if _plain_text(value) else _wrap("s", _text_body(value))
    if kind is float:
        return value if _plain_float(value) else _wrap("f", repr(value))
    if kind is list:
        return [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is dict:
        return _encode_dict(value, path)
    return _encode_other(value, path)


def _plain_float(value: float) -> bool:
    # A float whose JSON number reads back as the same float from every
    # store. PostgreSQL's jsonb keeps a number's digits, not its type: a
    # float of 1e16 or more is written with an exponent and read back as an
    # int, and -0.0 as 0.0; NaN and the infinities have no JSON form. All of
    # these are wrapped (tag "f").
    if -1e16 < value < 1e16:
        return value != 0.0 or math.copysign(1.0, value) > 0.0
    return False


def is_plain(value: Any) -> bool:
    """Whether ``value`` needs nothing of the codec: dicts and lists of
    ASCII strings without NUL, ints, floats JSON keeps (see
    :func:`_plain_float`), bools and None, with no key ``"$te"``.
    :func:`encode_payload` returns such a value unchanged, so this is its
    fast path (about five times cheaper: no copy, no path)."""
    try:
        return _is_plain(value)
    except RecursionError:  # nested too deeply, or containing itself
        return False


# Deeper values take the codec's path, which refuses what no store could
# write (the stores' JSON writers, and the codec itself, have depth limits).
_PLAIN_DEPTH = 200


def _is_plain(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind is str:
        return value.isascii() and "\x00" not in value
    if kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return _plain_float(value)
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _is_plain(key) or key == _TAG:
                return False
            if not _is_plain(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_is_plain(item, depth + 1) for item in value)
    return False


def plain_json(data: dict[str, Any]) -> str | None:
    """The compact JSON text of a payload when :func:`is_plain` holds (the
    same text the codec's output gives), else None: use the codec."""
    return _dumps(data) if is_plain(data) else None


_json_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def json_text(value: Any) -> str:
    """Compact JSON text of a value the codec produced (or a plain one).

    orjson writes it several times faster than json; an integer beyond 64
    bits, which orjson refuses, goes through json.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _json_dumps(value)


_dumps = json_text


def _plain_text(text: str) -> bool:
    if text.isascii():
        return "\x00" not in text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _text_body(text: str) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    return base64.b64encode(raw).decode("ascii")


def _wrap(tag: str, body: Any) -> dict[str, Any]:
    return {_TAG: [tag, body]}


def _encode_dict(value: dict[Any, Any], path: _Path) -> Any:
    if all(type(k) is str and _plain_text(k) for k in value) and _TAG not in value:
        return {k: _encode(v, f"{path}[{k!r}]") for k, v in value.items()}
    pairs = [
        [_encode(k, f"{path} key"), _encode(v, f"{path}[{k!r}]")]
        for k, v in value.items()
    ]
    return _wrap("d", pairs)


def _encode_other(value: Any, path: _Path) -> Any:
    if isinstance(value, enum.Enum):
        return _wrap("e", [_class_path(type(value)), _encode(value.value, path)])
    if isinstance(value, dt.datetime):
        return _wrap("dt", value.isoformat())
    if isinstance(value, dt.date):
        return _wrap("da", value.isoformat())
    if isinstance(value, dt.time):
        return _wrap("ti", value.isoformat())
    if isinstance(value, dt.timedelta):
        return _wrap("td", [value.days, value.seconds, value.microseconds])
    if isinstance(value, uuid.UUID):
        return _wrap("u", str(value))
    if isinstance(value, decimal.Decimal):
        return _wrap("dec", str(value))
    if isinstance(value, bytes | bytearray):
        tag = "b" if isinstance(value, bytes) else "ba"
        return _wrap(tag, base64.b64encode(value).decode("ascii"))
    if isinstance(value, tuple):
        items = [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return _wrap("t", items)
    if isinstance(value, set | frozenset):
        tag = "set" if isinstance(value, set) else "fs"
        return _wrap(tag, [_encode(v, f"{path} item") for v in value])
    if isinstance(value, BaseModel):
        body = _encode(value.model_dump(mode="python"), path)
        return _wrap("m", [_class_path(type(value)), body])
    for base in (int, float, str):
        if isinstance(value, base):
            return _encode(base(value), path)
    if isinstance(value, Mapping):
        return _encode_dict(dict(value), path)
    if isinstance(value, list):
        return _encode(list(value), path)
    raise PayloadEncodingError(
        f"{path} of type {type(value).__name__!r} cannot be written to the "
        "event log; pass JSON-compatible data (or datetime, UUID, Decimal, "
        "bytes, tuple, set, enum or a pydantic model), or use the memory store.",
        path=path,
    )


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# orjson parses about three times faster than json but reads an integer
# beyond 64 bits as a float; text with such a long run of digits goes to json.
# ASCII digits only (JSON numbers have no others): "\d" costs half again.
_LONG_NUMBER = re.compile(r"[0-9]{19}").search
_TAG_MARK = '"$te"'


def parse_payload(text: str | bytes) -> Any:
    """Decode a payload's JSON text (as the stores keep it) back to values.

    A text without the codec's tag key needs no decoding walk.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    data = json.loads(text) if _LONG_NUMBER(text) else orjson.loads(text)
    return decode_payload(data) if _TAG_MARK in text else data


def decode_payload(data: Any) -> Any:
    """Invert :func:`encode_payload`."""
    kind = type(data)
    if kind is list:
        return [decode_payload(v) for v in data]
    if kind is dict:
        if len(data) == 1 and _TAG in data:
            tag, body = data[_TAG]
            return _DECODERS[tag](body)
        return {k: decode_payload(v) for k, v in data.items()}
    return data


def _load_class(path: str) -> type | None:
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return target if isinstance(target, type) else None


def _decode_model(body: list[Any]) -> Any:
    cls = _load_class(body[0])
    fields = decode_payload(body[1])
    if cls is None or not issubclass(cls, BaseModel):
        return fields
    return cls.model_validate(fields)


def _decode_enum(body: list[Any]) -> Any:
    cls = _load_class(body[0])
    value = decode_payload(body[1])
    if cls is None or not issubclass(cls, enum.Enum):
        return value
    return cls(value)


_DECODERS: dict[str, Any] = {
    "s": lambda b: base64.b64decode(b).decode("utf-8", "surrogatepass"),
    "f": float,
    "d": lambda b: {decode_payload(k): decode_payload(v) for k, v in b},
    "dt": dt.datetime.fromisoformat,
    "da": dt.date.fromisoformat,
    "ti": dt.time.fromisoformat,
    "td": lambda b: dt.timedelta(days=b[0], seconds=b[1], microseconds=b[2]),
    "u": uuid.UUID,
    "dec": decimal.Decimal,
    "b": base64.b64decode,
    "ba": lambda b: bytearray(base64.b64decode(b)),
    "t": lambda b: tuple(decode_payload(v) for v in b),
    "set": lambda b: {decode_payload(v) for v in b},
    "fs": lambda b: frozenset(decode_payload(v) for v in b),
    "m": _decode_model,
    "e": _decode_enum,
}
