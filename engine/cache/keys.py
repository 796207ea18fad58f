"""Cache keys: the key context, the default key and composable key functions.

A key function receives a context dict with ``func_name``, ``args``,
``kwargs``, ``entry_id`` and ``metadata`` and returns a string. The default
key is the function's name followed by a SHA-256 of the canonical encoding of
its qualified name and all its arguments (see :mod:`engine.cache.canonical`).
This module imports only other ``engine.cache`` modules.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from engine.cache.canonical import canonical_bytes
from engine.cache.errors import CacheKeyFunctionError, InvalidCacheKeyError

__all__ = [
    "CacheKeyContext",
    "CacheKeyFn",
    "build_context",
    "compose_key_functions",
    "default_key_fn",
    "extract_key_component",
    "func_name_of",
    "key_component",
    "make_key",
]

CacheKeyContext = dict[str, Any]
CacheKeyFn = Callable[[CacheKeyContext], str]

MISSING_COMPONENT = "none"
"""What :func:`extract_key_component` yields for a path that is absent."""

_CONTROL_CHARS = frozenset(chr(code) for code in range(32)) | {"\x7f"}
MAX_VALIDATED_KEY_LENGTH = 1024


def func_name_of(func: Callable[..., Any] | str) -> tuple[str, str]:
    """Return ``(name, qualified_name)`` for a task function or a name.

    ``name`` is what key functions see as ``func_name`` (the ``__qualname__``);
    ``qualified_name`` adds the module so that two functions of the same name
    in different modules get different default keys.
    """
    if isinstance(func, str):
        return func, func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str):
        name = type(func).__qualname__
    module = getattr(func, "__module__", None)
    return name, f"{module}:{name}" if module else name


def build_context(
    func_name: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: Mapping[str, Any] | None,
    entry_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> CacheKeyContext:
    """Build the context dict handed to key functions."""
    return {
        "func_name": func_name,
        "args": tuple(args),
        "kwargs": dict(kwargs or {}),
        "entry_id": entry_id,
        "metadata": dict(metadata or {}),
    }


def default_key_fn(context: CacheKeyContext) -> str:
    """The default key: ``func_name`` plus a SHA-256 over name and arguments.

    The hash covers ``qualified_name`` when the context holds it (the module
    and qualified name of the task function), else ``func_name``.

    Raises:
        InvalidCacheKeyError: If an argument has no canonical encoding.
    """
    qualified = context.get("qualified_name") or context["func_name"]
    return default_key(
        context["func_name"], qualified, context["args"], context["kwargs"]
    )


def default_key(
    func_name: str, qualified: str, args: Any, kwargs: Mapping[str, Any] | None
) -> str:
    """:func:`default_key_fn` without building a context (the worker's path)."""
    args = tuple(args)
    kwargs = dict(kwargs or {})
    flat = _flat_text(qualified, args, kwargs)
    if flat is not None:
        encoded = flat
    else:
        encoded = canonical_bytes((qualified, args, kwargs))
    return f"{func_name}:{hashlib.sha256(encoded).hexdigest()}"


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat_text(qualified: str, args: Any, kwargs: Any) -> bytes | None:
    """The common call of scalar arguments, encoded by ``repr`` (a faster
    canonical form: ``repr`` of str, int, float, bool and None is exact and
    tells the types apart); None when any argument is not a scalar.

    The ``R`` prefix keeps these keys apart from the general encoding, which
    never starts with it, and a given call always takes the same path.
    """
    for value in args:
        if type(value) not in _SCALARS:
            return None
    for value in kwargs.values():
        if type(value) not in _SCALARS:
            return None
    items = sorted(kwargs.items()) if kwargs else ()
    return b"R" + repr((qualified, tuple(args), items)).encode("utf-8", "surrogatepass")


def make_key(
    context: CacheKeyContext,
    cache_key_fn: CacheKeyFn | None = None,
    *,
    validate: bool = False,
) -> str:
    """Run the key function (the default one when ``None``) and check its key.

    Raises:
        CacheKeyFunctionError: If ``cache_key_fn`` raised.
        InvalidCacheKeyError: If the key is not a non-empty string, or, with
            ``validate``, is too long or holds control characters.
    """
    if cache_key_fn is None:
        key = default_key_fn(context)
    else:
        key = _call_key_fn(cache_key_fn, context)
    _check_key(key, validate=validate)
    return key


def _call_key_fn(cache_key_fn: CacheKeyFn, context: CacheKeyContext) -> Any:
    user_context = {k: v for k, v in context.items() if k != "qualified_name"}
    try:
        return cache_key_fn(user_context)
    except InvalidCacheKeyError:
        raise
    except Exception as exc:
        name = getattr(cache_key_fn, "__qualname__", repr(cache_key_fn))
        raise CacheKeyFunctionError(
            f"The cache key function {name!r} raised {type(exc).__name__}: "
            f"{exc}. Fix the function or drop cache_key_fn to use the default "
            f"key.",
            key_fn=name,
        ) from exc


def _check_key(key: Any, *, validate: bool) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidCacheKeyError(
            f"A cache key must be a non-empty string, but the key function "
            f"returned {key!r}."
        )
    if not validate:
        return
    if len(key) > MAX_VALIDATED_KEY_LENGTH:
        raise InvalidCacheKeyError(
            f"The cache key {key[:60]!r}... is {len(key)} characters long; "
            f"keys are limited to {MAX_VALIDATED_KEY_LENGTH}."
        )
    if not _CONTROL_CHARS.isdisjoint(key):
        raise InvalidCacheKeyError(
            f"The cache key {key!r} contains control characters."
        )


def compose_key_functions(*funcs: CacheKeyFn) -> CacheKeyFn:
    """Join the results of several key functions with ``":"``.

    Raises:
        ValueError: If no function is given.
    """
    if not funcs:
        raise ValueError("compose_key_functions() needs at least one function.")

    def composed(context: CacheKeyContext) -> str:
        parts = []
        for func in funcs:
            part = func(context)
            if not isinstance(part, str):
                name = getattr(func, "__qualname__", repr(func))
                raise InvalidCacheKeyError(
                    f"The key component {name!r} returned {part!r}; key "
                    f"components must return strings."
                )
            parts.append(part)
        return ":".join(parts)

    return composed


def extract_key_component(key_path: str) -> CacheKeyFn:
    """Make a key function returning ``str()`` of the value at a dotted path.

    The first segment is a context field (``func_name``, ``args``, ``kwargs``,
    ``metadata``, ``entry_id``); later segments index into dicts by key and
    into sequences by position (``"args.0"``). A missing value yields
    ``"none"``.

    Raises:
        ValueError: If ``key_path`` is empty.
    """
    if not isinstance(key_path, str) or not key_path.strip("."):
        raise ValueError(f"A key path must be a dotted string, not {key_path!r}.")
    segments = key_path.split(".")

    def extract(context: CacheKeyContext) -> str:
        value: Any = context
        for segment in segments:
            value = _step(value, segment)
            if value is None:
                return MISSING_COMPONENT
        return str(value)

    extract.__qualname__ = f"extract_key_component({key_path!r})"
    return extract


def _step(value: Any, segment: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(segment)
    if isinstance(value, list | tuple) and segment.lstrip("-").isdigit():
        index = int(segment)
        return value[index] if -len(value) <= index < len(value) else None
    return None


def key_component(
    name: str | None = None,
) -> Callable[[CacheKeyFn], CacheKeyFn]:
    """Decorate a key function so it returns ``"<name>:<value>"``.

    ``name`` defaults to the decorated function's name.
    """

    def decorator(func: CacheKeyFn) -> CacheKeyFn:
        label = name or func.__name__

        @functools.wraps(func)
        def named(context: CacheKeyContext) -> str:
            return f"{label}:{func(context)}"

        return named

    return decorator
