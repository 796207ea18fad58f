"""TaskInfoIndex: finished tasks beyond the hot limit are packed and read
back equal; unfinished tasks are never packed."""

from __future__ import annotations

import pytest

from engine.events import EventType, TaskEvent, utcnow
from projections.index import TaskInfoIndex
from projections.task_info import TaskStatus, apply


def _info(task_id: str, *types: EventType):
    info = None
    for version, type_ in enumerate((EventType.QUEUED, *types), start=1):
        data = {"task_type": "t", "metadata": {"k": 1}} if version == 1 else {}
        if type_ is EventType.COMPLETED:
            data = {"result": [1, 2]}
        event = TaskEvent.build(None, task_id, version, type_, utcnow(), data)
        info = apply(info, event)
    return info


def test_finished_tasks_beyond_the_hot_limit_read_back_equal():
    index = TaskInfoIndex(hot_limit=2)
    finished = {f"t{i}": _info(f"t{i}", EventType.STARTED, EventType.COMPLETED)
                for i in range(5)}  # fmt: skip

    for task_id, info in finished.items():
        index[task_id] = info

    assert len(index._packed) == 3
    assert {task_id: index[task_id] for task_id in finished} == finished
    assert dict(index.items()) == finished
    assert sorted(i.id for i in index.values()) == sorted(finished)


def test_unfinished_tasks_stay_hot():
    index = TaskInfoIndex(hot_limit=0)

    index["a"] = _info("a", EventType.STARTED)
    index["b"] = _info("b", EventType.STARTED, EventType.FAILED)

    assert "a" in index._hot
    assert "b" in index._packed
    assert index.get("a").status is TaskStatus.RUNNING
    assert index.get("b").status is TaskStatus.FAILED


def test_a_packed_task_that_gets_a_new_event_is_hot_again():
    index = TaskInfoIndex(hot_limit=0)
    done = _info("a", EventType.STARTED, EventType.FAILED)
    index["a"] = done

    requeued = apply(
        done, TaskEvent.build(None, "a", 4, EventType.QUEUED, utcnow(), {})
    )
    index["a"] = requeued

    assert "a" not in index._packed
    assert index["a"].status is TaskStatus.PENDING
    assert len(index) == 1


def test_delete_pop_and_missing_keys():
    index = TaskInfoIndex(hot_limit=0)
    index["a"] = _info("a", EventType.STARTED, EventType.COMPLETED)
    index["b"] = _info("b")

    popped = index.pop("a")
    del index["b"]

    assert popped.id == "a"
    assert len(index) == 0
    assert index.get("a") is None
    assert "a" not in index


def test_packed_tasks_without_metadata_are_not_tracked_by_the_collector():
    import gc

    index = TaskInfoIndex(hot_limit=0)
    info = _info("plain", EventType.STARTED, EventType.COMPLETED)
    info = info.model_copy(update={"metadata": {}, "result": 3})
    index["plain"] = info
    gc.collect()

    assert not gc.is_tracked(index._packed["plain"])
    assert index["plain"] == info
    assert index["plain"].status is TaskStatus.COMPLETED
    assert index["plain"].metadata == {}


def test_version_of_answers_without_unpacking():
    index = TaskInfoIndex(hot_limit=0)
    index["hot"] = _info("hot", EventType.STARTED)
    index["packed"] = _info("packed", EventType.STARTED, EventType.COMPLETED)

    assert "packed" in index._packed
    assert index.version_of("hot") == 2
    assert index.version_of("packed") == 3
    assert index.version_of("unknown") == 0


def _random_log(seed: int, tasks: int = 60) -> list[TaskEvent]:
    import random

    rng = random.Random(seed)
    versions = {f"r{n}": 0 for n in range(tasks)}
    plans = {
        task_id: rng.choice(
            [
                [EventType.QUEUED],
                [EventType.QUEUED, EventType.STARTED],
                [EventType.QUEUED, EventType.STARTED, EventType.PROGRESS],
                [EventType.QUEUED, EventType.STARTED, EventType.COMPLETED],
                [EventType.QUEUED, EventType.CANCELLED],
                [EventType.QUEUED, EventType.STARTED, EventType.FAILED,
                 EventType.QUEUED, EventType.STARTED, EventType.COMPLETED],
            ]
        )
        for task_id in versions
    }  # fmt: skip
    payloads = {
        EventType.QUEUED: {"task_type": "t", "metadata": {"group_id": "g"}},
        EventType.STARTED: {"attempt": 1},
        EventType.PROGRESS: {"progress": 0.5},
        EventType.COMPLETED: {"result": [1, {"a": 2}]},
        EventType.FAILED: {"error": "boom", "error_type": "ValueError"},
        EventType.CANCELLED: {"error": "cancelled"},
    }
    log: list[TaskEvent] = []
    while any(plans.values()):
        task_id = rng.choice([t for t, plan in plans.items() if plan])
        type_ = plans[task_id].pop(0)
        versions[task_id] += 1
        event = TaskEvent.build(
            len(log) + 1, task_id, versions[task_id], type_, utcnow(), payloads[type_]
        )
        log.append(event)
        if rng.random() < 0.1:
            log.append(event)  # redelivered: folded once
    return log


