"""The cache's errors, all under :class:`engine.exceptions.CacheError`.

    CacheError                        root of the cache family (engine.exceptions)
    ├── SerializationError            a value cannot be encoded or decoded
    ├── InvalidCacheKeyError          a key is not a usable string
    │   └── CacheKeyFunctionError     a ``cache_key_fn`` raised
    ├── InvalidTTLError               a TTL that is negative or not a number
    └── CacheBackendError             the backend answered with an error
        └── CacheBackendUnavailableError  the backend cannot be reached

Only :class:`InvalidTTLError` (a configuration mistake) and the key errors
raised by ``key_for`` ever leave the cache; the lookup and store paths turn
every other error into a logged miss so a task never fails because of its
cache. This module imports only :mod:`engine.exceptions`.
"""

from __future__ import annotations

from engine.exceptions import CacheError

__all__ = [
    "CacheBackendError",
    "CacheBackendUnavailableError",
    "CacheError",
    "CacheKeyFunctionError",
    "InvalidCacheKeyError",
    "InvalidTTLError",
    "SerializationError",
]


class SerializationError(CacheError, TypeError):
    """A value cannot be encoded for the cache, or cached bytes cannot be read."""

    default_message = "The value cannot be encoded for the cache."


class InvalidCacheKeyError(CacheError, ValueError):
    """A cache key is not a non-empty string the backend can store."""

    default_message = "The cache key is not a usable string."


class CacheKeyFunctionError(InvalidCacheKeyError):
    """A user's ``cache_key_fn`` raised while building a key."""

    default_message = "The cache key function raised an exception."


class InvalidTTLError(CacheError, ValueError):
    """A TTL must be ``None``, ``0`` (never expire) or a positive number."""

    default_message = (
        "A cache TTL must be None (use the default), 0 (never expire) or a "
        "positive number of seconds."
    )


class CacheBackendError(CacheError):
    """The cache backend answered a command with an error."""

    default_message = "The cache backend answered with an error."


class CacheBackendUnavailableError(CacheBackendError):
    """The cache backend cannot be reached."""

    default_message = "The cache backend cannot be reached."
