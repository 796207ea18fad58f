"""``taskengine serve``: options, defaults, task modules and the app."""

from __future__ import annotations

import argparse

import pytest

from engine.serve import (
    DEFAULT_DATABASE_URL,
    add_serve_arguments,
    api_token,
    database_url,
    load_task_modules,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskengine serve")
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_bind_loopback_and_load_examples():
    args = parse()

    assert args.host == "127.0.0.1"
    assert args.port == 8000
    assert args.imports == []
    assert args.no_examples is False


def test_import_is_repeatable():
    args = parse("--import", "a.b", "--import", "c", "--no-examples")

    assert args.imports == ["a.b", "c"]
    assert args.no_examples is True


def test_help_explains_the_reverse_proxy_setup():
    parser = argparse.ArgumentParser(prog="taskengine serve")
    add_serve_arguments(parser)

    text = parser.format_help()

    assert "reverse proxy" in text
    assert "X-Forwarded-For" in text
    assert "proxy_buffering off" in text
    assert "TASKENGINE_API_TOKEN" in text


def test_database_url_prefers_option_then_environment(monkeypatch):
    monkeypatch.delenv("TASKENGINE_DATABASE_URL", raising=False)
    assert database_url(None) == DEFAULT_DATABASE_URL

    monkeypatch.setenv("TASKENGINE_DATABASE_URL", "sqlite+aiosqlite:///env.db")
    assert database_url(None) == "sqlite+aiosqlite:///env.db"
    assert database_url("sqlite+aiosqlite:///cli.db") == "sqlite+aiosqlite:///cli.db"


def test_token_comes_from_option_or_environment(monkeypatch):
    monkeypatch.delenv("TASKENGINE_API_TOKEN", raising=False)
    assert api_token(None) is None

    monkeypatch.setenv("TASKENGINE_API_TOKEN", "from-env")
    assert api_token(None) == "from-env"
    assert api_token("from-cli") == "from-cli"


def test_unimportable_task_module_exits_2_with_a_sentence(capsys):
    with pytest.raises(SystemExit) as exited:
        load_task_modules(["no_such_module_for_taskengine"], examples=False)

    assert exited.value.code == 2
    assert "cannot import task module 'no_such_module_for_taskengine'" in (
        capsys.readouterr().err
    )
