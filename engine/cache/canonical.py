"""One canonical, type-tagged byte encoding of call arguments, for cache keys.

Two calls get the same encoding exactly when they pass the same values of the
same types: ``1``, ``1.0``, ``True`` and ``"1"`` all differ, as do ``(1, 2)``
and ``[1, 2]``; dict and set order and keyword order do not matter. The
encoding uses no ``hash()`` and no ``id()``, so it is the same in every
process and interpreter run. Values with no canonical form (plain objects,
whose ``repr`` often holds an address) are refused rather than guessed.
This module imports only :mod:`engine.cache.errors`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

from engine.cache.errors import InvalidCacheKeyError

__all__ = ["canonical_bytes"]

_Encoder = Callable[[Any, "_Walk"], None]


class _Walk:
    """The state of one encoding: output chunks and the containers entered."""

    __slots__ = ("out", "stack")

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.stack: set[int] = set()


def canonical_bytes(value: Any) -> bytes:
    """Encode ``value`` canonically.

    Raises:
        InvalidCacheKeyError: If a part of ``value`` has no canonical encoding
            or the value refers to itself.
    """
    walk = _Walk()
    _encode(value, walk)
    return b"".join(walk.out)


def _encode(value: Any, walk: _Walk) -> None:
    encoder = _EXACT.get(type(value))
    if encoder is None:
        encoder = _fallback_encoder(value)
    encoder(value, walk)


def _sized(tag: bytes, data: bytes, walk: _Walk) -> None:
    # The length prefix keeps "ab"+"c" apart from "a"+"bc".
    walk.out.append(tag + str(len(data)).encode() + b":" + data)


def _enc_none(value: None, walk: _Walk) -> None:
    walk.out.append(b"N")


def _enc_bool(value: bool, walk: _Walk) -> None:
    walk.out.append(b"T" if value else b"F")


def _enc_int(value: int, walk: _Walk) -> None:
    walk.out.append(b"i" + str(value).encode() + b";")


def _enc_float(value: float, walk: _Walk) -> None:
    walk.out.append(b"f" + value.hex().encode() + b";")


def _enc_str(value: str, walk: _Walk) -> None:
    _sized(b"s", value.encode("utf-8", "surrogatepass"), walk)


def _enc_bytes(value: bytes, walk: _Walk) -> None:
    _sized(b"b" if type(value) is bytes else b"y", bytes(value), walk)


def _enter(value: Any, walk: _Walk) -> None:
    if id(value) in walk.stack:
        raise InvalidCacheKeyError(
            f"A cache key cannot be built from a value that contains itself "
            f"(a {type(value).__name__} at {len(walk.stack)} levels deep)."
        )
    walk.stack.add(id(value))


def _enc_sequence(value: list[Any] | tuple[Any, ...], walk: _Walk) -> None:
    _enter(value, walk)
    tag = b"l" if isinstance(value, list) else b"t"
    walk.out.append(tag + str(len(value)).encode() + b"[")
    for item in value:
        _encode(item, walk)
    walk.out.append(b"]")
    walk.stack.discard(id(value))


def _sorted_parts(items: Any, walk: _Walk) -> list[bytes]:
    parts = []
    for item in items:
        sub = _Walk()
        sub.stack = walk.stack
        _encode(item, sub)
        parts.append(b"".join(sub.out))
    return sorted(parts)


def _enc_mapping(value: dict[Any, Any], walk: _Walk) -> None:
    _enter(value, walk)
    pairs = []
    for key, item in value.items():
        sub = _Walk()
        sub.stack = walk.stack
        _encode(key, sub)
        sub.out.append(b"=")
        _encode(item, sub)
        pairs.append(b"".join(sub.out))
    walk.out.append(b"d" + str(len(pairs)).encode() + b"{")
    walk.out.extend(sorted(pairs))
    walk.out.append(b"}")
    walk.stack.discard(id(value))


def _enc_set(value: set[Any] | frozenset[Any], walk: _Walk) -> None:
    _enter(value, walk)
    tag = b"S" if isinstance(value, set) else b"Z"
    walk.out.append(tag + str(len(value)).encode() + b"{")
    walk.out.extend(_sorted_parts(value, walk))
    walk.out.append(b"}")
    walk.stack.discard(id(value))


def _enc_text(tag: bytes) -> _Encoder:
    def encode(value: Any, walk: _Walk) -> None:
        _sized(tag, _text_of(value).encode("utf-8", "surrogatepass"), walk)

    return encode


def _text_of(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.time) and value.tzinfo is not None:
        # Same instant, different zone name: keep the zone so keys stay apart.
        return f"{value.isoformat()}|{value.tzinfo!s}"
    if isinstance(value, dt.timedelta):
        return f"{value.days},{value.seconds},{value.microseconds}"
    return str(value)


def _type_name(value: Any) -> bytes:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}".encode()


def _enc_enum(value: enum.Enum, walk: _Walk) -> None:
    _sized(b"e", _type_name(value), walk)
    _encode(value.value, walk)


def _enc_dataclass(value: Any, walk: _Walk) -> None:
    _sized(b"c", _type_name(value), walk)
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    _enc_mapping(fields, walk)


def _enc_model(value: Any, walk: _Walk) -> None:
    _sized(b"m", _type_name(value), walk)
    _enc_mapping(value.model_dump(mode="python"), walk)


def _subclass_encoder(base: type) -> _Encoder:
    def encode(value: Any, walk: _Walk) -> None:
        # A namedtuple or an OrderedDict keys apart from its plain base type.
        _sized(b"x", _type_name(value), walk)
        _EXACT[base](value, walk)

    return encode


def _fallback_encoder(value: Any) -> _Encoder:
    if isinstance(value, enum.Enum):
        return _enc_enum
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _enc_dataclass
    if callable(getattr(value, "model_dump", None)) and not isinstance(value, type):
        return _enc_model
    if isinstance(value, pathlib.PurePath):
        return _enc_text(b"p")
    for base in _SUBCLASSABLE:
        if isinstance(value, base):
            return _subclass_encoder(base)
    raise InvalidCacheKeyError(
        f"A cache key cannot be built from a value of type "
        f"{type(value).__qualname__!r}: it has no canonical encoding. Pass "
        f"plain data (str, int, float, bool, None, bytes, list, tuple, dict, "
        f"set, datetime, UUID, Decimal, enum, dataclass) or give the task a "
        f"cache_key_fn."
    )


_EXACT: dict[type, _Encoder] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    list: _enc_sequence,
    tuple: _enc_sequence,
    dict: _enc_mapping,
    set: _enc_set,
    frozenset: _enc_set,
    dt.datetime: _enc_text(b"D"),
    dt.date: _enc_text(b"a"),
    dt.time: _enc_text(b"H"),
    dt.timedelta: _enc_text(b"R"),
    uuid.UUID: _enc_text(b"U"),
    decimal.Decimal: _enc_text(b"M"),
    complex: _enc_text(b"j"),
}

_SUBCLASSABLE: tuple[type, ...] = (
    dt.datetime,
    dt.date,
    int,
    float,
    str,
    bytes,
    list,
    tuple,
    dict,
    set,
    frozenset,
)
