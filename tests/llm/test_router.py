"""The router over real fake endpoints (HTTP on loopback) and real Redis: overflow, circuits, cold starts, roles."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from agentswarm.llm import LLMHTTPError, LLMProtocolError
from agentswarm.llm.endpoints import Endpoint
from agentswarm.llm.router import NoEndpoint, RoutedClient, Router
from agentswarm.llm.routing_state import LocalRoutingState, RedisRoutingState
from tests.support.env import TEST_REDIS_URL

HELLO = [{"role": "user", "content": "hello"}]


def ep(name: str, url: str, **kw) -> Endpoint:
    return Endpoint(name=name, base_url=url, model=f"m-{name}", **kw)


@pytest.fixture(params=["redis", "local"])
def state(request, redis_client):
    return RedisRoutingState(redis_client) if request.param == "redis" else LocalRoutingState()


def test_fill_the_first_then_overflow(state):
    router = Router([ep("a", "http://127.0.0.1:1", max_concurrency=2), ep("b", "http://127.0.0.1:2")], state)
    leases = [router.lease("worker") for _ in range(3)]
    assert [x.endpoint.name for x in leases] == ["a", "a", "b"]
    router.done(leases[0], True)
    assert router.lease("worker").endpoint.name == "a"  # a freed slot on the first is taken again first


def test_concurrency_holds_across_threads_and_calls_overflow(redis_client):
    with FakeLLMServer(lambda body: "slow", latency_s=1.5) as slow, FakeLLMServer(lambda body: "fast") as fast:
        router = Router([ep("slow", slow.url, max_concurrency=2), ep("fast", fast.url, max_concurrency=50)],
                        RedisRoutingState(redis_client))
        client = RoutedClient(router, "worker")
        peak, busy, lock = [0], [0], threading.Lock()
        got: list[str] = []

        def one() -> None:
            reply = client.chat(HELLO)
            with lock:
                got.append(reply.endpoint)

        def watch(stop: threading.Event) -> None:
            while not stop.is_set():
                n = router.state_of("slow")["in_use"]
                busy[0] = n
                peak[0] = max(peak[0], n)
                time.sleep(0.01)

        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(stop,))
        watcher.start()
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        watcher.join()
        assert sorted(got) == ["fast"] * 4 + ["slow"] * 2
        assert peak[0] == 2 and len(slow.requests) == 2 and len(fast.requests) == 4
        assert {r["model"] for r in fast.requests} == {"m-fast"}


def test_slots_are_shared_by_processes_and_expire(redis_client):
    one, two = RedisRoutingState(redis_client), RedisRoutingState(redis.Redis.from_url(TEST_REDIS_URL))
    assert one.take_slot("a", 1, "t1", ttl_s=0.3)
    assert not two.take_slot("a", 1, "t2", ttl_s=0.3)  # another process sees it taken
    time.sleep(0.4)  # the holder was killed: its lease expires
    assert two.take_slot("a", 1, "t2", ttl_s=5) and two.in_use("a") == 1
    two.free_slot("a", "t2")
    assert one.in_use("a") == 0


def test_circuit_opens_half_opens_and_closes(state):
    a = ep("a", "http://127.0.0.1:1", backoff_s=1.0)
    router = Router([a, ep("b", "http://127.0.0.1:2")], state)
    first = router.lease("worker")
    router.done(first, False)
    assert router.state_of("a")["circuit"] == "open"
    assert router.lease("worker").endpoint.name == "b"  # failed over while open
    time.sleep(1.1)
    assert router.state_of("a")["circuit"] == "half-open"
    probe = router.lease("worker")
    assert probe.endpoint.name == "a" and probe.probe
    assert router.lease("worker").endpoint.name == "b"  # one probe at a time (for the backoff at most)
    router.done(probe, False)  # the probe failed: open again, for twice as long (2 s)
    assert router.state_of("a")["circuit"] == "open"
    time.sleep(1.0)
    assert router.state_of("a")["circuit"] == "open"
    time.sleep(1.1)
    probe = router.lease("worker")
    assert probe.endpoint.name == "a"
    router.done(probe, True)
    assert router.state_of("a")["circuit"] == "closed"
    assert router.lease("worker").endpoint.name == "a"


def test_connection_refused_and_5xx_fail_over(redis_client, closed_port):
    with FakeLLMServer(lambda body: "ok", faults=[Fault.server_error(500)]) as flaky, \
            FakeLLMServer(lambda body: "from c") as good:
        router = Router([ep("dead", f"http://127.0.0.1:{closed_port}"), ep("flaky", flaky.url),
                         ep("c", good.url)], RedisRoutingState(redis_client))
        reply = RoutedClient(router, "worker").chat(HELLO)
        assert (reply.endpoint, reply.content) == ("c", "from c") and reply.started_at > 0
        assert [f["endpoint"] for f in reply.failovers] == ["dead", "flaky"]  # what failed before, to record
        assert "HTTP 500" in reply.failovers[1]["error"] and reply.failovers[1]["model"] == "m-flaky"
        assert router.state_of("dead")["circuit"] == "open" and router.state_of("flaky")["circuit"] == "open"
        assert [s["in_use"] for s in router.snapshot()] == [0, 0, 0]


def test_a_client_error_is_not_an_endpoint_failure(redis_client):
    with FakeLLMServer(lambda body: "ok", faults=[Fault.server_error(400, "bad request")]) as one, \
            FakeLLMServer(lambda body: "no") as two:
        router = Router([ep("one", one.url), ep("two", two.url)], RedisRoutingState(redis_client))
        with pytest.raises(LLMHTTPError) as err:
            RoutedClient(router, "worker").chat(HELLO)
        assert err.value.endpoint == "one" and router.state_of("one")["circuit"] == "closed"
        assert not two.requests


def test_all_open_waits_then_says_which(redis_client):
    router = Router([ep("a", "http://127.0.0.1:1", backoff_s=30)], RedisRoutingState(redis_client), wait_s=0.2)
    router.done(router.lease("worker"), False)
    with pytest.raises(NoEndpoint, match=r"no LLM endpoint for the worker role within 0.2s: a open 0/8"):
        router.lease("worker")


def test_cold_start_gets_the_longer_limit_then_the_warm_one(redis_client):
    with FakeLLMServer(lambda body: "up", latency_s=1.0) as cold:
        e = ep("cold", cold.url, timeout_s=0.5, cold_start_s=5, warm_for_s=60, backoff_s=0.1)
        router = Router([e], RedisRoutingState(redis_client), wait_s=2)
        client = RoutedClient(router, "worker", max_retries=0)
        lease = router.try_lease("worker")
        assert lease.cold and lease.timeout_s == 5
        router.done(lease, None)
        assert client.chat(HELLO).content == "up"  # 1 s: within the cold limit
        assert router.state_of("cold")["warm"]
        lease = router.try_lease("worker")
        assert not lease.cold and lease.timeout_s == 0.5
        router.done(lease, None)
        with pytest.raises(Exception, match="no answer within 0.5s"):
            client.chat(HELLO)  # warm now: 1 s is past the warm limit
        assert router.state_of("cold")["circuit"] == "open"


def test_a_starting_endpoint_is_asked_again_not_left(redis_client):
    with FakeLLMServer(lambda body: "started", faults=[Fault.server_error(503, "no workers yet")] * 2) as cold, \
            FakeLLMServer(lambda body: "other") as other:
        router = Router([ep("cold", cold.url, cold_start_s=30), ep("other", other.url)],
                        RedisRoutingState(redis_client))
        reply = RoutedClient(router, "worker").chat(HELLO)
        assert (reply.endpoint, reply.content) == ("cold", "started") and len(cold.requests) == 3
        assert not other.requests


def test_roles_choose_endpoints(redis_client):
    with FakeLLMServer(lambda body: "plan") as p, FakeLLMServer(lambda body: "work") as w:
        router = Router([ep("p", p.url, roles=("planner", "reconciler")), ep("w", w.url, roles=("worker",))],
                        RedisRoutingState(redis_client))
        assert RoutedClient(router, "planner").chat(HELLO).endpoint == "p"
        assert RoutedClient(router, "subplanner").chat(HELLO).endpoint == "p"
        assert RoutedClient(router, "reconciler").chat(HELLO).endpoint == "p"
        assert RoutedClient(router, "worker").chat(HELLO).endpoint == "w"
        assert RoutedClient(router, "worker").model == "m-w"
        solo = Router([ep("w", w.url, roles=("worker",))], RedisRoutingState(redis_client))
        with pytest.raises(ValueError, match="no LLM endpoint serves the planner role"):
            RoutedClient(solo, "planner")


def test_a_probe_cut_off_counts_as_a_failure_and_another_process_gets_in_within_the_backoff(redis_client):
    """Issue 27: the probe of an open circuit got a cut 200 and its key stayed until its TTL (timeout + 30 s)."""
    with FakeLLMServer(lambda body: "whole", faults=[Fault.truncated()]) as srv:
        a = ep("a", srv.url, timeout_s=60, backoff_s=2)  # a probe key's TTL used to be 90 s
        one = Router([a], RedisRoutingState(redis_client), wait_s=0)
        other = Router([a], RedisRoutingState(redis.Redis.from_url(TEST_REDIS_URL)))  # another process
        one.done(one.lease("worker"), False)  # the circuit is open
        time.sleep(2.1)
        assert other.state_of("a")["circuit"] == "half-open"
        with pytest.raises(LLMProtocolError):
            RoutedClient(one, "worker", max_retries=0).chat(HELLO)  # the probe: a 200 cut in half
        assert len(srv.requests) == 1
        assert other.state_of("a")["circuit"] == "open"  # a failure, not "nothing happened"
        started = time.monotonic()
        reply = RoutedClient(other, "worker", max_retries=0).chat(HELLO)
        waited = time.monotonic() - started
    assert reply.content == "whole" and other.state_of("a")["circuit"] == "closed"
    assert waited < 30, f"admitted after {waited:.1f}s: the probe's TTL, not the backoff (4 s)"


def test_a_probe_whose_process_died_gives_way_within_the_backoff(redis_client):
    a = ep("a", "http://127.0.0.1:1", timeout_s=60, backoff_s=2)
    dead = Router([a], RedisRoutingState(redis_client))
    other = Router([a], RedisRoutingState(redis.Redis.from_url(TEST_REDIS_URL)))
    dead.done(dead.lease("worker"), False)
    time.sleep(2.1)
    assert dead.lease("worker").probe  # taken, then its process is killed: done() never comes
    assert other.try_lease("worker") is None  # one probe at a time
    started = time.monotonic()
    lease = other.lease("worker", wait_s=60)
    assert lease.probe and time.monotonic() - started < 30  # the backoff (2 s), not timeout + 30 s (90 s)


def test_a_probe_that_ends_in_neither_frees_it_at_once(state):
    a = ep("a", "http://127.0.0.1:1", timeout_s=60, backoff_s=30)
    router = Router([a], state)
    router.done(router.lease("worker"), False)
    state.failed(a.state_key, 0.001)  # shorten the wait for half-open to a moment
    time.sleep(0.05)
    probe = router.try_lease("worker")
    assert probe is not None and probe.probe and router.try_lease("worker") is None
    router.done(probe, None)  # e.g. a 400: the request's own fault says nothing of the endpoint
    assert router.state_of("a")["circuit"] == "half-open"
    again = router.try_lease("worker")
    assert again is not None and again.probe  # the next caller probes at once


def test_another_probes_release_leaves_the_current_probe_alone(state):
    state.failed("x", 0.001)
    time.sleep(0.05)
    assert state.take_probe("x", "mine", 30)
    state.release_probe("x", "stale-holder")
    assert not state.take_probe("x", "third", 30)
    state.release_probe("x", "mine")
    assert state.take_probe("x", "third", 30)


def test_a_cut_answer_fails_over_and_is_kept_as_a_failed_attempt(redis_client):
    with FakeLLMServer(lambda body: "cut", faults=[Fault.truncated()]) as first, \
            FakeLLMServer(lambda body: "from b") as second:
        router = Router([ep("a", first.url), ep("b", second.url)], RedisRoutingState(redis_client))
        reply = RoutedClient(router, "worker", max_retries=0).chat(HELLO)
    assert (reply.endpoint, reply.content) == ("b", "from b")
    assert [f["endpoint"] for f in reply.failovers] == ["a"] and "LLMProtocolError" in reply.failovers[0]["error"]
    assert router.state_of("a")["circuit"] == "open"


def test_a_cut_answer_on_the_only_endpoint_is_asked_again_after_its_backoff(redis_client):
    with FakeLLMServer(lambda body: "whole", faults=[Fault.truncated(), Fault.malformed_json()]) as srv:
        router = Router([ep("a", srv.url, backoff_s=0.2)], RedisRoutingState(redis_client))
        started = time.monotonic()
        reply = RoutedClient(router, "worker", max_retries=2).chat(HELLO)
    assert reply.content == "whole" and len(srv.requests) == 3
    assert time.monotonic() - started >= 0.2 + 0.4  # the backoff, doubled for the second failure in a row
    assert [f["error"].split(":")[0] for f in reply.failovers] == ["LLMProtocolError"] * 2


def test_retry_after_keeps_the_circuit_open_at_least_that_long(redis_client):
    with FakeLLMServer(lambda body: "later", faults=[Fault.rate_limit(retry_after=30)]) as srv:
        router = Router([ep("a", srv.url, backoff_s=0.1)], RedisRoutingState(redis_client), wait_s=0)
        with pytest.raises(NoEndpoint):
            RoutedClient(router, "worker", max_retries=1).chat(HELLO)
        time.sleep(0.3)  # past the endpoint's own backoff
        assert router.state_of("a")["circuit"] == "open" and len(srv.requests) == 1
