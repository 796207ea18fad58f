"""Lossless value codecs for cached results: msgpack (default) and JSON.

Both codecs bring back exactly the types that went in: ``None``, bool, int
(any size), float (NaN and infinities too), str, bytes, bytearray, list,
tuple, dict (any hashable keys), set, frozenset, datetime (naive, fixed
offset or ``zoneinfo`` zone), date, time, timedelta, UUID, Decimal and
complex, nested freely. Anything else (enums, dataclasses, pydantic models,
subclasses of the types above) raises :class:`SerializationError`, so a value
is cached as itself or not at all. This module imports only
``engine.cache.errors``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from engine.cache.errors import SerializationError

__all__ = [
    "JsonSerializer",
    "MsgPackSerializer",
    "Serializer",
    "get_serializer",
]


class Serializer(Protocol):
    """Turns a value into bytes and back, losslessly or not at all."""

    name: str

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise :class:`SerializationError` if impossible."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes made by :meth:`dumps`."""
        ...


@dataclass(frozen=True, slots=True)
class _Codec:
    code: int
    tag: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _zoned(value: dt.datetime | dt.time) -> list[Any]:
    zone = value.tzinfo
    key = zone.key if isinstance(zone, zoneinfo.ZoneInfo) else None
    return [value.isoformat(), key, value.fold]


def _unzoned_datetime(payload: list[Any]) -> dt.datetime:
    value = dt.datetime.fromisoformat(payload[0]).replace(fold=payload[2])
    if payload[1] is not None:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(payload[1]))
    return value


def _unzoned_time(payload: list[Any]) -> dt.time:
    value = dt.time.fromisoformat(payload[0]).replace(fold=payload[2])
    if payload[1] is not None:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(payload[1]))
    return value


_CODECS: dict[type, _Codec] = {
    tuple: _Codec(1, "tuple", list, tuple),
    set: _Codec(2, "set", list, set),
    frozenset: _Codec(3, "frozenset", list, frozenset),
    dt.datetime: _Codec(4, "datetime", _zoned, _unzoned_datetime),
    dt.date: _Codec(5, "date", dt.date.isoformat, dt.date.fromisoformat),
    dt.time: _Codec(6, "time", _zoned, _unzoned_time),
    dt.timedelta: _Codec(
        7,
        "timedelta",
        lambda v: [v.days, v.seconds, v.microseconds],
        lambda p: dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2]),
    ),
    uuid.UUID: _Codec(8, "uuid", str, uuid.UUID),
    decimal.Decimal: _Codec(9, "decimal", str, decimal.Decimal),
    int: _Codec(10, "int", str, int),
    complex: _Codec(11, "complex", lambda v: [v.real, v.imag], lambda p: complex(*p)),
    bytearray: _Codec(12, "bytearray", bytes, bytearray),
}
_BY_CODE = {codec.code: codec for codec in _CODECS.values()}
_BY_TAG = {codec.tag: codec for codec in _CODECS.values()}


def _unsupported(value: Any) -> SerializationError:
    return SerializationError(
        f"A value of type {type(value).__qualname__!r} cannot be cached: the "
        f"cache stores plain data (None, bool, int, float, str, bytes, list, "
        f"tuple, dict, set, frozenset, datetime, date, time, timedelta, UUID, "
        f"Decimal, complex). Return plain data from the task, or disable its "
        f"cache.",
        value_type=type(value).__qualname__,
    )


def _too_deep(exc: BaseException) -> SerializationError:
    return SerializationError(
        f"The value cannot be cached: it refers to itself or is nested too "
        f"deeply ({type(exc).__name__}: {exc})."
    )


_CONTAINERS = (list, tuple, set, frozenset)
_BUFFERS = (bytearray, memoryview)


def _holds_buffer(value: Any) -> bool:
    """Whether a bytearray or memoryview hides anywhere inside ``value``.

    msgpack writes both as plain bytes without asking ``default``, so they
    would come back as ``bytes``; this walk finds them before packing.
    """
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _BUFFERS:
            return True
        if kind in _CONTAINERS or kind is dict:
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item.items() if kind is dict else item)
    return False


@dataclass(frozen=True, slots=True)
class _ByteArrayBox:
    data: bytes


def _box_buffers(value: Any) -> Any:
    """Copy ``value`` with each bytearray boxed so ``default`` sees it."""
    kind = type(value)
    if kind is bytearray:
        return _ByteArrayBox(bytes(value))
    if kind is memoryview:
        raise _unsupported(value)
    if kind is dict:
        return {_box_buffers(k): _box_buffers(v) for k, v in value.items()}
    if kind in _CONTAINERS:
        return kind(_box_buffers(item) for item in value)
    return value


