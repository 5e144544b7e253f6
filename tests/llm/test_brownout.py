"""The brownout proxy (agentswarm/demo/brownout.py) in front of the fake LLM, each fault on its own."""

from __future__ import annotations

import pytest

from agentswarm.demo.brownout import BrownoutProxy, Rates
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.llm import LLMClient, LLMHTTPError, LLMProtocolError, LLMTimeout

HELLO = [{"role": "user", "content": "hello"}]
NONE = {"rate_limit": 0.0, "server_error": 0.0, "hang": 0.0, "cut": 0.0}


def only(kind: str) -> Rates:
    return Rates(**{**NONE, kind: 1.0})


def test_a_clean_roll_passes_the_upstreams_answer_through():
    with FakeLLMServer(lambda body: "through") as srv, BrownoutProxy(srv.url, rates=Rates(**NONE)) as proxy:
        client = LLMClient(proxy.url, max_retries=0)
        assert client.chat(HELLO).content == "through" and client.chat(HELLO, stream=True).content == "through"
        assert client.models() == ["fake-glm"]
    assert proxy.counts()["ok"] == 2 and len(srv.requests) == 2


def test_a_429_carries_retry_after_and_a_500_is_a_500():
    with FakeLLMServer(lambda body: "x") as srv:
        with BrownoutProxy(srv.url, rates=only("rate_limit"), retry_after_s=3) as proxy:
            with pytest.raises(LLMHTTPError) as info:
                LLMClient(proxy.url, max_retries=0).chat(HELLO)
            assert info.value.status == 429 and info.value.retry_after == 3
        with BrownoutProxy(srv.url, rates=only("server_error")) as proxy:
            with pytest.raises(LLMHTTPError, match="HTTP 500"):
                LLMClient(proxy.url, max_retries=0).chat(HELLO)
        assert not srv.requests  # a fault never reaches the upstream


def test_a_hang_outlasts_the_callers_timeout():
    with FakeLLMServer(lambda body: "x") as srv, BrownoutProxy(srv.url, rates=only("hang"), hang_s=5) as proxy:
        with pytest.raises(LLMTimeout):
            LLMClient(proxy.url, max_retries=0, timeout_s=0.5).chat(HELLO)
        assert proxy.counts()["hang"] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_cut_answer_is_the_real_one_broken_off_in_both_forms(stream):
    with FakeLLMServer(lambda body: "a whole answer " * 20) as srv, \
            BrownoutProxy(srv.url, rates=only("cut"), seed=3) as proxy:
        for _ in range(8):
            with pytest.raises(LLMProtocolError):
                LLMClient(proxy.url, max_retries=0).chat(HELLO, stream=stream)
    assert len(srv.requests) == 8 and proxy.counts()["cut"] == 8
    assert set(proxy.outcomes) == {"cut", "cut-closed"}  # both forms: short of a declared length, and none


def test_the_same_seed_rolls_the_same_outcomes_in_each_lane_however_they_interleave():
    rates = Rates(rate_limit=0.3, server_error=0.3, hang=0, cut=0.2)
    lane = lambda body: body["messages"][0]["content"]  # noqa: E731
    with FakeLLMServer(lambda body: "x") as srv:
        runs = []
        for order in (["a", "b"] * 10, ["a"] * 10 + ["b"] * 10):
            with BrownoutProxy(srv.url, rates=rates, seed=11, lane=lane) as proxy:
                client = LLMClient(proxy.url, max_retries=0)
                for which in order:
                    try:
                        client.chat([{"role": "user", "content": which}])
                    except (LLMHTTPError, LLMProtocolError):
                        pass
                runs.append({k: [o for o, body in proxy.rolls if lane(body) == k] for k in "ab"})
    assert runs[0] == runs[1] and runs[0]["a"] != runs[0]["b"]
    assert {"rate_limit", "server_error", "ok"} <= set(runs[0]["a"] + runs[0]["b"])


def test_rates_are_checked():
    with pytest.raises(ValueError, match="sum to at most 1"):
        Rates(rate_limit=0.6, server_error=0.6)
