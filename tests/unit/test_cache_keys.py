"""Cache keys: the canonical default key and the composable key functions."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import os
import subprocess
import sys
import uuid
from collections import OrderedDict, namedtuple

import pytest

from engine.cache import (
    AsyncCacheAdapter,
    CacheKeyFunctionError,
    InvalidCacheKeyError,
    compose_key_functions,
    extract_key_component,
    key_component,
)


async def fetch(*args, **kwargs):
    return args, kwargs


async def other(*args, **kwargs):
    return args, kwargs


def key(*args, **kwargs) -> str:
    return AsyncCacheAdapter().key_for(fetch, args, kwargs)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((1,), ("1",)),
        ((1,), (1.0,)),
        ((1,), (True,)),
        ((0,), (False,)),
        (((1, 2),), ([1, 2],)),
        (({1, 2},), (frozenset({1, 2}),)),
        ((b"a",), ("a",)),
        (("ab", "c"), ("a", "bc")),
        ((None,), ("None",)),
        ((0.0,), (-0.0,)),
        ((decimal.Decimal("1.0"),), (1.0,)),
        (({"a": 1},), ([("a", 1)],)),
        ((uuid.UUID(int=1),), (str(uuid.UUID(int=1)),)),
        ((dt.date(2024, 1, 1),), (dt.datetime(2024, 1, 1),)),
        ((OrderedDict(a=1),), ({"a": 1},)),
    ],
)
def test_distinct_calls_get_distinct_keys(left, right):
    assert key(*left) != key(*right)


def test_two_functions_with_equal_arguments_get_distinct_keys():
    cache = AsyncCacheAdapter()

    assert cache.key_for(fetch, (1,), {}) != cache.key_for(other, (1,), {})


def test_functions_named_alike_in_two_modules_get_distinct_keys():
    async def twin():
        return None

    twin_elsewhere = type(twin)(twin.__code__, {"__name__": "elsewhere"})
    twin_elsewhere.__qualname__ = twin.__qualname__
    cache = AsyncCacheAdapter()

    assert cache.key_for(twin, (), {}) != cache.key_for(twin_elsewhere, (), {})


def test_keyword_order_and_dict_order_do_not_matter():
    assert key(a=1, b={"x": 1, "y": 2}) == key(b={"y": 2, "x": 1}, a=1)


def test_sets_key_alike_whatever_their_order():
    assert key({"b", "a", "c"}) == key({"c", "a", "b"})


def test_nested_lists_dicts_and_namedtuples_are_fine():
    point = namedtuple("point", "x y")

    assert key([{"a": [1, (2, 3)]}], p=point(1, 2)) == key(
        [{"a": [1, (2, 3)]}], p=point(1, 2)
    )
    assert key(point(1, 2)) != key((1, 2))


def test_the_key_is_the_same_in_another_interpreter():
    args = "({'b': [1, 2.5, None], 'a': {3, 4}}, (b'x', 'y'))"
    kwargs = "{'when': datetime.date(2024, 5, 1), 'n': decimal.Decimal('2.50')}"
    script = (
        "import datetime, decimal\n"
        "from engine.cache import AsyncCacheAdapter\n"
        f"print(AsyncCacheAdapter().key_for('fetch', {args}, {kwargs}))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, check=True
    )

    local = AsyncCacheAdapter().key_for(
        "fetch",
        ({"b": [1, 2.5, None], "a": {3, 4}}, (b"x", "y")),
        {"when": dt.date(2024, 5, 1), "n": decimal.Decimal("2.50")},
    )
    assert out.stdout.decode().strip() == local


def test_an_argument_without_a_canonical_form_raises_from_key_for():
    with pytest.raises(InvalidCacheKeyError, match="'object'"):
        key(object())


def test_a_self_referencing_argument_raises_from_key_for():
    loop = []
    loop.append(loop)

    with pytest.raises(InvalidCacheKeyError, match="contains itself"):
        key(loop)


async def test_get_misses_and_warns_on_an_argument_without_a_key(caplog):
    cache = AsyncCacheAdapter()

    result = await cache.get(fetch, (object(),), {})
    stored = await cache.set(fetch, (object(),), {}, 1)

    assert result == (False, None)
    assert stored is False
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("cache_key_invalid") == 2


def test_a_raising_key_function_raises_a_key_function_error():
    def broken(context):
        raise LookupError("no tenant")

    with pytest.raises(CacheKeyFunctionError, match="no tenant") as info:
        AsyncCacheAdapter().key_for(fetch, (), {}, cache_key_fn=broken)

    assert isinstance(info.value.__cause__, LookupError)


@pytest.mark.parametrize("bad", [None, 12, b"bytes", ""])
def test_a_key_function_returning_no_string_raises(bad):
    with pytest.raises(InvalidCacheKeyError, match="non-empty string"):
        AsyncCacheAdapter().key_for(fetch, (), {}, cache_key_fn=lambda c: bad)


async def test_a_raising_key_function_makes_a_miss_with_a_warning(caplog):
    cache = AsyncCacheAdapter()
    caplog.set_level(logging.WARNING)

    def broken(context):
        raise RuntimeError("boom")

    assert await cache.set(fetch, (), {}, 1, cache_key_fn=broken) is False
    assert await cache.get(fetch, (), {}, cache_key_fn=broken) == (False, None)
    records = [r for r in caplog.records if r.action == "cache_key_invalid"]
    assert [r.error_type for r in records] == ["CacheKeyFunctionError"] * 2


def test_validate_keys_rejects_control_characters_and_long_keys():
    cache = AsyncCacheAdapter(validate_keys=True)

    with pytest.raises(InvalidCacheKeyError, match="control"):
        cache.key_for(fetch, (), {}, cache_key_fn=lambda c: "a\nb")
    with pytest.raises(InvalidCacheKeyError, match="1024"):
        cache.key_for(fetch, (), {}, cache_key_fn=lambda c: "k" * 2000)


def test_composed_extractors_build_the_readme_key():
    composite = compose_key_functions(
        extract_key_component("func_name"),
        extract_key_component("kwargs.user_id"),
        extract_key_component("metadata.version"),
    )

    result = AsyncCacheAdapter().key_for(
        "get_user_data",
        (),
        {"user_id": 123},
        cache_key_fn=composite,
        metadata={"version": "v2"},
    )

    assert result == "get_user_data:123:v2"


def test_named_components_build_the_readme_key():
    @key_component("user")
    def user_component(context):
        return str(context["kwargs"].get("user_id", "anonymous"))

    @key_component("region")
    def region_component(context):
        return context["kwargs"].get("region", "global")

    @key_component()
    def timestamp(context):
        return context.get("metadata", {}).get("timestamp", "0")

    composite = compose_key_functions(user_component, region_component, timestamp)

    result = AsyncCacheAdapter().key_for(
        "get_regional_data",
        (),
        {"user_id": 123, "region": "eu-west"},
        cache_key_fn=composite,
        metadata={"timestamp": "2023-04-01"},
    )

    assert result == "user:123:region:eu-west:timestamp:2023-04-01"


def test_extractors_read_positions_entry_ids_and_missing_paths():
    context = {
        "func_name": "f",
        "args": ("first", "second"),
        "kwargs": {},
        "entry_id": "f:42",
        "metadata": {"tenant": {"id": 7}},
    }

    assert extract_key_component("args.0")(context) == "first"
    assert extract_key_component("args.-1")(context) == "second"
    assert extract_key_component("args.5")(context) == "none"
    assert extract_key_component("entry_id")(context) == "f:42"
    assert extract_key_component("metadata.tenant.id")(context) == "7"
    assert extract_key_component("kwargs.user_id")(context) == "none"


def test_the_entry_id_reaches_key_functions_when_a_task_id_is_given():
    cache = AsyncCacheAdapter()

    result = cache.key_for(
        fetch, (), {}, cache_key_fn=extract_key_component("entry_id"), task_id="t1"
    )

    assert result == "fetch:t1"


def test_a_composed_component_returning_no_string_raises():
    composite = compose_key_functions(lambda c: "a", lambda c: 5)

    with pytest.raises(InvalidCacheKeyError, match="must return strings"):
        composite({})


def test_compose_needs_at_least_one_function():
    with pytest.raises(ValueError, match="at least one"):
        compose_key_functions()


def test_an_empty_key_path_is_rejected():
    with pytest.raises(ValueError, match="dotted string"):
        extract_key_component("")


def test_scalar_calls_of_different_types_never_share_a_key():
    from engine.cache.keys import default_key_fn

    def key(*args, **kwargs):
        return default_key_fn(
            {"func_name": "f", "args": args, "kwargs": kwargs, "metadata": {}}
        )

    keys = {
        key(1),
        key("1"),
        key(1.0),
        key(True),
        key(None),
        key("None"),
        key(-0.0),
        key(0.0),
        key(1, 2),
        key((1, 2)),
        key([1, 2]),
        key(a=1),
        key(a="1"),
    }

    assert len(keys) == 13
    assert key(a=1, b=2) == key(b=2, a=1)
