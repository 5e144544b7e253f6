"""`GET /metrics`: the swarm in the Prometheus text format, read from Postgres (and Redis) at every scrape.

The same Host and token rules as the JSON API (agentswarm/dashboard/app.py): a scraper off loopback sends the
token (`authorization: {credentials: ...}` in its scrape config). One run is described, the one the summary
shows (?run=ID picks another); every run-scoped series carries its `run` label, so a new run starts new series.

prometheus_client renders the text: it is already installed (Flower depends on it) and it owns the format's
details (escaping, HELP/TYPE lines, `_total` on counters). Nothing is kept in a process-wide registry: each
scrape builds its families from the database, so every dashboard process answers alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.config import get_settings
from agentswarm.control import status
from agentswarm.dashboard.app import DashboardApp, log
from agentswarm.dashboard.web import ApiError, RawReply
from agentswarm.db.models import (
    Event,
    LLMCall,
    MainCheck,
    MergeAttempt,
    MergeStatus,
    Run,
    Task,
    TaskStatus,
)
from agentswarm.queue.broker import queue_lengths
from agentswarm.queue.names import QUEUES

P = "agentswarm_"
# The classic text format: every name here is a legacy one, so 0.0.4 is what the output is, and what every
# Prometheus (2.x and 3.x) reads; prometheus_client's CONTENT_TYPE_LATEST moved to 1.0.0 in 0.22.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LANDED = (MergeStatus.merged, MergeStatus.reverted)  # a reverted branch landed first
DEFAULT_ENDPOINT = "default"  # calls recorded before endpoints had names


class _Families:
    """A collector that hands out families built for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def scrape(app: DashboardApp, db: Session, params: dict[str, str]) -> RawReply:
    """The whole exposition: the run's figures, the queues, and whether Redis answered."""
    run_id = params.get("run") or None
    run = status.find_run(db, run_id)
    if run_id and run is None:
        raise ApiError(404, f"no run {run_id}")
    families = [*queue_families(app), *(run_families(db, run) if run is not None else [])]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return RawReply(generate_latest(registry), CONTENT_TYPE)


