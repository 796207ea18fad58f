"""Every asyncpg error we expect maps to one of our store errors."""

from __future__ import annotations

import inspect

import asyncpg
import asyncpg.exceptions
import pytest

from engine.exceptions import (
    ConcurrencyConflictError,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
)
from engine.store.postgres import PostgresEventStore, translate_error

URL = "postgresql+asyncpg://app:secret@db.invalid:5432/log"

EXPECTED = [
    (asyncpg.UniqueViolationError, ConcurrencyConflictError),
    (asyncpg.UndefinedTableError, SchemaVersionError),
    (asyncpg.ConnectionDoesNotExistError, StoreUnavailableError),
    (asyncpg.ConnectionFailureError, StoreUnavailableError),
    (asyncpg.ClientCannotConnectError, StoreUnavailableError),
    (asyncpg.CannotConnectNowError, StoreUnavailableError),
    (asyncpg.AdminShutdownError, StoreUnavailableError),
    (asyncpg.CrashShutdownError, StoreUnavailableError),
    (asyncpg.TooManyConnectionsError, StoreUnavailableError),
    (asyncpg.InvalidCatalogNameError, StoreUnavailableError),
    (asyncpg.InvalidPasswordError, StoreUnavailableError),
    (asyncpg.InvalidAuthorizationSpecificationError, StoreUnavailableError),
    (ConnectionRefusedError, StoreUnavailableError),
    (ConnectionResetError, StoreUnavailableError),
    (OSError, StoreUnavailableError),
    (TimeoutError, StoreUnavailableError),
    (asyncpg.QueryCanceledError, StoreError),
    (asyncpg.DeadlockDetectedError, StoreError),
    (asyncpg.ProgramLimitExceededError, StoreError),
    (asyncpg.CharacterNotInRepertoireError, StoreError),
    (asyncpg.InterfaceError, StoreError),
]


def _instance(cls: type[BaseException]) -> BaseException:
    return cls("boom")


@pytest.mark.parametrize(("driver_error", "ours"), EXPECTED)
def test_translate_error_maps_expected_driver_errors(driver_error, ours):
    exc = _instance(driver_error)

    translated = translate_error(exc, URL)

    assert type(translated) is ours
    assert "secret" not in str(translated)
    assert str(translated).endswith(".")


def test_translate_error_keeps_constraint_name_and_sqlstate():
    exc = asyncpg.UniqueViolationError("duplicate key value")
    exc.constraint_name = "task_events_task_id_version_key"

    translated = translate_error(exc, URL)

    assert translated.constraint_name == "task_events_task_id_version_key"
    assert translated.sqlstate == "23505"


def _connection_classes() -> list[type[BaseException]]:
    found = []
    for _, cls in inspect.getmembers(asyncpg.exceptions, inspect.isclass):
        sqlstate = getattr(cls, "sqlstate", None) or ""
        if sqlstate.startswith(("08", "57P", "53", "28", "3D")):
            found.append(cls)
    return found


@pytest.mark.parametrize("driver_error", _connection_classes())
def test_every_connection_class_sqlstate_means_unavailable(driver_error):
    assert type(translate_error(_instance(driver_error), URL)) is (
        StoreUnavailableError
    )


def _all_driver_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(asyncpg.exceptions, inspect.isclass)
        if issubclass(cls, asyncpg.PostgresError | asyncpg.InterfaceError)
    ]


def test_every_asyncpg_error_translates_to_a_store_error():
    untranslated = [
        cls
        for cls in _all_driver_classes()
        if not isinstance(translate_error(_instance(cls), URL), StoreError)
    ]

    assert untranslated == []


async def test_unreachable_server_raises_store_unavailable_on_open():
    store = PostgresEventStore(
        "postgresql://root@127.0.0.1:1/nothing", connect_timeout_s=2
    )

    with pytest.raises(StoreUnavailableError) as caught:
        await store.open()

    assert caught.value.__cause__ is not None
