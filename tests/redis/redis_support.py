"""The Redis server the tests use: TASKENGINE_TEST_REDIS_URL, else the
shared server's database 0."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("TASKENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