def queue_families(app: DashboardApp) -> list[Metric]:
    """Messages waiting per queue; `agentswarm_redis_up` 0 (and no depths) when Redis does not answer."""
    up = GaugeMetricFamily(P + "redis_up", "1 when the broker answered this scrape")
    depth = GaugeMetricFamily(P + "queue_messages", "messages waiting in a Celery queue (all priorities)",
                              labels=["queue"])
    try:
        lengths = queue_lengths(app.redis(), QUEUES)
    except redis.RedisError as exc:
        log.warning("queue depths unavailable for /metrics: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    for queue, n in lengths.items():
        depth.add_metric([queue], n)
    return [up, depth]


def run_families(db: Session, run: Run) -> list[Metric]:
    """Tasks, landings, the gate, main, LLM calls and sandboxes of one run."""
    return [*_run_info(run), *_tasks(db, run), *_landings(db, run), *_gate(db, run), *_main(db, run),
            *_llm(db, run), *_sandboxes(db, run)]


def _run_info(run: Run) -> Iterable[Metric]:
    info = InfoMetricFamily(P + "run", "the run these figures describe")
    info.add_metric([], {"run": run.id, "status": str(run.status), "demo": str(bool(run.demo)).lower()})
    yield info


def _tasks(db: Session, run: Run) -> Iterable[Metric]:
    counts = dict(db.execute(select(Task.status, func.count()).where(Task.run_id == run.id)
                             .group_by(Task.status)).all())
    tasks = GaugeMetricFamily(P + "tasks", "tasks of the run by state", labels=["run", "state"])
    for state in TaskStatus:
        tasks.add_metric([run.id, state.value], counts.get(state, 0))
    yield tasks


def _landings(db: Session, run: Run) -> Iterable[Metric]:
    by_status = dict(db.execute(select(MergeAttempt.status, func.count()).join(Task).where(Task.run_id == run.id)
                                .group_by(MergeAttempt.status)).all())
    commits = db.scalar(select(func.coalesce(func.sum(func.jsonb_array_length(MergeAttempt.commits_landed)), 0))
                        .join(Task).where(Task.run_id == run.id, MergeAttempt.status.in_(LANDED)))
    landings = CounterMetricFamily(P + "landings", "branches landed on main", labels=["run"])
    landings.add_metric([run.id], sum(by_status.get(s, 0) for s in LANDED))
    landed_commits = CounterMetricFamily(P + "commits_landed", "commits landed on main", labels=["run"])
    landed_commits.add_metric([run.id], int(commits or 0))
    attempts = GaugeMetricFamily(P + "merge_attempts", "merge attempts by status", labels=["run", "status"])
    for s in MergeStatus:
        attempts.add_metric([run.id, s.value], by_status.get(s, 0))
    yield from (landings, landed_commits, attempts)


def _gate(db: Session, run: Run) -> Iterable[Metric]:
    kind = Event.kind
    batches, red, runs, seconds, flaky = db.execute(select(
        func.count().filter(kind == "gate.batch"),
        func.count().filter(kind == "gate.batch", Event.data["red"].as_boolean().is_(True)),
        func.count().filter(kind == "gate.run"),
        func.coalesce(func.sum(Event.data["seconds"].as_float()).filter(kind == "gate.run"), 0.0),
        func.count().filter(kind == "gate.flaky"),
    ).where(Event.run_id == run.id, kind.in_(status.GATE_KINDS))).one()
    culprits = db.scalar(select(func.count()).select_from(MergeAttempt).join(Task).where(
        Task.run_id == run.id, MergeAttempt.status == MergeStatus.rejected))
    gate_runs = CounterMetricFamily(P + "gate_runs", "runs of the gate's checks", labels=["run"])
    gate_runs.add_metric([run.id], runs)
    gate_seconds = CounterMetricFamily(P + "gate_run_seconds", "seconds spent running the gate's checks",
                                       labels=["run"])
    gate_seconds.add_metric([run.id], float(seconds or 0.0))
    gate_batches = CounterMetricFamily(P + "gate_batches", "batches the gate decided", labels=["run", "result"])
    gate_batches.add_metric([run.id, "green"], batches - red)
    gate_batches.add_metric([run.id, "red"], red)
    gate_culprits = CounterMetricFamily(P + "gate_culprits", "branches the gate sent back to their authors",
                                        labels=["run"])
    gate_culprits.add_metric([run.id], culprits or 0)
    gate_flaky = CounterMetricFamily(P + "gate_flaky", "tests the gate saw fail then pass on the same tree",
                                     labels=["run"])
    gate_flaky.add_metric([run.id], flaky)
    yield from (gate_runs, gate_seconds, gate_batches, gate_culprits, gate_flaky)
    yield from _gate_lanes(db, run)


def _gate_lanes(db: Session, run: Run) -> Iterable[Metric]:
    """The speculative gate: runs in flight by state, runs cancelled behind a red batch, and its capacity."""
    state = status.gate_runs_state(db, run.id, get_settings())
    flight = GaugeMetricFamily(P + "gate_runs_in_flight", "gate runs queued or running", labels=["run", "state"])
    for name in ("queued", "running"):
        flight.add_metric([run.id, name], sum(1 for r in state["in_flight"] if r["state"] == name))
    wasted = CounterMetricFamily(P + "gate_speculation_wasted", "speculative gate runs cancelled because a batch "
                                 "ahead of them was red", labels=["run"])
    wasted.add_metric([run.id], state["speculation_wasted"])
    capacity = GaugeMetricFamily(P + "gate_capacity_per_hour", "landings an hour the gate could sustain at its "
                                 "recent run time and batch size", labels=["run"])
    capacity.add_metric([run.id], float(state["capacity_per_hour"] or 0))
    yield from (flight, wasted, capacity)


def _main(db: Session, run: Run) -> Iterable[Metric]:
    by_result = dict(db.execute(select(MainCheck.result, func.count()).where(MainCheck.run_id == run.id)
                                .group_by(MainCheck.result)).all())
    checks = CounterMetricFamily(P + "main_checks", "the reconciler's checks of main by verdict",
                                 labels=["run", "result"])
    for result in ("green", "red", "cannot-run"):
        checks.add_metric([run.id, result], by_result.get(result, 0))
    yield checks
    latest = db.scalar(select(MainCheck.result).where(MainCheck.run_id == run.id, MainCheck.result.in_(("green", "red")))
                       .order_by(MainCheck.started_at.desc(), MainCheck.id.desc()).limit(1))
    if latest is not None:
        green = GaugeMetricFamily(P + "main_green", "1 when the newest verdict on main is green, 0 when red",
                                  labels=["run"])
        green.add_metric([run.id], 1 if latest == "green" else 0)
        yield green


def _llm(db: Session, run: Run) -> Iterable[Metric]:
    rows = db.execute(select(
        LLMCall.endpoint, LLMCall.ok, func.count(), func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
        func.coalesce(func.sum(LLMCall.completion_tokens), 0), func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
        func.coalesce(func.sum(LLMCall.latency_ms), 0),
    ).where(LLMCall.run_id == run.id).group_by(LLMCall.endpoint, LLMCall.ok)).all()
    calls = CounterMetricFamily(P + "llm_calls", "LLM calls by endpoint and outcome",
                                labels=["run", "endpoint", "outcome"])
    tokens = CounterMetricFamily(P + "llm_tokens", "LLM tokens by endpoint", labels=["run", "endpoint", "kind"])
    cost = CounterMetricFamily(P + "llm_cost_dollars", "LLM spend by endpoint", labels=["run", "endpoint"])
    latency = CounterMetricFamily(P + "llm_latency_seconds", "seconds spent waiting for LLM replies",
                                  labels=["run", "endpoint"])
    per_endpoint: dict[str, list[float]] = {}
    for endpoint, ok, n, prompt, completion, dollars, latency_ms in rows:
        name = endpoint or DEFAULT_ENDPOINT
        calls.add_metric([run.id, name, "ok" if ok else "error"], n)
        sums = per_endpoint.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate((prompt, completion, dollars, latency_ms / 1000)):
            sums[i] += float(value)
    for name, (prompt_n, completion_n, dollars_n, seconds) in sorted(per_endpoint.items()):
        prompt, completion, dollars = int(prompt_n), int(completion_n), dollars_n
        tokens.add_metric([run.id, name, "prompt"], prompt)
        tokens.add_metric([run.id, name, "completion"], completion)
        cost.add_metric([run.id, name], dollars)
        latency.add_metric([run.id, name], seconds)
    yield from (calls, tokens, cost, latency)


def _sandboxes(db: Session, run: Run) -> Iterable[Metric]:
    held = dict(db.execute(select(Task.status, func.count()).where(
        Task.run_id == run.id, Task.sandbox_id.is_not(None),
        Task.status.in_((TaskStatus.assigned, TaskStatus.running))).group_by(Task.status)).all())
    reaped = db.scalar(select(func.count()).select_from(Event).where(
        Event.run_id == run.id, Event.kind == "sandbox.reaped"))
    sandboxes = GaugeMetricFamily(P + "sandboxes", "sandboxes held by the run's tasks in flight",
                                  labels=["run", "task_state"])
    for state in (TaskStatus.assigned, TaskStatus.running):
        sandboxes.add_metric([run.id, state.value], held.get(state, 0))
    reaped_total = CounterMetricFamily(P + "sandboxes_reaped", "orphan sandboxes the monitor terminated",
                                       labels=["run"])
    reaped_total.add_metric([run.id], reaped or 0)
    yield from (sandboxes, reaped_total)
