"""EventManager.publish_lazy: the event dict is built only when needed."""

from __future__ import annotations

from engine.bus import EventManager


def _factory(calls, event):
    def make():
        calls.append(event["event_id"])
        return dict(event)

    return make


async def test_publish_lazy_builds_nothing_without_subscribers():
    manager = EventManager()
    calls = []

    delivered = manager.publish_lazy("e1", "g", _factory(calls, {"event_id": "e1"}))

    assert delivered == 0
    assert calls == []
    assert manager.is_processed("e1")


async def test_recent_events_build_deferred_events_once():
    manager = EventManager()
    calls = []
    manager.publish_lazy("e1", "g", _factory(calls, {"event_id": "e1"}))

    first = manager.get_recent_events()
    second = manager.get_recent_events()

    assert [e["event_id"] for e in first] == ["e1"]
    assert first[0]["group_id"] == "g"
    assert second == first
    assert calls == ["e1"]


async def test_publish_lazy_delivers_to_a_subscriber_of_the_group():
    manager = EventManager()
    _, queue = manager.subscribe("g")
    calls = []

    delivered = manager.publish_lazy("e1", "g", _factory(calls, {"event_id": "e1"}))

    assert delivered == 1
    assert (await queue.get())["event_id"] == "e1"
    assert calls == ["e1"]


async def test_publish_lazy_skips_an_event_id_seen_within_the_ttl():
    manager = EventManager()
    calls = []
    manager.publish_lazy("e1", "g", _factory(calls, {"event_id": "e1"}))

    manager.publish_lazy("e1", "g", _factory(calls, {"event_id": "e1"}))

    assert len(manager.get_recent_events()) == 1


def _render(calls):
    def render(name, group):
        calls.append(name)
        return {"event_id": name, "group_id": group}

    return render


def _route(name, group):
    return group


async def test_publish_unique_renders_nothing_without_subscribers():
    manager = EventManager()
    calls = []

    delivered = manager.publish_unique(_route, _render(calls), "e1", "g")

    assert delivered == 0
    assert calls == []
    assert [e["event_id"] for e in manager.get_recent_events()] == ["e1"]
    assert calls == ["e1"]


async def test_publish_unique_delivers_to_group_and_everyone_subscribers():
    manager = EventManager()
    _, group_queue = manager.subscribe("g")
    _, all_queue = manager.subscribe()
    _, other_queue = manager.subscribe("other")
    calls = []

    delivered = manager.publish_unique(_route, _render(calls), "e1", "g")

    assert delivered == 2
    assert (await group_queue.get())["event_id"] == "e1"
    assert (await all_queue.get())["event_id"] == "e1"
    assert other_queue.empty()
    assert calls == ["e1"]


async def test_publish_unique_skips_rendering_for_subscribers_of_other_groups():
    manager = EventManager()
    _, other_queue = manager.subscribe("other")
    calls = []

    assert manager.publish_unique(_route, _render(calls), "e1", "g") == 0

    assert calls == []
    assert other_queue.empty()


async def test_unique_events_count_as_processed_while_recent():
    clock = [0.0]
    manager = EventManager(result_ttl=10, max_recent_events=2, clock=lambda: clock[0])
    calls = []
    manager.publish_unique(_route, _render(calls), "e1", "g")
    manager.publish_unique(_route, _render(calls), "e2", "g")

    assert manager.is_processed("e1") and manager.is_processed("e2")
    assert not manager.is_processed("e3")
    manager.publish_unique(_route, _render(calls), "e3", "g")
    assert not manager.is_processed("e1")  # no longer among the recent two
    clock[0] = 11.0
    assert not manager.is_processed("e3")  # past result_ttl