class MsgPackSerializer:
    """msgpack with extension types for every Python type msgpack lacks."""

    name = "msgpack"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``.

        Raises:
            SerializationError: For an unsupported type or a self-reference.
        """
        try:
            return self._pack(value)
        except SerializationError:
            raise
        except (ValueError, RecursionError) as exc:
            raise _too_deep(exc) from exc
        except Exception as exc:
            raise SerializationError(
                f"The value cannot be cached: msgpack failed with "
                f"{type(exc).__name__}: {exc}."
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Decode bytes made by :meth:`dumps`.

        Raises:
            SerializationError: If the bytes are not a value of this codec.
        """
        try:
            return self._unpack(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"Cached bytes cannot be decoded as msgpack: "
                f"{type(exc).__name__}: {exc}."
            ) from exc

    def _pack(self, value: Any) -> bytes:
        if _holds_buffer(value):
            value = _box_buffers(value)
        return self._pack_checked(value)

    def _pack_checked(self, value: Any) -> bytes:
        # strict_types sends tuples and subclasses to _default instead of
        # silently turning them into lists or their base type.
        return msgpack.packb(
            value,
            default=self._default,
            use_bin_type=True,
            strict_types=True,
            unicode_errors="surrogatepass",
        )

    def _default(self, value: Any) -> msgpack.ExtType:
        if type(value) is _ByteArrayBox:
            return msgpack.ExtType(
                _CODECS[bytearray].code, self._pack_checked(value.data)
            )
        codec = _CODECS.get(type(value))
        if codec is None:
            raise _unsupported(value)
        return msgpack.ExtType(codec.code, self._pack_checked(codec.encode(value)))

    def _unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(
            data,
            ext_hook=self._ext_hook,
            raw=False,
            strict_map_key=False,
            unicode_errors="surrogatepass",
        )

    def _ext_hook(self, code: int, data: bytes) -> Any:
        codec = _BY_CODE.get(code)
        if codec is None:
            raise SerializationError(
                f"Cached bytes hold msgpack extension type {code!r}, which this "
                f"version of the cache does not know."
            )
        return codec.decode(self._unpack(data))


class JsonSerializer:
    """JSON text in which every non-JSON value is a ``{"__t": tag, "v": ...}``.

    A dict whose keys are not all strings, or which has a ``"__t"`` key of its
    own, is written as a tagged list of pairs, so decoding is unambiguous.
    """

    name = "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as UTF-8 JSON.

        Raises:
            SerializationError: For an unsupported type or a self-reference.
        """
        try:
            tree = self._to_tree(value, set())
        except RecursionError as exc:
            raise _too_deep(exc) from exc
        return json.dumps(tree, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        """Decode bytes made by :meth:`dumps`.

        Raises:
            SerializationError: If the bytes are not a value of this codec.
        """
        try:
            return json.loads(data, object_hook=self._from_tagged)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"Cached bytes cannot be decoded as tagged JSON: "
                f"{type(exc).__name__}: {exc}."
            ) from exc

    def _to_tree(self, value: Any, stack: set[int]) -> Any:
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int and -(2**63) <= value < 2**64:
            return value
        if kind is float:
            return (
                value
                if value == value and abs(value) != float("inf")
                else {
                    "__t": "float",
                    "v": repr(value),
                }
            )
        if kind is bytes:
            return {"__t": "bytes", "v": base64.b64encode(value).decode()}
        if kind is list or kind is dict or kind in _CODECS:
            return self._container_to_tree(value, stack)
        raise _unsupported(value)

    def _container_to_tree(self, value: Any, stack: set[int]) -> Any:
        if id(value) in stack:
            raise _too_deep(ValueError("the value contains itself"))
        stack.add(id(value))
        try:
            if type(value) is list:
                return [self._to_tree(item, stack) for item in value]
            if type(value) is dict:
                return self._dict_to_tree(value, stack)
            codec = _CODECS[type(value)]
            return {"__t": codec.tag, "v": self._to_tree(codec.encode(value), stack)}
        finally:
            stack.discard(id(value))

    def _dict_to_tree(self, value: dict[Any, Any], stack: set[int]) -> Any:
        if "__t" not in value and all(type(key) is str for key in value):
            return {key: self._to_tree(item, stack) for key, item in value.items()}
        pairs = [
            [self._to_tree(key, stack), self._to_tree(item, stack)]
            for key, item in value.items()
        ]
        return {"__t": "dict", "v": pairs}

    def _from_tagged(self, obj: dict[str, Any]) -> Any:
        tag = obj.get("__t")
        if tag is None:
            return obj
        payload = obj["v"]
        if tag == "dict":
            return {key: item for key, item in payload}
        if tag == "bytes":
            return base64.b64decode(payload)
        if tag == "float":
            return float(payload)
        codec = _BY_TAG.get(tag)
        if codec is None:
            raise SerializationError(f"Cached JSON holds the unknown type tag {tag!r}.")
        return codec.decode(payload)


_SERIALIZERS: dict[str, Callable[[], Serializer]] = {
    "msgpack": MsgPackSerializer,
    "json": JsonSerializer,
}


def get_serializer(serializer: str | Serializer) -> Serializer:
    """Return a serializer for a name (``"msgpack"``, ``"json"``) or itself.

    Raises:
        ValueError: If the name is unknown.
    """
    if not isinstance(serializer, str):
        return serializer
    factory = _SERIALIZERS.get(serializer)
    if factory is None:
        raise ValueError(
            f"Unknown cache serializer {serializer!r}; use 'msgpack' or 'json'."
        )
    return factory()
