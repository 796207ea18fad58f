"""The taskengine command on real files: demo, tasks, history, replay,
report, export, db, and the clear errors of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.cli import main


@pytest.fixture
def corpus(tmp_path):
    directory = tmp_path / "corpus"
    directory.mkdir()
    (directory / "a.txt").write_text("one two\nthree\n", encoding="utf-8")
    (directory / "b.py").write_text("print('hi')\n", encoding="utf-8")
    (directory / "nested").mkdir()
    (directory / "nested" / "c.md").write_text("x y z", encoding="utf-8")
    (directory / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    return directory


@pytest.fixture
def database(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"


def _export(database, capsys):
    capsys.readouterr()
    assert main(["export", "--database", database]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_demo_indexes_each_file_and_fails_the_binary_one(corpus, database, capsys):
    code = main(["demo", str(corpus), "--database", database, "--workers", "2"])

    out = capsys.readouterr().out
    assert code == 0
    assert "completed" in out and "NotTextError" in out
    events = _export(database, capsys)
    ends = {e["task_id"]: e for e in events if e["type"] in ("completed", "failed")}
    assert len(ends) == 4
    failed = [e for e in ends.values() if e["type"] == "failed"]
    assert len(failed) == 1
    assert "blob.bin is not UTF-8 text" in failed[0]["data"]["error"]
    results = [e["data"]["result"] for e in ends.values() if e["type"] == "completed"]
    assert sorted(r["lines"] for r in results) == [1, 1, 2]
    assert sorted(r["words"] for r in results) == [1, 3, 3]


def test_second_demo_run_adds_to_the_same_log(corpus, database, capsys):
    main(["demo", str(corpus), "--database", database])
    first = len(_export(database, capsys))

    main(["demo", str(corpus), "--database", database])

    events = _export(database, capsys)
    assert len(events) > first
    assert len({e["task_id"] for e in events if e["type"] == "queued"}) == 8
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_tasks_history_replay_and_report_read_the_log(corpus, database, capsys):
    main(["demo", str(corpus), "--database", database])
    events = _export(database, capsys)
    failed_id = next(e["task_id"] for e in events if e["type"] == "failed")

    assert main(["tasks", "--status", "failed", "--database", database]) == 0
    tasks_out = capsys.readouterr().out
    assert main(["history", failed_id, "--database", database]) == 0
    history_out = capsys.readouterr().out
    assert main(["replay", "--position", "4", "--database", database]) == 0
    replay_out = capsys.readouterr().out
    assert main(["report", "--database", database]) == 0
    report_out = capsys.readouterr().out

    assert "1 tasks" in tasks_out
    assert "queued" in history_out and "failed" in history_out
    assert "pending" in replay_out and "4 events folded" in replay_out
    assert "Failures by error type" in report_out and "NotTextError" in report_out


def test_db_upgrade_then_current_reports_head(database, capsys):
    assert main(["db", "upgrade", "--database", database]) == 0
    assert main(["db", "current", "--database", database]) == 0

    assert "up to date" in capsys.readouterr().out


def test_history_of_unknown_task_is_a_clear_error(corpus, database, capsys):
    main(["demo", str(corpus), "--database", database])
    capsys.readouterr()

    code = main(["history", "no-such-task", "--database", database])

    assert code == 2
    assert "No task with id 'no-such-task'" in capsys.readouterr().err


def test_reading_a_missing_log_says_what_to_run(tmp_path, capsys):
    code = main(["tasks", "--database", f"sqlite:///{tmp_path / 'none.db'}"])

    assert code == 2
    assert "run 'taskengine demo' first" in capsys.readouterr().err


def test_demo_on_a_missing_directory_is_a_clear_error(tmp_path, database, capsys):
    code = main(["demo", str(tmp_path / "absent"), "--database", database])

    assert code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_console_script_runs_demo_in_a_fresh_process(corpus, database):
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", str(corpus), "--database",
         database],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "taskengine demo" in result.stdout


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")

    code = main(["tasks", "--database", f"sqlite:///{junk}"])

    err = capsys.readouterr().err
    assert code == 2
    assert "cannot be opened: file is not a database" in err
    assert "Traceback" not in err


def test_a_malformed_database_url_is_a_clear_error(corpus, capsys):
    code = main(["demo", str(corpus), "--database", "not a url"])

    assert code == 2
    assert "'not a url' is not a database URL" in capsys.readouterr().err


def test_db_current_of_a_missing_file_creates_nothing(tmp_path, capsys):
    path = tmp_path / "absent.db"

    code = main(["db", "current", "--database", f"sqlite:///{path}"])

    assert code == 2
    assert not path.exists()
    assert "There is no log" in capsys.readouterr().err


def test_serve_refuses_a_busy_port_before_starting_a_worker(database, capsys):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        code = main(["serve", "--port", str(port), "--database", database])

    assert code == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_db_upgrade_of_a_file_that_is_not_a_database_is_one_sentence(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")

    code = main(["db", "upgrade", "--database", f"sqlite:///{junk}"])

    err = capsys.readouterr().err
    assert code == 2
    assert "cannot be migrated: file is not a database" in err
    assert "Traceback" not in err and "sqlalche.me" not in err


def test_tail_refuses_a_poll_interval_that_is_not_positive(database, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tail", "--follow", "--poll", "0", "--database", database])

    assert exit_info.value.code == 2
    assert "not a positive number of seconds" in capsys.readouterr().err


def test_serve_refuses_a_log_it_cannot_open_before_starting(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")

    code = main(["serve", "--port", "0", "--database", f"sqlite:///{junk}"])

    assert code == 2
    assert "file is not a database" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--limit", "0"], "0 is not a positive whole number"),
        (["demo", "--workers", "1.5"], "'1.5' is not a positive whole number"),
        (["replay", "--position", "-5"], "-5 is not a log position"),
    ],
)
def test_bad_numbers_are_refused_with_a_sentence(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
