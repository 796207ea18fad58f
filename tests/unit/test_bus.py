"""Tests of the in-process event bus (engine.bus)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import tracemalloc
from typing import Any

import pytest

import engine.bus
from engine.bus import (
    OVERFLOW,
    EventManager,
    EventSubscription,
    GroupFilter,
    SubscriptionOverflowError,
    event_manager,
)
from engine.exceptions import UsageError


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def make_event(position: int, task_id: str = "t1", **extra: Any) -> dict[str, Any]:
    event = {
        "event_id": f"e{position}",
        "position": position,
        "task_id": task_id,
        "version": position,
        "type": "progress",
        "status": "running",
        "progress": 0.5,
        "at": "2024-01-01T00:00:00+00:00",
        "group_id": task_id,
    }
    event.update(extra)
    return event


def publish(manager: EventManager, event: dict[str, Any]) -> int:
    return manager.publish_event(event["event_id"], event["group_id"], event)


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_public_names_match_dunder_all() -> None:
    public = {name for name in vars(engine.bus) if not name.startswith("_")}
    modules = {"annotations", "_manager", "_queue", "_subscription"}

    assert set(engine.bus.__all__) == public - modules


async def test_subscribe_returns_id_and_queue_plainly_and_when_awaited() -> None:
    manager = EventManager()

    subscriber_id, queue = manager.subscribe("g")
    awaited_id, awaited_queue = await manager.subscribe("g")

    assert isinstance(subscriber_id, str)
    assert isinstance(queue, asyncio.Queue)
    assert awaited_id != subscriber_id
    assert awaited_queue is not queue
    assert manager.subscriber_count == 2


async def test_publish_returns_number_of_subscribers_reached() -> None:
    manager = EventManager()
    _, first = manager.subscribe("t1")
    _, second = manager.subscribe(None)
    manager.subscribe("other")

    delivered = publish(manager, make_event(1))

    assert delivered == 2
    assert first.get_nowait()["position"] == 1
    assert second.get_nowait()["position"] == 1


async def test_publish_can_be_awaited_as_in_the_seed_readme() -> None:
    manager = EventManager()
    _, queue = manager.subscribe("t1")

    delivered = await manager.publish_event("e1", "t1", make_event(1))

    assert delivered == 1
    assert queue.qsize() == 1


async def test_publish_with_no_subscribers_returns_zero() -> None:
    manager = EventManager()

    assert publish(manager, make_event(1)) == 0


async def test_group_subscriber_receives_only_its_group() -> None:
    manager = EventManager()
    _, queue = manager.subscribe("t1")

    publish(manager, make_event(1, "t1"))
    publish(manager, make_event(2, "t2"))
    publish(manager, make_event(3, "t1"))

    assert [e["position"] for e in drain(queue)] == [1, 3]


async def test_subscriber_without_group_receives_every_event() -> None:
    manager = EventManager()
    _, queue = manager.subscribe()

    publish(manager, make_event(1, "t1"))
    publish(manager, make_event(2, "t2"))
    manager.publish_event("e3", None, {"position": 3})

    assert [e["position"] for e in drain(queue)] == [1, 2, 3]


async def test_events_of_each_task_arrive_in_version_order() -> None:
    manager = EventManager()
    _, everything = manager.subscribe()
    _, group = manager.subscribe("g")
    versions = {f"task{n}": 0 for n in range(20)}

    position = 0
    for _ in range(50):
        for task_id in versions:
            position += 1
            versions[task_id] += 1
            event = make_event(position, task_id, version=versions[task_id])
            manager.publish_event(f"e{position}", "g", event)

    for queue in (everything, group):
        seen: dict[str, list[int]] = {}
        for event in drain(queue):
            seen.setdefault(event["task_id"], []).append(event["version"])
        assert all(v == list(range(1, 51)) for v in seen.values())
        assert len(seen) == 20


async def test_waiting_subscriber_is_woken_by_publish() -> None:
    manager = EventManager()
    _, queue = manager.subscribe("t1")
    waiting = asyncio.Event()

    async def read() -> dict[str, Any]:
        waiting.set()
        return await queue.get()

    reader = asyncio.create_task(read())
    await waiting.wait()
    publish(manager, make_event(7))

    assert (await reader)["position"] == 7


async def test_publish_adds_group_id_when_event_has_none() -> None:
    manager = EventManager()
    _, queue = manager.subscribe("g")

    manager.publish_event("e1", "g", {"status": "completed"})

    assert queue.get_nowait() == {"status": "completed", "group_id": "g"}


async def test_unsubscribe_stops_delivery() -> None:
    manager = EventManager()
    subscriber_id, queue = manager.subscribe("t1")

    removed = manager.unsubscribe(subscriber_id)
    delivered = publish(manager, make_event(1))

    assert removed == 1
    assert delivered == 0
    assert queue.empty()
    assert manager.subscriber_count == 0


async def test_unsubscribe_of_unknown_id_returns_zero_and_can_be_awaited() -> None:
    manager = EventManager()
    subscriber_id, _ = manager.subscribe()

    first = await manager.unsubscribe(subscriber_id)
    second = await manager.unsubscribe(subscriber_id)

    assert (first, second) == (1, 0)


async def test_unsubscribe_leaves_other_subscribers_of_the_group() -> None:
    manager = EventManager()
    first_id, _ = manager.subscribe("t1")
    _, second = manager.subscribe("t1")

    manager.unsubscribe(first_id)

    assert publish(manager, make_event(1)) == 1
    assert second.get_nowait()["position"] == 1


async def test_duplicate_event_id_is_published_once() -> None:
    manager = EventManager()
    _, queue = manager.subscribe("t1")
    event = make_event(1)

    first = publish(manager, event)
    second = publish(manager, event)

    assert (first, second) == (1, 0)
    assert len(drain(queue)) == 1
    assert manager.is_processed("e1")
    assert not manager.is_processed("e2")


async def test_is_processed_forgets_ids_after_result_ttl() -> None:
    clock = FakeClock()
    manager = EventManager(result_ttl=10, clock=clock)
    publish(manager, make_event(1))

    clock.now_s += 10.5

    assert not manager.is_processed("e1")
    assert publish(manager, make_event(1)) == 0
    assert manager.is_processed("e1")


async def test_is_processed_remembers_only_the_last_ids() -> None:
    manager = EventManager(max_processed_ids=3)

    for position in range(1, 6):
        publish(manager, make_event(position))

    remembered = [manager.is_processed(f"e{n}") for n in range(1, 6)]
    assert remembered == [False, False, True, True, True]


async def test_recent_events_expire_after_result_ttl() -> None:
    clock = FakeClock()
    manager = EventManager(result_ttl=60, clock=clock)
    publish(manager, make_event(1))
    clock.now_s += 30
    publish(manager, make_event(2))

    clock.now_s += 31

    assert [e["position"] for e in manager.get_recent_events()] == [2]


async def test_prune_releases_expired_events_and_ids() -> None:
    clock = FakeClock()
    manager = EventManager(result_ttl=5, clock=clock)
    publish(manager, make_event(1))

    clock.now_s += 6
    manager.prune()
    clock.now_s -= 6

    assert manager.get_recent_events() == []
    assert not manager.is_processed("e1")


async def test_recent_events_are_bounded_by_count() -> None:
    manager = EventManager(max_recent_events=3)

    for position in range(1, 11):
        publish(manager, make_event(position))

    assert [e["position"] for e in manager.get_recent_events()] == [8, 9, 10]


async def test_recent_events_accept_filter_object_callable_and_await() -> None:
    manager = EventManager()
    publish(manager, make_event(1, "t1"))
    publish(manager, make_event(2, "t2"))

    by_object = manager.get_recent_events(GroupFilter("t2"))
    by_callable = manager.get_recent_events(lambda e: e["position"] == 1)
    awaited = await manager.get_recent_events(GroupFilter("t1", "task_id"))

    assert [e["position"] for e in by_object] == [2]
    assert [e["position"] for e in by_callable] == [1]
    assert [e["position"] for e in awaited] == [1]


async def test_recent_events_reject_a_filter_that_cannot_match() -> None:
    manager = EventManager()

    with pytest.raises(UsageError, match="match"):
        manager.get_recent_events(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "setting", ["result_ttl", "max_queue_size", "max_recent_events"]
)
async def test_settings_must_be_positive(setting: str) -> None:
    with pytest.raises(UsageError, match=setting):
        EventManager(**{setting: 0})


async def test_overflow_drops_events_and_marks_where_to_resume() -> None:
    manager = EventManager(max_queue_size=4)
    _, queue = manager.subscribe("t1")

    counts = [publish(manager, make_event(n)) for n in range(1, 11)]
    first_two = [queue.get_nowait(), queue.get_nowait()]
    publish(manager, make_event(11))
    rest = drain(queue)
    after = publish(manager, make_event(12))

    assert counts == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert [e["position"] for e in first_two + rest[:2]] == [1, 2, 3, 4]
    assert rest[2] == {
        "type": OVERFLOW,
        "dropped": 7,
        "resume_after_position": 4,
        "group_id": "t1",
        "subscribed": True,
    }
    assert len(rest) == 3
    assert after == 1
    assert queue.get_nowait()["position"] == 12


async def test_each_overflow_episode_gets_one_marker_with_queue_of_one() -> None:
    manager = EventManager(max_queue_size=1)
    _, queue = manager.subscribe()

    publish(manager, make_event(1))
    publish(manager, make_event(2))
    first = queue.get_nowait()
    publish(manager, make_event(3))
    marker = queue.get_nowait()
    publish(manager, make_event(4))
    publish(manager, make_event(5))
    second = drain(queue)

    assert first["position"] == 1
    assert (marker["dropped"], marker["resume_after_position"]) == (2, 1)
    assert second[0]["position"] == 4
    assert second[1]["type"] == OVERFLOW
    assert (second[1]["dropped"], second[1]["resume_after_position"]) == (1, 4)
    assert len(second) == 2


async def test_overflow_marker_reaches_a_reader_waiting_on_get() -> None:
    manager = EventManager(max_queue_size=2)
    _, queue = manager.subscribe()
    for n in range(1, 5):
        publish(manager, make_event(n))

    received = [await queue.get() for _ in range(3)]

    assert [e.get("position") for e in received[:2]] == [1, 2]
    assert received[2]["type"] == OVERFLOW
    assert received[2]["dropped"] == 2


async def test_overflow_is_logged_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = EventManager(max_queue_size=2)
    _, queue = manager.subscribe()

    with caplog.at_level(logging.INFO, logger="engine.bus"):
        for n in range(1, 50):
            publish(manager, make_event(n))
        drain(queue)
        for n in range(50, 100):
            publish(manager, make_event(n))

    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("subscriber_overflowed") == 2
    assert actions.count("subscriber_resumed") == 1


async def test_never_reading_subscriber_does_not_hold_back_others() -> None:
    manager = EventManager()
    _, stalled = manager.subscribe()
    _, reader = manager.subscribe("t1")
    in_order = 0
    delivered_to = set()
    tracemalloc.start()

    for chunk in range(100):
        if chunk == 20:
            baseline, _ = tracemalloc.get_traced_memory()
        for n in range(chunk * 1000 + 1, chunk * 1000 + 1001):
            delivered_to.add(publish(manager, make_event(n)))
        for event in drain(reader):
            in_order += event["position"] == in_order + 1
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()

    assert in_order == 100_000
    assert delivered_to == {1, 2}
    assert stalled.qsize() == manager.max_queue_size + 1
    assert grown < 256 * 1024
    backlog = drain(stalled)
    assert backlog[-1]["type"] == OVERFLOW
    assert backlog[-1]["dropped"] == 90_000
    assert backlog[-1]["resume_after_position"] == 10_000


async def test_subscriber_is_removed_when_its_queue_is_collected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = EventManager()
    _, queue = manager.subscribe("t1")

    with caplog.at_level(logging.WARNING, logger="engine.bus"):
        del queue
        gc.collect()
        count = manager.subscriber_count

    assert count == 0
    assert publish(manager, make_event(1)) == 0
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions == ["subscriber_collected"]


async def test_subscriber_overflowed_past_horizon_is_evicted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    manager = EventManager(max_queue_size=2, overflow_horizon=30, clock=clock)
    _, queue = manager.subscribe("t1")
    for n in range(1, 4):
        publish(manager, make_event(n))

    clock.now_s += 31
    with caplog.at_level(logging.WARNING, logger="engine.bus"):
        publish(manager, make_event(4))

    assert manager.subscriber_count == 0
    assert publish(manager, make_event(5)) == 0
    assert "subscriber_evicted" in [getattr(r, "action", None) for r in caplog.records]
    marker = drain(queue)[-1]
    assert (marker["dropped"], marker["subscribed"]) == (2, False)


async def test_prune_evicts_long_overflowed_subscriber_without_publishes() -> None:
    clock = FakeClock()
    manager = EventManager(max_queue_size=1, overflow_horizon=30, clock=clock)
    _, queue = manager.subscribe()
    publish(manager, make_event(1))
    publish(manager, make_event(2))

    clock.now_s += 29
    manager.prune()
    kept = manager.subscriber_count
    clock.now_s += 2
    manager.prune()

    assert kept == 1
    assert manager.subscriber_count == 0


async def test_cleanup_loop_runs_prune_until_stopped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager = EventManager(cleanup_interval=0.001)
    pruned = asyncio.Event()
    monkeypatch.setattr(manager, "prune", pruned.set)

    with caplog.at_level(logging.INFO, logger="engine.bus"):
        await manager.start()
        await manager.start()
        await pruned.wait()
        await manager.stop()
        await manager.stop()

    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions == ["event_manager_started", "event_manager_stopped"]


async def test_cleanup_loop_survives_a_failing_prune(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager = EventManager(cleanup_interval=0.001)
    calls = asyncio.Queue[int]()

    def failing_prune() -> None:
        calls.put_nowait(1)
        raise RuntimeError("boom")

    monkeypatch.setattr(manager, "prune", failing_prune)
    with caplog.at_level(logging.ERROR, logger="engine.bus"):
        await manager.start()
        await calls.get()
        await calls.get()
        await manager.stop()

    assert "event_cleanup_failed" in [
        getattr(r, "action", None) for r in caplog.records
    ]


async def test_subscription_registers_only_inside_its_block() -> None:
    manager = EventManager()

    async with EventSubscription("t1", manager) as subscription:
        inside = manager.subscriber_count
        publish(manager, make_event(1))
        event = await subscription.queue.get()

    assert inside == 1
    assert event["position"] == 1
    assert manager.subscriber_count == 0
    assert subscription.subscriber_id is None


async def test_subscription_unsubscribes_when_block_raises() -> None:
    manager = EventManager()

    with pytest.raises(RuntimeError):
        async with EventSubscription("t1", manager):
            raise RuntimeError("boom")

    assert manager.subscriber_count == 0


async def test_subscription_defaults_to_module_event_manager() -> None:
    async with EventSubscription("test-default-manager") as subscription:
        delivered = event_manager.publish_event(
            "test-default-manager-e1", "test-default-manager", {"position": 1}
        )
        event = await subscription.queue.get()

    assert subscription.manager is event_manager
    assert delivered == 1
    assert event["position"] == 1


async def test_reading_an_unentered_subscription_raises_usage_error() -> None:
    subscription = EventSubscription("t1", EventManager())

    with pytest.raises(UsageError, match="async with"):
        await subscription.collect_events(timeout=1)


async def test_collect_events_stops_at_condition_inclusive() -> None:
    manager = EventManager()
    async with EventSubscription("t1", manager) as subscription:
        for n in range(1, 6):
            publish(manager, make_event(n))

        events = await subscription.collect_events(
            until_condition=lambda e: e["position"] == 3, timeout=5
        )
        rest = await subscription.collect_events(lambda e: True, timeout=5)

    assert [e["position"] for e in events] == [1, 2, 3]
    assert [e["position"] for e in rest] == [4]


async def test_collect_events_returns_what_arrived_when_time_runs_out() -> None:
    manager = EventManager()
    async with EventSubscription("t1", manager) as subscription:
        publish(manager, make_event(1))

        events = await subscription.collect_events(timeout=0.01)

    assert [e["position"] for e in events] == [1]


class Status(enum.Enum):
    FAILED = "failed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "completed"), ("type", "cancelled"), ("status", Status.FAILED)],
)
async def test_wait_for_completion_event_returns_first_terminal_event(
    field: str, value: object
) -> None:
    manager = EventManager()
    async with EventSubscription("t1", manager) as subscription:
        publish(manager, make_event(1))
        publish(manager, make_event(2, **{field: value}))
        publish(manager, make_event(3, type="completed"))

        event = await subscription.wait_for_completion_event(timeout=5)

    assert event is not None
    assert event["position"] == 2


async def test_wait_for_completion_event_returns_none_on_timeout() -> None:
    manager = EventManager()
    async with EventSubscription("t1", manager) as subscription:
        publish(manager, make_event(1))

        event = await subscription.wait_for_completion_event(timeout=0.01)

    assert event is None


async def test_wait_for_completion_event_raises_when_events_were_dropped() -> None:
    manager = EventManager(max_queue_size=1)
    async with EventSubscription("t1", manager) as subscription:
        publish(manager, make_event(1))
        publish(manager, make_event(2, type="completed"))

        with pytest.raises(SubscriptionOverflowError) as caught:
            await subscription.wait_for_completion_event(timeout=5)

    assert caught.value.dropped == 1
    assert caught.value.resume_after_position == 1


async def test_async_for_yields_events_in_publish_order() -> None:
    manager = EventManager()
    received: list[int] = []

    async def consume(subscription: EventSubscription) -> None:
        async for event in subscription:
            received.append(event["position"])
            if event["type"] == "completed":
                return

    async with EventSubscription("t1", manager) as subscription:
        consumer = asyncio.create_task(consume(subscription))
        for n in range(1, 100):
            publish(manager, make_event(n))
        publish(manager, make_event(100, type="completed"))
        await consumer

    assert received == list(range(1, 101))


async def test_async_for_ends_after_eviction_once_drained() -> None:
    clock = FakeClock()
    manager = EventManager(max_queue_size=1, overflow_horizon=1, clock=clock)
    async with EventSubscription(None, manager) as subscription:
        publish(manager, make_event(1))
        publish(manager, make_event(2))
        clock.now_s += 2
        publish(manager, make_event(3))

        events = [event async for event in subscription]

    assert events[0]["position"] == 1
    assert events[1]["type"] == OVERFLOW
    assert events[1]["subscribed"] is False
    assert len(events) == 2


def test_manager_started_on_a_finished_loop_starts_again_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = EventManager(cleanup_interval=0.001)

    async def start_and_prune() -> bool:
        pruned = asyncio.Event()
        monkeypatch.setattr(manager, "prune", pruned.set)
        await manager.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await pruned.wait()
        return pruned.is_set()

    with asyncio.Runner() as runner:
        first = runner.run(start_and_prune())
    with asyncio.Runner() as runner:
        second = runner.run(start_and_prune())
        runner.run(manager.stop())

    assert (first, second) == (True, True)
