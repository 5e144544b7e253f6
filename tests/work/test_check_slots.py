"""Presubmit slots: the orchestrator's gate lets only so many sandboxes run their checks at once, one slot each."""

from __future__ import annotations

import threading
import time

from agentswarm.agent.checks import gate_slot
from agentswarm.work.model_gate import LLMGate


def test_a_slot_is_held_while_the_sandbox_keeps_its_connection_and_freed_when_it_closes():
    pool = threading.BoundedSemaphore(1)
    with LLMGate("http://127.0.0.1:9", None, slots=pool, slot_wait_s=5) as one, \
            LLMGate("http://127.0.0.1:9", None, slots=pool, slot_wait_s=5) as other:
        order: list[str] = []
        with gate_slot(one.socket_path, one.token, 5) as first:
            assert first is True

            def second() -> None:
                with gate_slot(other.socket_path, other.token, 5) as got:
                    order.append(f"second {got}")

            t = threading.Thread(target=second)
            t.start()
            time.sleep(0.5)
            assert order == []  # the other sandbox waits for the one slot
            order.append("first done")
        t.join(5)
        assert order == ["first done", "second True"]
        with gate_slot(one.socket_path, "not-the-token", 2) as refused:
            assert refused is False  # a wrong token gets no slot (the checks then run unpaced)
    assert pool.acquire(timeout=1)  # every slot came back


def test_one_sandbox_cannot_hold_more_than_one_presubmit_slot():
    pool = threading.BoundedSemaphore(3)
    with LLMGate("http://127.0.0.1:9", None, slots=pool, slot_wait_s=5) as greedy, \
            LLMGate("http://127.0.0.1:9", None, slots=pool, slot_wait_s=5) as other:
        with gate_slot(greedy.socket_path, greedy.token, 5) as first:
            assert first is True
            # Asked again (and again) while it holds one: refused at once, the pool untouched.
            for _ in range(3):
                with gate_slot(greedy.socket_path, greedy.token, 5) as again:
                    assert again is False
            with gate_slot(other.socket_path, other.token, 5) as theirs:
                assert theirs is True  # the slots it tried to take are still there for the other sandbox
        deadline = time.monotonic() + 30
        while True:  # once it let go (the gate sees the hang-up a moment later), it may take one again
            with gate_slot(greedy.socket_path, greedy.token, 5) as later:
                if later or time.monotonic() > deadline:
                    break
            time.sleep(0.05)
        assert later is True
    for _ in range(3):
        assert pool.acquire(timeout=1)  # every slot came back


def test_without_a_gate_the_checks_run_unpaced(tmp_path):
    with gate_slot(str(tmp_path / "no.sock"), "t", 1) as got:
        assert got is False
