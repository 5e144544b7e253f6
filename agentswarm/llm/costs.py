"""Cost arithmetic: tokens at list price, GPU-hours by wall-clock time in use (overlapping calls share it).

Standard library only. A GPU-hour endpoint costs the same whether one call or eight run at once: the
hour is charged once. Each call is charged for the part of its interval no earlier-recorded call of the
same endpoint covered, so the calls' costs add up to the union of their intervals, whatever the order.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[float, float]  # (start, end) in seconds, any common clock


def union_seconds(intervals: Iterable[Interval]) -> float:
    """Length of the union of the intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def uncovered_seconds(call: Interval, others: Iterable[Interval]) -> float:
    """How much of `call` none of `others` covers."""
    a, b = call
    if b <= a:
        return 0.0
    clipped = [(max(a, x), min(b, y)) for x, y in others if y > a and x < b]
    return (b - a) - union_seconds(clipped)


def token_cost(prompt_tokens: int, completion_tokens: int, price_in_per_mtok: float, price_out_per_mtok: float) -> float:
    """Dollars for tokens at per-million prices."""
    return (max(0, prompt_tokens) * price_in_per_mtok + max(0, completion_tokens) * price_out_per_mtok) / 1_000_000


def gpu_cost(seconds: float, gpu_price_per_hour: float, gpus: int = 1) -> float:
    """Dollars for `seconds` of wall-clock time on `gpus` GPUs."""
    return max(0.0, seconds) / 3600.0 * gpu_price_per_hour * max(1, gpus)


def sandbox_cost(seconds: float, cpu: float, memory_mb: int, cpu_price_per_hour: float,
                 memory_price_per_gib_hour: float) -> float:
    """Dollars for a sandbox of `cpu` cores and `memory_mb` running `seconds` (Modal's pricing shape)."""
    hours = max(0.0, seconds) / 3600.0
    return hours * (cpu * cpu_price_per_hour + memory_mb / 1024.0 * memory_price_per_gib_hour)
