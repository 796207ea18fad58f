"""Fresh task ids: version 4 UUIDs, unique, and never shared with a fork."""

from __future__ import annotations

import os
import uuid

from engine.ids import new_task_id


def test_ids_are_version_4_uuids_in_canonical_form():
    for _ in range(1000):
        task_id = new_task_id()
        parsed = uuid.UUID(task_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == task_id


def test_ids_do_not_repeat():
    ids = [new_task_id() for _ in range(50_000)]

    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_ids_its_parent_read_ahead():
    new_task_id()  # the parent now holds ids read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, "\n".join(new_task_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_ids = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent_ids = {new_task_id() for _ in range(300)}

    assert len(child_ids) == 300
    assert not child_ids & parent_ids
