"""The brownout proxy (agentswarm/testing/brownout.py) in front of the fake LLM, each fault on its own."""

from __future__ import annotations

import pytest

from agentswarm.llm import LLMClient, LLMHTTPError, LLMProtocolError, LLMTimeout
from agentswarm.testing.brownout import BrownoutProxy, Rates
from agentswarm.testing.fake_llm import FakeLLMServer

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
        for _ in range(6):  # both forms (declared length and not) among six rolls
            with pytest.raises(LLMProtocolError):
                LLMClient(proxy.url, max_retries=0).chat(HELLO, stream=stream)
    assert len(srv.requests) == 6 and proxy.counts()["cut"] == 6


def test_the_same_seed_rolls_the_same_outcomes():
    with FakeLLMServer(lambda body: "x") as srv:
        runs = []
        for _ in range(2):
            with BrownoutProxy(srv.url, rates=Rates(rate_limit=0.3, server_error=0.3, hang=0, cut=0.2),
                               seed=11) as proxy:
                client = LLMClient(proxy.url, max_retries=0)
                for _ in range(20):
                    try:
                        client.chat(HELLO)
                    except (LLMHTTPError, LLMProtocolError):
                        pass
                runs.append(proxy.outcomes)
    assert runs[0] == runs[1] and len(set(runs[0])) == 4


def test_rates_are_checked():
    with pytest.raises(ValueError, match="sum to at most 1"):
        Rates(rate_limit=0.6, server_error=0.6)
