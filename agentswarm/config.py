"""One typed settings object, read from the environment and a `.env` file.

Names follow the seed (LLM_BASE_URL, MAX_WORKERS, ...). A bad value stops start-up with
one line naming the variable: see `load_settings`.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from agentswarm.credentials import swarm_database_url, swarm_redis_url
from agentswarm.errors import ConfigError
from agentswarm.llm import normalize_base_url
from agentswarm.llm.endpoints import load_endpoints
from agentswarm.scrubbing import SECRET_ENV_NAMES, URL_ENV_NAMES, secret_values


class MergeStrategyName(str, Enum):
    fast_forward = "fast-forward"
    rebase = "rebase"
    merge_commit = "merge-commit"


class SandboxBackendName(str, Enum):
    local = "local"
    modal = "modal"


class SandboxIsolation(str, Enum):
    bwrap = "bwrap"
    none = "none"


class GateMode(str, Enum):
    off = "off"
    each = "each"
    batch = "batch"


class GateRunner(str, Enum):
    queue = "queue"  # gate runs go to the `gate` Celery queue (gate workers, anywhere)
    inline = "inline"  # the merge worker runs them in threads of its own


class RedAction(str, Enum):
    revert = "revert"  # find the commit that broke main, land a revert of it, reopen its task
    fix = "fix"  # ask the model for fix tasks from the failing output


class LogFormat(str, Enum):
    text = "text"
    json = "json"  # one JSON object a line, with the task and run ids (agentswarm/logs.py)


class ConflictPolicy(str, Enum):
    resolve = "resolve"
    skip = "skip"


_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?$")
_WILDCARD_ALL = {"0.0.0.0", "::"}


def split_host(value: str) -> tuple[str, int | None]:
    """A Host header or a host[:port] entry as (lower-case name, port or None); ValueError if it is not one.

    IPv6 addresses come back without brackets. Schemes, paths, user info and wildcards are refused.
    """
    raw = value.strip()
    if "://" in raw:
        raise ValueError(f"{raw!r} has a scheme; give a host name, optionally host:port")
    if any(c in raw for c in "/?#\\"):
        raise ValueError(f"{raw!r} has a path; give a host name, optionally host:port")
    if "*" in raw:
        raise ValueError(f"{raw!r} is a wildcard; list each host name")
    if "@" in raw or any(c.isspace() for c in raw):
        raise ValueError(f"{raw!r} is not a host name")
    try:
        parts = urlsplit("//" + raw)
        name, port = parts.hostname or "", parts.port
    except ValueError:
        raise ValueError(f"{raw!r} has a bad port") from None
    if raw.endswith(":") or port == 0:
        raise ValueError(f"{raw!r} has a bad port")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is None and (":" in name or not _HOST_NAME.match(name)):
        raise ValueError(f"{raw!r} is not a host name")
    if name in _WILDCARD_ALL or (ip is not None and ip.is_unspecified):
        raise ValueError(f"{raw!r} means every address; list each host name")
    return name, port


def format_host(name: str, port: int | None) -> str:
    """The inverse of `split_host`: `name`, `name:port`, `[v6]` or `[v6]:port`."""
    shown = f"[{name}]" if ":" in name else name
    return shown if port is None else f"{shown}:{port}"


class Settings(BaseSettings):
    """Every knob of a swarm. Field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        allow_inf_nan=False,  # inf or nan in a budget or a timeout is a mistake, never a setting
    )
    _given_urls: tuple[str, str] = PrivateAttr(("", ""))

    # The model
    llm_base_url: str = Field("", description="any OpenAI-compatible endpoint (GLM-5 on SGLang, vLLM, OpenAI, "
                              "RunPod); a trailing / or /v1 is stripped; empty means demo mode")
    llm_api_key: str = Field("", description="bearer key for the endpoint (never logged, stored or put in task.json)", repr=False)
    llm_model: str = Field("glm-5", description="model name sent to the endpoint")
    llm_max_tokens: int = Field(8192, gt=0, description="completion tokens per call at most")
    llm_temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature per call")
    llm_timeout_s: float = Field(300.0, gt=0,
        description="seconds per request; a timeout opens the endpoint's circuit and the call is tried again")
    llm_max_retries: int = Field(4, ge=0,
        description="tries again after a 429, a 5xx, a timeout or a lost connection (on the next endpoint, "
        "or on the same one once its backoff passed)")
    llm_price_in_per_mtok: float = Field(0.0, ge=0, description="dollars per million prompt tokens")
    llm_price_out_per_mtok: float = Field(0.0, ge=0, description="dollars per million completion tokens")
    llm_gpu_price_per_hour: float = Field(0.0, ge=0, description="self-hosted: dollars per GPU-hour, "
                                          "charged by wall-clock time in use (overlapping calls share it)")
    llm_endpoints: str = Field("", description="JSON list of endpoints (name, base_url, key_env, model, "
                               "max_concurrency, prices, roles): see agentswarm.llm.endpoints; overrides LLM_BASE_URL")
    llm_endpoints_file: Path | None = Field(None, description="a TOML file of [[endpoints]] tables, as LLM_ENDPOINTS")
    modal_cpu_price_per_hour: float = Field(0.0, ge=0, description="dollars per CPU core-hour of a Modal "
                                            "sandbox (SANDBOX_BACKEND=modal: charged at SANDBOX_CPU cores)")
    modal_memory_price_per_gib_hour: float = Field(0.0, ge=0, description="dollars per GiB-hour of Modal memory")

    # Git
    git_repo_url: str = Field("", description="remote hub (the merge queue keeps a mirror at "
                              "HUB_PATH and pushes main to it); empty means a local bare hub")
    git_token: str = Field("", repr=False,
        description="a git token for a remote hub; no sandbox receives it (work leaves sandboxes as bundles)")
    target_repo_path: Path = Field(Path("./target-repo"),
        description="the product's specification and stub, from which the local hub is made")
    hub_path: Path = Field(Path("./var/hub.git"),
        description="the local bare hub (also the merge queue's mirror of a remote hub)")
    merge_strategy: MergeStrategyName = Field(MergeStrategyName.fast_forward,
        description="how a branch lands on main")
    merge_delete_branch: bool = Field(True, description="delete a branch once it landed")
    conflict_policy: ConflictPolicy = Field(ConflictPolicy.resolve,
        description="resolve: a textual conflict becomes a conflict-resolution task; skip: it is recorded")
    max_conflict_tasks: int = Field(2, ge=0,
        description="conflict-resolution tasks per branch before its feature goes back to the planner")

    # Workers and sandboxes
    max_workers: int = Field(4, gt=0, le=1000,
        description="concurrent sandboxes (threads of the work worker)")
    worker_timeout: int = Field(1800, gt=0, description="seconds one task may run")
    max_attempts: int = Field(3, gt=0, description="tries per task (and tasks per feature in a run)")
    sandbox_backend: SandboxBackendName = Field(SandboxBackendName.local,
        description="local: a directory and bubblewrap on this machine; modal: a Modal Sandbox per attempt")
    sandbox_root: Path = Field(Path("./var/sandboxes"), description="where local sandboxes live")
    sandbox_isolation: SandboxIsolation = Field(
        SandboxIsolation.bwrap, description="bwrap: local sandboxes in their own namespaces, no network; none: unisolated")
    sandbox_uid: int = Field(65534, ge=1, description="uid (and gid) local sandboxes run as when started by root")
    sandbox_cpu: float = Field(2.0, gt=0, description="cores per sandbox (Modal's request, and the cores Modal time "
                               "is charged at; local: its cgroup's CPU quota)")
    sandbox_memory_mb: int = Field(4096, gt=0, description="MB per sandbox (Modal's request; local: its cgroup's "
                                   "limit, plus SANDBOX_DISK_MB for its files)")
    sandbox_pids_max: int = Field(2048, ge=0, description="processes and threads per local sandbox (its cgroup's "
                                  "pids.max; 0: none, only RLIMIT_NPROC per uid)")
    sandbox_disk_mb: int = Field(4096, ge=0, description="MB a local sandbox may write (a tmpfs for its work, home "
                                 "and tmp, in RAM/swap as written; 0: no quota)")
    sandbox_create_concurrency: int | None = Field(
        None, gt=0, description="sandbox creations at once; unset: local max(8, MAX_WORKERS // 4), modal 8")
    sandbox_create_rate: float | None = Field(
        None, gt=0, description="sandbox creations per second; unset: local max(5, MAX_WORKERS / 2), modal 5")
    modal_app_name: str = Field("agentswarm", description="the Modal app holding the sandboxes")
    agent: str = Field("builtin", description="builtin | mini-swe-agent | pi | cmd:<template>")
    agent_max_steps: int = Field(60, gt=0, description="steps (model calls) one agent attempt may take")
    agent_max_tokens: int = Field(400_000, gt=0, description="tokens one agent attempt may spend")
    agent_tools_dir: Path | None = Field(
        None, description="where `agentswarm agents install` puts the external agents (pinned mini-swe-agent, Pi), "
        "bound read-only into local sandboxes; unset: $AGENTSWARM_TOOLS_DIR, else ~/.cache/agentswarm/tools")
    # The model gate (work/model_gate.py): what one sandbox may ask of the model through it
    llm_max_tokens_per_call: int = Field(
        16384, gt=0, description="max_tokens (and max_completion_tokens) the model gate lets one sandbox call ask "
        "for; a larger or missing value is set to this (keep it >= LLM_MAX_TOKENS)")
    sandbox_max_calls: int = Field(
        400, gt=0, description="model calls one sandbox may make through the model gate (failed ones and retries "
        "count); past it the gate answers 402")
    sandbox_max_tokens: int = Field(
        2_000_000, gt=0, description="prompt plus completion tokens one sandbox may spend through the model gate; "
        "past it the gate answers 402")
    sandbox_max_cost_usd: float = Field(
        25.0, ge=0, description="dollars one sandbox may spend through the model gate, at its endpoints' prices "
        "(a GPU-hour endpoint: a call's time on one of its slots); 0: no dollar limit")
    sandbox_calls_per_minute: int = Field(
        120, gt=0, description="model calls one sandbox may start in any 60 seconds; past it the gate answers 429")
    live_transcript_cap_bytes: int = Field(
        256 * 1024, ge=0, description="bytes of a running attempt's transcript copied to Postgres as it happens "
        "(with the heartbeat); past it one `truncated` line, and the whole transcript comes with the handoff; 0: off")

    # Planning and budgets
    max_planner_iterations: int | None = Field(
        None, gt=0, description="planner model calls a run may make; unset: max(100, 3 x the features at the run's "
        "start), since event-driven planning makes many small passes (a few tasks each with few slots)")
    planner_batch_size: int = Field(20, gt=0, description="tasks one planning pass stores at most")
    planner_backlog: int | None = Field(
        None, ge=0, description="tasks the planner keeps stored ahead of the free worker slots (pending, unsent: "
        "a slot that frees gets one at once, with no model call between); unset: max(2, MAX_WORKERS // 4); 0: none")
    subplanner_max_depth: int = Field(2, ge=0, description="how deep a task may be decomposed into children")
    subplanner_max_children: int = Field(5, gt=0, description="children per decomposed task at most")
    run_max_tasks: int = Field(1000, gt=0, description="tasks per run: the planner stops when reached")
    run_max_tokens: int = Field(50_000_000, gt=0,
        description="tokens per run: the planner stops when reached")
    run_max_dollars: float = Field(100.0, gt=0, description="dollars per run: the planner stops when reached")
    run_deadline_s: int = Field(6 * 3600, gt=0,
        description="seconds a run may last: the planner stops when reached")
    run_stuck_grace_s: int = Field(
        600, ge=0, description="seconds a run with nothing runnable left (features blocked behind ones that failed "
        "for good) waits for a person (`agentswarm retry`, `add-task --feature`) before it stops; 0: stop at once")

    # Reconciler: how main is built and tested (run in a checkout of main)
    reconcile_install: str = Field("npm ci --ignore-scripts --no-audit --no-fund",
                                   description="run once per lock file, sandboxed, no secret, reaching only NPM_REGISTRY")
    reconcile_commands: list[str] = Field(
        default_factory=lambda: ["node_modules/.bin/tsc --noEmit", "node_modules/.bin/vitest run",
                                 "node_modules/.bin/vite build"],
        description="the slow checks of main, in order (a failure stops the rest); [] checks nothing "
        "(and a run then ends on its features alone)")
    reconcile_page: bool = Field(True, description="after the commands, load the built dist/ in headless "
                                 "Chromium (in the sandbox): green when <body data-status=\"ok\"> once it leaves \"booting\" and "
                                 "still 60 frames later, with no console message; a screenshot of each green main is kept")
    reconcile_timeout_s: int = Field(900, gt=0, description="seconds per reconciler command")
    reconcile_max_fix_tasks: int = Field(3, ge=0, description="model-written fix tasks open at once")
    reconcile_on_red: RedAction = Field(RedAction.revert, description="revert: bisect, revert the culprit, reopen "
                                        "its task; fix: fix tasks from the model (also the fallback)")
    reconcile_bisect_max_steps: int = Field(12, gt=0, le=64, description="checks one bisection may run")
    reconcile_bisect_runs: int = Field(2, ge=1, le=5, description="runs of the failing tests at each bisection "
                                       "step (bad if any fails; failing in one and passing in another: flaky)")
    reconcile_confirm_runs: int = Field(3, ge=2, le=8, description="runs on the blamed commit and on its parent "
                                        "before a revert: it must fail on the commit every time, never on the parent")
    reconcile_parallel_runs: int = Field(2, ge=1, le=8, description="runs of one bisection step or confirmation "
                                         "at once, each in a sandbox of its own")
    reconcile_screenshots_keep: int = Field(5, ge=0, description="screenshots of green mains kept")
    reconcile_previews_keep: int = Field(5, ge=0, description="built games (dist/) of green mains kept for the "
                                         "dashboard's preview at /preview/<sha>/; 0 keeps none")
    reconcile_preview_max_mb: int = Field(64, gt=0, description="a green main's dist/ larger than this is not kept")
    flaky_quarantine_after: int = Field(2, gt=0, description="red-then-green observations that quarantine a test")
    flaky_release_after: int = Field(3, gt=0, description="reconciler runs in a row a quarantined test must pass")

    # The gate: what must pass before main moves (run in a sandbox with no secret and no network)
    gate: GateMode = Field(GateMode.batch, description="off: land what merges cleanly (the queue before the gate); "
                           "each: test every branch alone; batch: test batches, bisect a red one")
    gate_presubmit: bool = Field(True, description="the agent's branch must pass the gate's "
                                 "commands in its sandbox before the work counts as complete (only with GATE on)")
    gate_install: str = Field("npm ci --ignore-scripts --no-audit --no-fund",
                              description="installs the target's dependencies (once per lock file, in a sandbox "
                              "that reaches only NPM_REGISTRY)")
    npm_registry: str = Field("", description="the npm registry the dependency install reaches (its only way out: "
                              "a proxy the orchestrator runs); empty: the one `npm config get registry` gives here")
    gate_commands: list[str] = Field(
        default_factory=lambda: ["node_modules/.bin/tsc --noEmit",
                                 "node_modules/.bin/vitest related --run --passWithNoTests --pool=threads {files} {quarantined}"],
        description="{files}: the changed files that still exist, shell-quoted; {quarantined}: --exclude= flags "
        "for the files of quarantined flaky tests")
    gate_full_commands: list[str] = Field(
        default_factory=lambda: ["node_modules/.bin/tsc --noEmit", "node_modules/.bin/vitest run --pool=vmThreads {quarantined}"],
        description="run instead when a GATE_FULL_PATHS file changed, and every GATE_FULL_EVERY batches")
    gate_presubmit_commands: list[str] = Field(
        default_factory=lambda: ["node_modules/.bin/tsc --noEmit -p {tsconfig}",
                                 "node_modules/.bin/vitest run --passWithNoTests --pool=threads {tests}"],
        description="what the runner checks its branch with; {tsconfig}: the project's tsconfig.json narrowed to "
        "the changed TypeScript sources, tests excluded (and what they import); {tests}: the changed test files and the sibling "
        "tests of changed sources; {files}: every changed file")
    tsc_snapshot: bool = Field(
        True, description="type checks (presubmit, gate, reconciler, an agent's `npx tsc`) start `tsc` from a V8 "
        "startup snapshot of the installed TypeScript with its library files already parsed, built once per lock "
        "file in a sandbox: the same output and exit code for about a third of the CPU; off: the plain tsc")
    gate_full_paths: list[str] = Field(
        default_factory=lambda: ["package.json", "package-lock.json", "pnpm-lock.yaml", "yarn.lock",
                                 "tsconfig*.json", "vite.config.*", "vitest.config.*", "vitest.workspace.*"],
        description="glob patterns of config, lock and shared files: a change runs the full commands")
    gate_presubmit_concurrency: int = Field(
        0, ge=0, description="presubmit checks running at once per work worker (0: one per CPU core)")
    gate_full_every: int = Field(10, ge=0, description="the full commands every N batches (0: only when needed)")
    gate_batch_max: int = Field(16, gt=0, le=256, description="branches per gate batch at most")
    gate_batch_wait_s: float = Field(
        1.0, ge=0, le=600, description="seconds the merge stage waits for a batch to fill; short by default: "
        "branches that complete while a batch is in the gate make the next batch, so batches grow with the load "
        "by themselves, and a wait here is paid by every link of the features' dependency chain")
    gate_batch_wait_busy_s: float | None = Field(
        None, ge=0, le=600, description="the wait while the machine's CPU is saturated (Linux CPU pressure, else the load average; the "
        "wait grows from GATE_BATCH_WAIT_S with it, while the batch is under half full): a gate run costs as much "
        "for one branch as for sixteen, so when cores are the bottleneck larger batches land more per CPU-second "
        "(default: 10 x GATE_BATCH_WAIT_S)")
    gate_timeout_s: int = Field(600, gt=0, description="the most one gate run's commands may take (the full "
                                "commands always get this much)")
    gate_timeout_base_s: int = Field(120, gt=0, description="a gate run's time budget for its commands: this, plus "
                                     "GATE_TIMEOUT_PER_BRANCH_S per branch of the stack it tests, at most GATE_TIMEOUT_S")
    gate_timeout_per_branch_s: int = Field(30, ge=0, description="what each branch of a tested stack adds to the "
                                           "run's time budget (see GATE_TIMEOUT_BASE_S)")
    gate_parallel: int = Field(
        4, ge=1, le=64, description="gate runs in flight at once: while batch k is tested, batch k+1 is tested "
        "on top of k's tip, and so on (speculation); a red batch cancels the runs stacked on it. Bisection tests "
        "this many prefixes at once. 1: the serial gate")
    gate_runner: GateRunner = Field(
        GateRunner.queue, description="queue: gate runs are messages on the `gate` Celery queue, taken by gate "
        "workers (the Procfile's `gate` process, or on other machines); inline: the merge worker runs them itself, "
        "one thread each (one machine, no gate process)")
    gate_workers: int = Field(2, ge=1, le=256, description="gate runs one gate worker process takes at once "
                              "(its Celery concurrency)")
    gate_lease_s: float = Field(60.0, ge=1, description="a gate worker renews its run's lease this often (a quarter "
                                "of it); a run whose lease ran out (its worker died) is given to another worker")
    gate_queue_wait_s: float = Field(900.0, gt=0, description="a gate run no gate worker took in this long cannot "
                                     "run (no gate worker is up): the batch is held and tried again later")
    gate_delay_s: float = Field(0.0, ge=0, le=3600, description="benchmarks: a CPU-free sleep added to every gate "
                                "run, to measure a slow CI on a small machine")

    # Remote gate workers: the hub served read-only over git's smart HTTP (docs/gate-workers.md)
    hub_serve_addr: str = Field(
        "", description="host:port where `agentswarm hub-serve` serves HUB_PATH read-only (fetch by any sha, "
        "no push) to gate workers on other machines, e.g. 127.0.0.1:8471; `make swarm` runs it when set; "
        "empty: not served")
    hub_serve_token: str = Field(
        "", repr=False, description="the bearer token every request to `hub-serve` must carry (at least 16 "
        "characters); it refuses to start without one")
    gate_hub_url: str = Field(
        "", description="on a gate worker's machine: the served hub, http(s)://HOST:PORT/hub.git, fetched into "
        "a local mirror by sha; empty: read HUB_PATH directly (same machine)")
    gate_hub_token: str = Field(
        "", repr=False, description="on a gate worker's machine: the served hub's HUB_SERVE_TOKEN (sent as a "
        "header through git's environment, never in a command line or a config file)")

    # The simulator (demo mode): faults it puts in branches on purpose
    sim_faults: str = Field("", description="demo mode: how often the simulator breaks a branch, kind:rate,... "
                            "with kinds type, test, semantic, flaky, shared, e.g. type:0.08,test:0.04,flaky:0.02")
    sim_fault_attempts: int = Field(0, ge=0, description="inject faults only up to this attempt (0: every attempt)")

    # Ticks (seconds)
    plan_interval_s: float = Field(10.0, gt=0,
        description="seconds between planner beat ticks (event-driven planning runs between them)")
    reconcile_interval_s: float = Field(300.0, gt=0, description="seconds between reconciler beat ticks")
    monitor_interval_s: float = Field(15.0, gt=0, description="seconds between monitor beat ticks")
    heartbeat_interval_s: float = Field(10.0, gt=0,
        description="seconds between a running attempt's heartbeats")
    stale_heartbeat_s: float = Field(120.0, gt=0,
        description="a running attempt silent this long is taken as lost and run again; "
        "a message Redis holds unacknowledged this long is re-sent")

    # History and logs
    snapshot_retention_hours: float = Field(
        48.0, gt=0, description="the monitor's metric snapshots (the dashboard's history) are kept this long")
    snapshot_max_rows: int = Field(20_000, gt=0, description="snapshots kept per run at most (oldest go first)")
    log_format: LogFormat = Field(LogFormat.text, description="json: one JSON object a line with task and run ids")
    swarm_console: Literal["story", "all"] = Field(
        "story", description="what `make swarm` prints: story (the run's course, a progress line, the processes' "
        "warnings and errors, a summary at the end) or all (every line of every process); the logs keep all")

    # Services
    database_url: str = Field("postgresql+psycopg://postgres@127.0.0.1:5432/agentswarm", repr=False,
        description="Postgres, the truth (a postgresql:// URL; the psycopg driver is added)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", repr=False, description="Redis, the transport")
    database_own_role: bool = Field(
        True, description="when DATABASE_URL's user is a superuser, `prepare` makes a role for the swarm "
        "(LOGIN, not a superuser, no CREATEROLE/CREATEDB, owner of the swarm's database, a generated password "
        "kept in SERVICE_SECRETS_DIR) and every process connects as it; false: connect as DATABASE_URL's user")
    database_role: str = Field("", description="the name of that role; empty: named after DATABASE_URL's database")
    service_secrets_dir: Path = Field(
        Path("./var/secrets"), description="the generated service passwords (the swarm's Postgres role, the Redis "
        "`make swarm` starts with requirepass), one file each, mode 0600; never printed or logged")
    visibility_timeout_s: int = Field(4 * 3600, gt=0,
        description="seconds before Redis re-delivers an unacknowledged message; "
        "must stay above twice WORKER_TIMEOUT")
    flower_port: int = Field(5555, gt=0, lt=65536, description="Flower's port (make swarm)")
    dashboard_port: int = Field(8080, gt=0, lt=65536,
        description="the dashboard's port (agentswarm dashboard, make swarm)")
    dashboard_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        validation_alias=AliasChoices("agentswarm_dashboard_hosts", "dashboard_hosts"),
        description="AGENTSWARM_DASHBOARD_HOSTS: comma-separated host or host:port names the dashboard also "
        "answers to (in the Host header) when it listens off loopback (no scheme, path or wildcard); "
        "loopback names always pass",
    )

    @field_validator("llm_base_url")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        if not value.strip():
            return ""
        value = normalize_base_url(value)
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("hub_serve_addr")
    @classmethod
    def _listen_addr(cls, value: str) -> str:
        value = value.strip()
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError("must be host:port, e.g. 127.0.0.1:8471")
        return value

    @field_validator("gate_hub_url")
    @classmethod
    def _hub_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        try:
            parts = urlsplit(value)
            host, _ = parts.hostname, parts.port
        except ValueError:
            host = None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be http(s)://HOST[:PORT]/hub.git")
        if "@" in parts.netloc:
            raise ValueError("must not hold credentials (the token goes in GATE_HUB_TOKEN)")
        return value

    @field_validator("dashboard_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        if not all(isinstance(item, str) for item in items):
            raise ValueError("must be host names, comma-separated")
        return tuple(format_host(*split_host(item)) for item in items if item.strip())

    @field_validator("database_url")
    @classmethod
    def _db_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _service_credentials(self) -> Settings:
        """Connect with the generated credentials where `prepare` made them (see `agentswarm.credentials`)."""
        self._given_urls = (self.database_url, self.redis_url)
        if self.database_own_role:
            self.database_url = swarm_database_url(self.database_url, self.service_secrets_dir) or self.database_url
        self.redis_url = swarm_redis_url(self.redis_url, self.service_secrets_dir) or self.redis_url
        return self

    @property
    def database_admin_url(self) -> str:
        """DATABASE_URL as given (the user's; `prepare` makes the database and the swarm's role with it)."""
        return self._given_urls[0]

    @property
    def given_redis_url(self) -> str:
        """REDIS_URL as given, before the password of a Redis `make swarm` started was added."""
        return self._given_urls[1]

    @model_validator(mode="after")
    def _endpoints(self) -> Settings:
        load_endpoints(self)  # EndpointError (a ValueError) is one line naming the entry and the field
        return self

    @model_validator(mode="after")
    def _timeouts_agree(self) -> Settings:
        if self.visibility_timeout_s <= self.worker_timeout * 2:
            raise ValueError(
                "VISIBILITY_TIMEOUT_S must be well above WORKER_TIMEOUT (more than twice), "
                f"got {self.visibility_timeout_s} <= 2 x {self.worker_timeout}"
            )
        return self

    def secrets(self) -> list[str]:
        """Every secret to scrub from stored or logged text: this object's and the environment's.

        The LLM key, the git token, the hub-serve and gate-hub tokens, the passwords (and whole URLs) of DATABASE_URL and REDIS_URL (as given and
        as connected: the swarm's role, the Redis `make swarm` started),
        AGENTSWARM_DASHBOARD_TOKEN, MODAL_TOKEN_SECRET and MODAL_TOKEN_ID, and every LLM_ENDPOINTS key.
        """
        env = os.environ
        plain = [self.llm_api_key, self.git_token, self.hub_serve_token, self.gate_hub_token] + [env.get(n) for n in SECRET_ENV_NAMES if n not in URL_ENV_NAMES]
        try:  # each endpoint's key (a file that went bad since start-up must not stop the scrubbing)
            plain += [env.get(ep.key_env) for ep in load_endpoints(self) if ep.key_env]
        except ValueError:
            pass
        urls = [self.database_url, self.redis_url, *self._given_urls]
        return secret_values(plain, urls + [env.get(n) for n in URL_ENV_NAMES])

    @property
    def backlog_size(self) -> int:
        """PLANNER_BACKLOG, or its default from MAX_WORKERS."""
        return max(2, self.max_workers // 4) if self.planner_backlog is None else self.planner_backlog

    @property
    def sandbox_admission(self) -> tuple[int, float]:
        """SANDBOX_CREATE_CONCURRENCY and SANDBOX_CREATE_RATE, or their defaults.

        A local sandbox is a directory and a process group: its creation costs this machine, not a provider's
        quota, so the defaults grow with MAX_WORKERS (a hundred slots freed together are filled in two seconds,
        not twenty). Modal's defaults stay under its documented creation rate limits.
        """
        if self.sandbox_backend is SandboxBackendName.local:
            concurrency, rate = max(8, self.max_workers // 4), max(5.0, self.max_workers / 2)
        else:
            concurrency, rate = 8, 5.0
        return (self.sandbox_create_concurrency or concurrency,
                self.sandbox_create_rate if self.sandbox_create_rate is not None else rate)

    @property
    def demo_mode(self) -> bool:
        """No endpoint configured: the built-in simulator plays the model."""
        return not (self.llm_base_url or self.llm_endpoints.strip() or self.llm_endpoints_file)


def _describe(field_name: str, error: ErrorDetails) -> str:
    field = Settings.model_fields.get(field_name)
    annotation = getattr(field, "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        accepted = ", ".join(m.value for m in annotation)
        return f"must be one of {accepted}"
    msg = error.get("msg", "invalid")
    return msg[0].lower() + msg[1:] if msg else "invalid"


# Settings whose bad value is not repeated in the error: secrets, and URLs that may hold one.
_NOT_ECHOED = frozenset({"LLM_API_KEY", "GIT_TOKEN", "DATABASE_URL", "REDIS_URL", "LLM_ENDPOINTS", "HUB_SERVE_TOKEN",
                         "GATE_HUB_URL", "GATE_HUB_TOKEN"})


def format_validation_error(exc: ValidationError) -> str:
    """One line per bad variable: `NAME: what it accepts (got 'value')`."""
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        name = str(loc[0]).upper() if loc else "SETTINGS"
        got = err.get("input")
        shown = "" if name in _NOT_ECHOED else f" (got {got!r})"
        if not loc:
            lines.append(f"configuration: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
        else:
            lines.append(f"{name}: {_describe(str(loc[0]), err).removeprefix('value error, ')}{shown}")
    return "; ".join(lines)


def format_settings_error(exc: SettingsError) -> str:
    """One line for a value pydantic-settings could not even decode (a list that is not JSON)."""
    found = re.search(r'field "?([A-Za-z0-9_]+)"?', str(exc))
    if not found:
        return f"configuration: {str(exc).splitlines()[0]}"
    name = found.group(1)
    field = Settings.model_fields.get(name.lower())
    if field is not None and getattr(field.annotation, "__origin__", None) is list:
        return f'{name.upper()}: must be a JSON list of strings, e.g. \'["npm test"]\''
    return f"{name.upper()}: cannot be read ({str(exc).splitlines()[0]})"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from env/.env; raise ConfigError with one clear line on bad values."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except SettingsError as exc:
        raise ConfigError(format_settings_error(exc)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached)."""
    return load_settings()
