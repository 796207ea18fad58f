"""The adapter contract: a byte store with TTL plus short-lived leases.

Adapters store bytes already encoded by their ``serializer``; the
:class:`~engine.cache.core.AsyncCache` does the encoding, the size check and
the warnings, so every backend behaves alike. Leases back the cross-process
single-flight: ``acquire_lease`` is an atomic "set if absent, with expiry".
This module imports only other ``engine.cache`` modules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from engine.cache.serializers import Serializer

__all__ = ["CacheAdapter"]


class CacheAdapter(ABC):
    """Abstract base of every cache backend.

    TTLs reach adapters already checked by
    :func:`~engine.cache.constants.validate_ttl`: ``ttl_s`` is ``None`` for
    "never expire" or a positive number of seconds. Backend failures raise
    :class:`~engine.cache.errors.CacheBackendError` or its subclass
    :class:`~engine.cache.errors.CacheBackendUnavailableError`.
    """

    serializer: Serializer

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None`` when absent."""

    @abstractmethod
    async def set(self, key: str, data: bytes, ttl_s: float | None) -> None:
        """Store ``data`` under ``key``, replacing any earlier value."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether a live entry was removed."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Return whether a live entry is stored under ``key``."""

    @abstractmethod
    async def clear(self) -> None:
        """Remove every entry and lease this adapter owns, and nothing else."""

    @abstractmethod
    async def acquire_lease(self, key: str, token: str, lease_s: float) -> bool:
        """Take the lease on ``key`` for ``lease_s`` seconds if nobody holds it."""

    @abstractmethod
    async def renew_lease(self, key: str, token: str, lease_s: float) -> bool:
        """Extend a lease still held by ``token``; return False if it was lost."""

    @abstractmethod
    async def release_lease(self, key: str, token: str) -> bool:
        """Drop a lease held by ``token``; a lease taken over is left alone."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release connections the adapter opened itself."""
