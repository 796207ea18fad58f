"""Cache constants and the one TTL rule every adapter shares.

TTL values, in seconds, mean the same on every adapter:

* ``None``: use the cache's ``default_ttl`` (which may itself be ``None`` or
  :data:`NEVER_EXPIRE`, both meaning the entry never expires);
* ``0`` (:data:`NEVER_EXPIRE`): never expire; only LRU eviction (memory) or an
  explicit invalidation removes the entry;
* a positive number (int or float): expire that many seconds after the store;
* anything else (negative, NaN, infinite, a bool or a non-number): rejected
  with :class:`~engine.cache.errors.InvalidTTLError`, a ``ValueError``.

This module imports only :mod:`engine.cache.errors`.
"""

from __future__ import annotations

import math

from engine.cache.errors import InvalidTTLError

NEVER_EXPIRE = 0
"""The explicit TTL value meaning "this entry never expires"."""

DEFAULT_MAX_SIZE = 1000
DEFAULT_MAX_SERIALIZED_SIZE = 10 * 1024 * 1024
DEFAULT_CLEANUP_INTERVAL_S = 900
DEFAULT_LEASE_S = 30.0

REDIS_DEFAULT_URL = "redis://localhost:6379/0"
REDIS_KEY_PREFIX = "async_cache:"
REDIS_VALUE_NAMESPACE = "v:"
REDIS_LEASE_NAMESPACE = "lease:"

MAX_LOGGED_CHARS = 250


def validate_ttl(ttl: object, *, name: str = "ttl") -> float | None:
    """Check a TTL and return it as seconds, or ``None`` for "never expire".

    Args:
        ttl: The TTL to check; ``None`` is returned unchanged.
        name: The parameter name used in the error message.

    Returns:
        ``None`` when ``ttl`` is ``None`` or ``0``, else the TTL as a float.

    Raises:
        InvalidTTLError: If ``ttl`` is negative, not finite or not a number.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidTTLError(
            f"The cache {name} must be None, 0 or a positive number of seconds, "
            f"not {ttl!r}."
        )
    if not math.isfinite(ttl) or ttl < 0:
        raise InvalidTTLError(
            f"The cache {name} {ttl!r} is not allowed: use None for the default, "
            f"0 (NEVER_EXPIRE) to keep the entry until evicted, or a positive "
            f"number of seconds."
        )
    if ttl == NEVER_EXPIRE:
        return None
    return float(ttl)


def truncate(text: str) -> str:
    """Cut a rendered value to :data:`MAX_LOGGED_CHARS` for a log record."""
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    return text[:MAX_LOGGED_CHARS] + "..."
