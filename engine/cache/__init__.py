"""The result cache: memory and Redis adapters, composable keys, single-flight.

Import everything from here; the submodules are an implementation detail.
``RedisCacheAdapter`` needs the ``redis`` extra and is imported lazily, so
the rest of the cache works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.cache.adapter import AsyncCacheAdapter
from engine.cache.base import CacheAdapter
from engine.cache.constants import NEVER_EXPIRE, validate_ttl
from engine.cache.core import AsyncCache, CacheStats
from engine.cache.errors import (
    CacheBackendError,
    CacheBackendUnavailableError,
    CacheError,
    CacheKeyFunctionError,
    InvalidCacheKeyError,
    InvalidTTLError,
    SerializationError,
)
from engine.cache.flight import Flight, FlightRole
from engine.cache.keys import (
    CacheKeyContext,
    CacheKeyFn,
    compose_key_functions,
    extract_key_component,
    key_component,
)
from engine.cache.memory import MemoryCacheAdapter
from engine.cache.serializers import JsonSerializer, MsgPackSerializer, Serializer

if TYPE_CHECKING:
    from engine.cache.redis import RedisCacheAdapter

__all__ = [
    "NEVER_EXPIRE",
    "AsyncCache",
    "AsyncCacheAdapter",
    "CacheAdapter",
    "CacheBackendError",
    "CacheBackendUnavailableError",
    "CacheError",
    "CacheKeyContext",
    "CacheKeyFn",
    "CacheKeyFunctionError",
    "CacheStats",
    "Flight",
    "FlightRole",
    "InvalidCacheKeyError",
    "InvalidTTLError",
    "JsonSerializer",
    "MemoryCacheAdapter",
    "MsgPackSerializer",
    "RedisCacheAdapter",
    "SerializationError",
    "Serializer",
    "compose_key_functions",
    "extract_key_component",
    "key_component",
    "validate_ttl",
]


def __getattr__(name: str) -> Any:
    if name == "RedisCacheAdapter":
        from engine.cache.redis import RedisCacheAdapter

        return RedisCacheAdapter
    raise AttributeError(f"module 'engine.cache' has no attribute {name!r}.")
