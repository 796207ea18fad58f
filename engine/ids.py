"""Fresh task ids: random (version 4) UUIDs in their usual text form.

``str(uuid.uuid4())`` costs a system call and a ``UUID`` object per id, a
visible share of ``add_task``. Here the random bytes of 256 ids are read at
once and formatted in one pass; a forked child drops the ids its parent had
read ahead, so two processes never hand out the same one.
"""

from __future__ import annotations

import os

__all__ = ["new_task_id"]

_BATCH = 256
# The variant bits (10xx) of the 17th hex digit, whatever random digit it was.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_ready: list[str] = []


def _refill() -> None:
    raw = os.urandom(16 * _BATCH).hex()
    variant = _VARIANT
    _ready.extend(
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}-"
        f"{variant[raw[i + 16]]}{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, len(raw), 32)
    )


def new_task_id() -> str:
    """A new random UUID (version 4) as a 36-character string."""
    try:
        return _ready.pop()
    except IndexError:
        _refill()
        return _ready.pop()


os.register_at_fork(after_in_child=_ready.clear)
