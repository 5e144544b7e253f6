"""Presubmit slots: the orchestrator's gate lets only so many sandboxes run their checks at once."""

from __future__ import annotations

import threading
import time

from agentswarm.agent.checks import gate_slot
from agentswarm.work.gate import LLMGate


def test_a_slot_is_held_while_the_sandbox_keeps_its_connection_and_freed_when_it_closes():
    pool = threading.BoundedSemaphore(1)
    with LLMGate("http://127.0.0.1:9", None, slots=pool, slot_wait_s=5) as gate:
        order: list[str] = []
        with gate_slot(gate.socket_path, gate.token, 5) as first:
            assert first is True

            def second() -> None:
                with gate_slot(gate.socket_path, gate.token, 5) as got:
                    order.append(f"second {got}")

            t = threading.Thread(target=second)
            t.start()
            time.sleep(0.5)
            assert order == []  # waiting for the one slot
            order.append("first done")
        t.join(5)
        assert order == ["first done", "second True"]
        with gate_slot(gate.socket_path, "not-the-token", 2) as refused:
            assert refused is False  # a wrong token gets no slot (the checks then run unpaced)
    assert pool.acquire(timeout=1)  # every slot came back


def test_without_a_gate_the_checks_run_unpaced(tmp_path):
    with gate_slot(str(tmp_path / "no.sock"), "t", 1) as got:
        assert got is False
