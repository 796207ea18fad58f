"""The pure fold: apply(info, event) -> TaskInfo, and fold(events)."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.events import EventType, TaskEvent, utcnow
from projections.task_info import TaskInfo, TaskStatus, apply, fold

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def event(version, type_, task_id="t1", seconds=0, **data):
    at = T0 + dt.timedelta(seconds=seconds)
    return TaskEvent.build(version, task_id, version, type_, at, data)


def queued(**data):
    data.setdefault("task_type", "index_file")
    return event(1, EventType.QUEUED, **data)


def test_queued_event_creates_pending_task():
    info = apply(None, queued(priority=3, metadata={"k": "v"}))

    assert info.id == "t1"
    assert info.status is TaskStatus.PENDING
    assert info.created_at == T0
    assert info.started_at is None and info.completed_at is None
    assert info.progress == 0.0
    assert info.metadata == {"k": "v"}
    assert info.task_type == "index_file"
    assert info.priority == 3
    assert info.attempt == 1
    assert info.version == 1


def test_queued_without_metadata_has_empty_metadata():
    info = apply(None, queued())

    assert info.metadata == {}


def test_started_event_makes_task_running():
    info = apply(None, queued())

    info = apply(info, event(2, EventType.STARTED, seconds=1, attempt=1))

    assert info.status is TaskStatus.RUNNING
    assert info.started_at == T0 + dt.timedelta(seconds=1)


def test_progress_event_sets_progress():
    info = apply(apply(None, queued()), event(2, EventType.STARTED))

    info = apply(info, event(3, EventType.PROGRESS, progress=0.4))

    assert info.progress == 0.4
    assert info.status is TaskStatus.RUNNING


def test_completed_event_sets_result_time_and_full_progress():
    info = fold([queued(), event(2, EventType.STARTED)])["t1"]

    info = apply(info, event(3, EventType.COMPLETED, seconds=2, result=[1, 2]))

    assert info.status is TaskStatus.COMPLETED
    assert info.result == [1, 2]
    assert info.progress == 1.0
    assert info.completed_at == T0 + dt.timedelta(seconds=2)
    assert info.from_cache is False
    assert info.finished


def test_completed_from_cache_sets_flag():
    info = apply(
        apply(None, queued()), event(2, EventType.COMPLETED, result=1, from_cache=True)
    )

    assert info.from_cache is True


def test_failed_event_sets_error_and_type():
    info = fold(
        [
            queued(),
            event(2, EventType.STARTED),
            event(
                3, EventType.FAILED, seconds=3, error="boom", error_type="ValueError"
            ),
        ]
    )["t1"]

    assert info.status is TaskStatus.FAILED
    assert info.error == "boom"
    assert info.error_type == "ValueError"
    assert info.completed_at == T0 + dt.timedelta(seconds=3)
    assert info.result is None


def test_cancelled_event_defaults_error_text():
    info = fold([queued(), event(2, EventType.CANCELLED)])["t1"]

    assert info.status is TaskStatus.CANCELLED
    assert info.error == "cancelled"
    assert info.error_type == "CancelledError"
    assert info.completed_at is not None


def test_new_attempt_resets_run_state():
    info = fold(
        [
            queued(),
            event(2, EventType.STARTED, attempt=1),
            event(3, EventType.PROGRESS, progress=0.7),
            event(4, EventType.QUEUED, attempt=2, reason="worker_lost"),
        ]
    )["t1"]

    assert info.status is TaskStatus.PENDING
    assert info.attempt == 2
    assert info.started_at is None
    assert info.progress == 0.0
    assert info.created_at == T0
    assert info.task_type == "index_file"


def test_second_attempt_started_then_completed():
    info = fold(
        [
            queued(),
            event(2, EventType.STARTED, attempt=1),
            event(3, EventType.QUEUED, attempt=2),
            event(4, EventType.STARTED, attempt=2),
            event(5, EventType.COMPLETED, result="ok"),
        ]
    )["t1"]

    assert (info.status, info.attempt, info.result) == (TaskStatus.COMPLETED, 2, "ok")


def test_apply_ignores_event_already_folded():
    info = fold([queued(), event(2, EventType.STARTED)])["t1"]

    again = apply(info, event(2, EventType.STARTED, seconds=9))
    older = apply(info, queued())

    assert again is info
    assert older is info


def test_apply_does_not_change_its_input():
    info = apply(None, queued())
    snapshot = info.model_dump()

    later = apply(info, event(2, EventType.STARTED))

    assert info.model_dump() == snapshot
    assert later is not info


def test_task_info_is_frozen():
    info = apply(None, queued())

    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        info.status = TaskStatus.RUNNING


def test_first_event_other_than_queued_is_rejected_naming_task():
    with pytest.raises(ValueError, match="t1"):
        apply(None, event(1, EventType.STARTED))


def test_fold_builds_one_info_per_task_in_log_order():
    events = [
        event(1, EventType.QUEUED, task_id="a"),
        event(1, EventType.QUEUED, task_id="b"),
        event(2, EventType.STARTED, task_id="a"),
        event(2, EventType.CANCELLED, task_id="b"),
        event(3, EventType.COMPLETED, task_id="a", result=5),
    ]

    infos = fold(events)

    assert set(infos) == {"a", "b"}
    assert infos["a"].status is TaskStatus.COMPLETED
    assert infos["a"].result == 5
    assert infos["b"].status is TaskStatus.CANCELLED


def test_fold_of_redelivered_events_is_idempotent():
    events = [
        queued(),
        event(2, EventType.STARTED),
        event(3, EventType.COMPLETED, result=1),
    ]

    once = fold(events)
    twice = fold(events + events)

    assert once == twice


def test_status_values_are_the_readme_strings():
    assert [s.value for s in TaskStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert TaskStatus.COMPLETED == "completed"


def test_finished_property_only_for_terminal_states():
    base = apply(None, queued())

    running = apply(base, event(2, EventType.STARTED))

    assert not base.finished
    assert not running.finished
    assert apply(running, event(3, EventType.FAILED, error="x")).finished


def test_task_info_has_readme_fields():
    fields = set(TaskInfo.model_fields)

    assert {
        "id",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "result",
        "error",
        "progress",
        "metadata",
        "from_cache",
        "task_type",
        "priority",
        "attempt",
        "error_type",
    } <= fields


def test_model_copy_with_an_update_works_on_folded_infos_and_events():
    event = TaskEvent.build(
        None, "c", 1, EventType.QUEUED, utcnow(), {"task_type": "t"}
    )
    info = apply(None, event)

    renamed = info.model_copy(update={"task_type": "other"})
    deep = info.model_copy(deep=True)
    moved = event.model_copy(update={"position": 7})

    assert renamed.task_type == "other" and info.task_type == "t"
    assert deep == info and deep.metadata is not info.metadata
    assert moved.position == 7 and event.position is None
    assert renamed.model_dump()["task_type"] == "other"