def test_a_replay_through_the_loader_equals_folding_with_apply():
    from projections.index import IndexLoader

    for seed in range(5):
        log = _random_log(seed)
        by_apply = TaskInfoIndex(hot_limit=8)
        for event in log:
            by_apply[event.task_id] = apply(by_apply.get(event.task_id), event)
        loaded = TaskInfoIndex(hot_limit=8)
        loader = IndexLoader(loaded)
        for event in log:
            loader.feed(event.__dict__)
        loader.finish()

        assert dict(loaded.items()) == dict(by_apply.items())


def test_the_loader_continues_tasks_already_in_the_index():
    from projections.index import IndexLoader

    log = _random_log(11)
    half = len(log) // 2
    expected = TaskInfoIndex(hot_limit=4)
    for event in log:
        expected[event.task_id] = apply(expected.get(event.task_id), event)
    index = TaskInfoIndex(hot_limit=4)
    for event in log[:half]:  # some hot, some packed already
        index[event.task_id] = apply(index.get(event.task_id), event)
    loader = IndexLoader(index)
    for event in log:  # the whole log again: the first half is not refolded
        loader.feed(event.__dict__)
    loader.finish()

    assert index._packed
    assert dict(index.items()) == dict(expected.items())


@pytest.mark.parametrize("pack_pending", [False, True])
def test_folding_into_the_index_equals_folding_with_apply(pack_pending: bool):
    for seed in range(5):
        log = _random_log(seed)
        by_apply = TaskInfoIndex(hot_limit=8)
        folded = TaskInfoIndex(hot_limit=8, pack_pending=pack_pending)
        # The journal's path: the index numbers each event itself.
        by_parts = TaskInfoIndex(hot_limit=8, pack_pending=pack_pending)
        taken_before: dict[str, object] = {}
        for event in log:
            before = by_apply.get(event.task_id)
            after = apply(before, event)
            by_apply[event.task_id] = after
            seen = folded.get(event.task_id)
            if seen is not None:
                taken_before[event.task_id] = (seen, seen.model_dump())
            assert folded.fold(event) is (after is not before)
            assert folded.version_of(event.task_id) == after.version
            assert folded.is_finished(event.task_id) == after.finished
            if after is not before:  # the journal never makes a redelivery
                values = by_parts.fold_next(
                    event.task_id, event.type, event.at, event.data
                )
                assert values["version"] == event.version

        assert dict(folded.items()) == dict(by_apply.items())
        assert dict(by_parts.items()) == dict(by_apply.items())
        # An info handed out earlier never changed under later folds.
        for info, dumped in taken_before.values():
            assert info.model_dump() == dumped
        if pack_pending:
            pending = [t for t, i in folded.items() if i.status == "pending"]
            assert pending and all(t in folded._packed for t in pending)


def test_folding_refuses_a_task_whose_first_event_is_not_queued():
    index = TaskInfoIndex()
    event = TaskEvent.build(1, "t", 1, EventType.STARTED, utcnow(), {})
    with pytest.raises(ValueError, match="arrived before its 'queued' event"):
        index.fold(event)
    assert "t" not in index


def test_fold_next_refuses_a_first_event_that_is_not_queued():
    index = TaskInfoIndex()
    with pytest.raises(ValueError, match="arrived before its 'queued' event"):
        index.fold_next("t", EventType.STARTED, utcnow(), {})
    assert "t" not in index


def test_an_info_is_built_once_per_event_and_tasks_never_share_metadata():
    index = TaskInfoIndex()
    index.fold_next("a", EventType.QUEUED, utcnow(), {"task_type": "t"})
    index.fold_next("b", EventType.QUEUED, utcnow(), {"task_type": "t"})

    first = index["a"]
    assert index["a"] is first  # no new object until the task changes
    first.metadata["mine"] = 1
    assert index["b"].metadata == {}

    index.fold_next("a", EventType.STARTED, utcnow(), {})
    assert index["a"] is not first
    assert index["a"].status is TaskStatus.RUNNING
    assert first.status is TaskStatus.PENDING


def test_hot_tasks_of_atomic_values_are_not_tracked_by_the_collector():
    import gc

    index = TaskInfoIndex()
    index.fold_next("a", EventType.QUEUED, utcnow(), {"task_type": "t"})
    index.fold_next("a", EventType.STARTED, utcnow(), {"attempt": 1})
    gc.collect()

    assert not gc.is_tracked(index._hot["a"])
    assert index["a"].status is TaskStatus.RUNNING
    index["b"] = index["a"].model_copy(update={"id": "b"})
    gc.collect()
    assert not gc.is_tracked(index._hot["b"])
    assert index["b"].status is TaskStatus.RUNNING
