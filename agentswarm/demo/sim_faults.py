"""SIM_FAULTS: how often the simulated worker breaks its branch the way models do, and the roll that decides.

`type:0.08,test:0.04,semantic:0.03,flaky:0.02,shared:0.05` gives the chance of each kind per attempt
(their sum at most 1). The roll is a pure function of (task id, attempt): the same attempt always
breaks the same way, and a retry (a new attempt) rolls again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from agentswarm.demo.sim_files import fault_target

FAULT_KINDS = ("type", "test", "semantic", "flaky", "shared")
TRAILER = "Sim-Fault"  # the commit trailer naming the fault a branch still carries
FIXED_TRAILER = "Sim-Fixed"  # a fault the worker put in and fixed within the same attempt
PAIR_TRAILER = "Sim-Pair"  # a semantic fault's pair: the branches started from the same main clash
# How the built-in agent's answer to `finish` starts when the branch fails the checks
# (agentswarm.agent.checks.PRESUBMIT_FAILED; kept here so the simulator needs nothing from the agent).
PRESUBMIT_FAILED = "Error: presubmit failed"


def parse_sim_faults(text: str) -> dict[str, float]:
    """`kind:rate,...` as {kind: rate}; ValueError naming what is wrong (unknown kind, bad rate, sum > 1)."""
    rates: dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, value = item.partition(":")
        kind = kind.strip().lower()
        if not sep:
            raise ValueError(f"{item!r} must be kind:rate, e.g. type:0.08")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use {', '.join(FAULT_KINDS)}")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: the rate must be a number between 0 and 1") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{item!r}: the rate must be between 0 and 1")
        if kind in rates:
            raise ValueError(f"{kind!r} is given twice")
        rates[kind] = rate
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"the rates add up to {sum(rates.values()):g}, more than 1")
    return rates


def roll(rates: dict[str, float], task_id: str, attempt: int, salt: str = "") -> str | None:
    """The fault this attempt of this task makes, or None: deterministic, uniform in [0, 1) per (task, attempt)."""
    if not rates:
        return None
    digest = hashlib.sha256(f"{task_id}:{attempt}:{salt}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for kind in FAULT_KINDS:
        edge += rates.get(kind, 0.0)
        if point < edge:
            return kind
    return None


def faults_from_env(environ: Mapping[str, str] | None = None) -> tuple[dict[str, float], int]:
    """SIM_FAULTS and SIM_FAULT_ATTEMPTS from the environment; ValueError naming the variable when one is bad."""
    env = os.environ if environ is None else environ
    text = env.get("SIM_FAULTS", "")
    try:
        rates = parse_sim_faults(text)
    except ValueError as exc:
        raise ValueError(f"SIM_FAULTS={text!r} is not valid: {exc}") from None
    raw = env.get("SIM_FAULT_ATTEMPTS", "").strip()
    try:
        attempts = int(raw) if raw else 0
    except ValueError:
        attempts = -1
    if attempts < 0:
        raise ValueError(f"SIM_FAULT_ATTEMPTS={raw!r} is not valid: give a whole number >= 0 "
                         "(0: faults on every attempt; N: only on attempts up to N)")
    return rates, attempts


def describe(rates: dict[str, float], attempts: int = 0) -> str:
    """One line for a banner: the rates as SIM_FAULTS spells them, and the attempt limit."""
    if not rates:
        return "no simulated faults"
    text = ",".join(f"{kind}:{rates[kind]:g}" for kind in FAULT_KINDS if kind in rates)
    return f"simulated faults {text}" + (f" on attempts <= {attempts}" if attempts else " on every attempt")


def worker_fault(faults: dict[str, float] | None, task_id: str, attempt: int, scope: list[str],
                 fault_attempts: int = 0) -> str | None:
    """The fault this attempt puts in its branch: rolled per (task id, attempt), None past `fault_attempts`
    (when > 0) or when the kind has no file to go into in this scope."""
    if not faults or (fault_attempts > 0 and attempt > fault_attempts):
        return None
    kind = roll(faults, task_id, attempt)
    return kind if kind is not None and fault_target(kind, scope) is not None else None
