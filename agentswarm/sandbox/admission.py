"""Admission control for sandbox creation: a cap on creations in flight and a rate per second.

A hundred work slots that start together must not trip the provider's rate limits or
fork a hundred toolchains at once on one machine. Thread-safe: the work workers run
their slots as threads of one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar


class AdmissionController:
    """Context manager that admits one sandbox creation when both limits allow it."""

    _shared: ClassVar[dict[tuple[int, float], AdmissionController]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        max_concurrent_creates: int,
        creates_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrent_creates < 1:
            raise ValueError("max_concurrent_creates must be at least 1")
        if creates_per_second <= 0:
            raise ValueError("creates_per_second must be positive")
        self.max_concurrent_creates = max_concurrent_creates
        self.creates_per_second = creates_per_second
        self._slots = threading.BoundedSemaphore(max_concurrent_creates)
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def shared(cls, max_concurrent_creates: int, creates_per_second: float) -> AdmissionController:
        """One controller per (cap, rate) in this process, so every backend instance shares the limits."""
        key = (max_concurrent_creates, float(creates_per_second))
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(max_concurrent_creates, creates_per_second)
            return cls._shared[key]

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for a free creation slot, then for this creation's turn in the rate schedule."""
        if not self._slots.acquire(timeout=timeout):
            return False
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.creates_per_second
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return True

    def release(self) -> None:
        """Free the creation slot taken by acquire()."""
        self._slots.release()

    def __enter__(self) -> AdmissionController:
        if not self.acquire():
            raise RuntimeError("admission slot not acquired")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
