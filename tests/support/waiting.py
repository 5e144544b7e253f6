"""Polling for a condition on the real stack, with an optional beat stand-in between polls."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 120.0, every: float = 0.3, tick=None):
    """Poll until predicate() is truthy; call tick() between polls (a beat stand-in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if tick:
            tick()
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s")
