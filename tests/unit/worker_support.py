"""Helpers shared by the worker tests."""

from __future__ import annotations

import asyncio


def gated():
    """A task function that holds its worker until ``gate`` is set.

    A closure, so the SQLite log never has to encode the events.
    """
    gate, entered = asyncio.Event(), asyncio.Event()

    async def wait_on():
        entered.set()
        await gate.wait()
        return "released"

    return wait_on, gate, entered
