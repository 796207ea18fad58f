"""In-process event bus: the worker publishes task events, subscribers read them.

See ``docs/events.md`` for delivery guarantees, the overflow marker and the
logging actions. Imports only :mod:`engine.exceptions` of ours.
"""

from __future__ import annotations

from engine.bus._manager import EventFilter, EventManager, GroupFilter, event_manager
from engine.bus._queue import (
    OVERFLOW,
    Count,
    Event,
    EventList,
    Subscribed,
    SubscriberQueue,
)
from engine.bus._subscription import (
    TERMINAL_STATES,
    EventSubscription,
    SubscriptionOverflowError,
    is_terminal,
)

__all__ = [
    "OVERFLOW",
    "TERMINAL_STATES",
    "Count",
    "Event",
    "EventFilter",
    "EventList",
    "EventManager",
    "EventSubscription",
    "GroupFilter",
    "Subscribed",
    "SubscriberQueue",
    "SubscriptionOverflowError",
    "event_manager",
    "is_terminal",
]
