"""Every error taskengine raises, grouped by who has to act on it.

This module imports nothing of ours, so every other module may use it.

    TaskEngineError                 root of every error we raise
    ├── UsageError                  the caller passed something wrong
    │   ├── UnknownTaskTypeError        no task function registered under a name
    │   ├── NotAsyncTaskError           a task function is not ``async def``
    │   ├── PayloadEncodingError        an argument cannot be written to the log
    │   ├── InvalidTimeoutError         a timeout that is not a positive number
    │   ├── DuplicateTaskIdError        a task id that is already in the log
    │   └── WorkerNotStartedError       ``add_task`` before ``start()``
    ├── StateError                  the task is not in a state that allows it
    │   ├── TaskNotFoundError           no task with that id
    │   └── TaskAlreadyFinishedError    the task already reached its end
    ├── StoreError                  the event log failed us
    │   ├── ConcurrencyConflictError    ``(task_id, version)`` already written
    │   ├── StoreUnavailableError       the database cannot be reached
    │   └── SchemaVersionError          the database schema is not at our head
    ├── CacheError                  the result cache failed us
    └── TaskFailedError             awaited task ended FAILED (from futures)

Control-flow signals (:class:`TaskCancelledSignal`) deliberately do not derive
from :class:`TaskEngineError`, so ``except TaskEngineError`` never swallows a
cancellation.
"""

from __future__ import annotations

from typing import Any


class TaskEngineError(Exception):
    """Root of every error raised by taskengine."""

    default_message = "The task engine failed."

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or self.default_message
        self.context = context
        for key, value in context.items():
            setattr(self, key, value)
        super().__init__(self.message)

    @property
    def error_type(self) -> str:
        """A stable snake_case code for this kind of error."""
        name = type(self).__name__.removesuffix("Error")
        return "".join(
            "_" + ch.lower() if ch.isupper() and i else ch.lower()
            for i, ch in enumerate(name)
        )


class UsageError(TaskEngineError):
    """The caller passed an argument the engine cannot accept."""

    default_message = "The engine was called with an argument it cannot accept."


class UnknownTaskTypeError(UsageError, LookupError):
    """No task function is registered under the given task type."""

    default_message = "No task function is registered under that task type."


class NotAsyncTaskError(UsageError, TypeError):
    """A task function must be a coroutine function (``async def``)."""

    default_message = "Task functions must be defined with 'async def'."


class PayloadEncodingError(UsageError, TypeError):
    """A value cannot be encoded losslessly into the event log."""

    default_message = "A value cannot be written to the event log."


class InvalidTimeoutError(UsageError, ValueError):
    """A timeout must be a positive number of seconds, or None."""

    default_message = "A timeout must be a positive number of seconds, or None."


class DuplicateTaskIdError(UsageError, ValueError):
    """A task with this id already exists in the log."""

    default_message = "A task with this id already exists."


class WorkerNotStartedError(UsageError, RuntimeError):
    """The worker must be started before tasks can be added."""

    default_message = (
        "The worker is not running: call 'await worker.start()' or use "
        "'async with AsyncTaskWorker(...)' before adding tasks."
    )


class StateError(TaskEngineError):
    """The task is not in a state that allows the operation."""

    default_message = "The task is not in a state that allows this operation."


class TaskNotFoundError(StateError, KeyError):
    """No task with the given id exists."""

    default_message = "No task with that id exists."

    def __str__(self) -> str:
        return self.message


class TaskAlreadyFinishedError(StateError):
    """The task already reached a terminal state."""

    default_message = "The task has already finished."


class StoreError(TaskEngineError):
    """The event store failed to read or write the log."""

    default_message = "The event store failed."


class ConcurrencyConflictError(StoreError):
    """Another writer already recorded this ``(task_id, version)``."""

    default_message = "Another writer already recorded this task event."


class StoreUnavailableError(StoreError):
    """The event store cannot be reached."""

    default_message = "The event store cannot be reached."


class SchemaVersionError(StoreError):
    """The database schema is not at the revision this code expects."""

    default_message = (
        "The database schema is not at the revision this code expects; "
        "run 'taskengine db upgrade'."
    )


class CacheError(TaskEngineError):
    """The result cache failed."""

    default_message = "The result cache failed."


class TaskFailedError(TaskEngineError):
    """An awaited task ended FAILED; the message is the task's own error."""

    default_message = "The task failed."


class TaskCancelledSignal(BaseException):  # noqa: N818 - a signal, not an error
    """Raised inside a task body to stop it as cancelled (control flow)."""
