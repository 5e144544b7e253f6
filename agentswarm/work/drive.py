"""Driving one sandbox: task.json in, the worker runner run, result.json (the handoff) out.

task.json carries no secret; the sandbox's environment holds only what the agent may see.

Two deliveries, chosen by the backend. "bundle" (local sandboxes): the orchestrator prepares the
repository, the model is reached only through the orchestrator's LLM gate (no key, no network
needed), and the work comes back as a bundle that is imported into the hub and measured there:
the stored handoff's git fields and LLM calls are the orchestrator's own measurements, and only
status, summary and transcript come from result.json. "push" (Modal, for now): the runner clones
the hub, pushes its branch and measures it; the orchestrator stores what it reports.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from agentswarm.agent.contract import (
    BUNDLE_NAME,
    GATE_SOCKET_ENV,
    GATE_TOKEN_ENV,
    ContractError,
    GitMeasure,
    Handoff,
    Limits,
    LLMSettings,
    PresubmitSpec,
    TaskSpec,
)
from agentswarm.agent.install import EXTERNAL, tools_dir
from agentswarm.config import GateMode, Settings
from agentswarm.db.models import Task
from agentswarm.db.text import stored_text
from agentswarm.git.hub import hub_url
from agentswarm.git.intake import take_in
from agentswarm.git.repo import GitError
from agentswarm.llm.endpoints import Endpoint, for_role, load_endpoints
from agentswarm.llm.factory import router_from_settings
from agentswarm.sandbox import SandboxBackend, SandboxHandle
from agentswarm.sandbox.deps import attach_deps, deps_root, ensure_deps
from agentswarm.sandbox.local import LocalSandboxBackend
from agentswarm.work.model_gate import LLMGate, check_slots
from agentswarm.work.model_gate_limits import GateLimits

RUNNER_ARGV = ["-m", "agentswarm.agent.runner", "task.json", "result.json", "--workdir", "repo"]
RUNNER_MARGIN_S = 60  # the runner stops its agent this long before the sandbox's deadline


def sandbox_env(settings: Settings, gate: LLMGate | None = None, delivery: str = "push") -> dict[str, str]:
    """What the agent may see: the gate's socket and token; else the LLM key (and, to push, the git token)."""
    if gate is not None:
        return {GATE_SOCKET_ENV: gate.socket_path, GATE_TOKEN_ENV: gate.token} | _tools_env(settings)
    env = {"LLM_API_KEY": settings.llm_api_key} if settings.llm_api_key else {}
    if delivery == "push" and settings.git_repo_url and settings.git_token:
        env["GIT_TOKEN"] = settings.git_token
    return env


def _tools_env(settings: Settings) -> dict[str, str]:
    """Where an external agent's CLI is, for the runner to find it (bound read-only by drive)."""
    return {"AGENTSWARM_TOOLS_DIR": str(tools_dir(settings.agent_tools_dir))} if settings.agent in EXTERNAL else {}


def open_gate(backend: SandboxBackend, settings: Settings) -> LLMGate | None:
    """The LLM gate a local sandbox reaches the model through (a remote one, for now, holds the key itself)."""
    if backend.name != "local":
        return None
    slots = check_slots(settings.gate_presubmit_concurrency or os.cpu_count() or 1)
    return LLMGate(None, None, timeout_s=settings.llm_timeout_s, router=router_from_settings(settings),
                   settings=settings, max_retries=settings.llm_max_retries, limits=GateLimits.from_settings(settings),
                   slots=slots, slot_wait_s=settings.worker_timeout, slot_hold_s=settings.gate_timeout_s + 60)


def _worker_endpoint(settings: Settings) -> Endpoint:
    """The first endpoint serving workers: a sandbox without the gate (Modal) is told its URL and model."""
    found = for_role(load_endpoints(settings), "worker")
    if not found:
        raise ValueError("no LLM endpoint serves the worker role (see LLM_ENDPOINTS roles)")
    return found[0]


def _agent_llm_timeout(settings: Settings) -> float:
    """The agent's own limit per call: long enough for the gate to wait out a worker endpoint's cold start."""
    colds = [ep.cold_start_s for ep in for_role(load_endpoints(settings), "worker")]
    return max([settings.llm_timeout_s, *colds])


def presubmit_spec(settings: Settings, delivery: str) -> PresubmitSpec | None:
    """The gate's checks for the runner to run on its branch (GATE on and GATE_PRESUBMIT on), else None.

    A local sandbox gets the dependencies linked in by the orchestrator; a remote one installs them.
    """
    if settings.gate is GateMode.off or not settings.gate_presubmit:
        return None
    return PresubmitSpec(commands=list(settings.gate_presubmit_commands), full_commands=list(settings.gate_full_commands),
                         full_paths=list(settings.gate_full_paths), timeout_s=float(settings.gate_timeout_s),
                         install=settings.gate_install if delivery == "push" else "")


def build_spec(task: Task, settings: Settings, delivery: str = "push") -> TaskSpec:
    """task.json for this task: no secrets, only what the runner needs."""
    return TaskSpec(
        id=task.id, run_id=task.run_id, title=task.title, description=task.description,
        branch=task.branch, base_sha=task.base_sha or "", repo_url=hub_url(settings.git_repo_url, settings.hub_path),
        scope=list(task.scope), acceptance=list(task.acceptance), priority=task.priority,
        parent_id=task.parent_id, kind=task.kind, feature_ids=list(task.feature_ids),
        context=dict(task.context or {}), agent=settings.agent, delivery=delivery, attempt=max(1, task.attempts),
        presubmit=presubmit_spec(settings, delivery),
        llm=LLMSettings(base_url=settings.llm_base_url or _worker_endpoint(settings).base_url,
                        model=settings.llm_model if settings.llm_base_url else _worker_endpoint(settings).model,
                        max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
                        timeout_s=_agent_llm_timeout(settings)),
        limits=Limits(timeout_s=max(30, settings.worker_timeout - RUNNER_MARGIN_S),
                      max_steps=settings.agent_max_steps, max_tokens=settings.agent_max_tokens),
    )


def failure(task_id: str, error: str, started: float) -> Handoff:
    """A failed handoff made by the orchestrator when the sandbox gave none."""
    error = stored_text(error)  # scrubbed before it is cut
    return Handoff(task_id=task_id, status="failed", error=error[:4000], summary=error[:500],
                   duration_s=round(time.monotonic() - started, 3))


def drive(backend: SandboxBackend, sb: SandboxHandle, spec: TaskSpec, settings: Settings,
          gate: LLMGate | None = None) -> Handoff:
    """Run the worker runner in the sandbox; the handoff (for bundle delivery, measured by us)."""
    started = time.monotonic()
    hub = str(settings.hub_path.resolve())
    if spec.delivery == "bundle":
        backend.prepare_repo(sb, hub)
        if spec.presubmit is not None and isinstance(backend, LocalSandboxBackend):
            _link_deps(backend, sb, hub, spec, settings)
        tools = tools_dir(settings.agent_tools_dir)
        if spec.agent in EXTERNAL and isinstance(backend, LocalSandboxBackend) and tools.is_dir():
            backend.add_readonly(sb, str(tools))  # the agent's CLI, installed once; else the runner says it is missing
    backend.put_file(sb, "task.json", json.dumps(spec.to_dict(), indent=2).encode())
    res = backend.exec(sb, ["python", *RUNNER_ARGV], timeout_s=settings.worker_timeout)
    raw = backend.get_file(sb, "result.json")
    if res.timed_out:
        return _gate_calls(failure(spec.id, f"timed out after {settings.worker_timeout}s; sandbox stopped", started),
                           gate)
    if raw is None:
        tail = (res.stderr or res.stdout)[-1500:]
        return _gate_calls(failure(spec.id, f"runner exited {res.exit_code} without result.json: {tail}", started),
                           gate)
    try:
        handoff = Handoff.from_dict(json.loads(raw))
    except (ValueError, ContractError) as exc:
        return _gate_calls(failure(spec.id, f"unreadable result.json: {exc}", started), gate)
    if spec.delivery != "bundle":
        return handoff
    return _measured(backend, sb, spec, hub, handoff, gate, started)


def _link_deps(backend: LocalSandboxBackend, sb: SandboxHandle, hub: str, spec: TaskSpec, settings: Settings) -> None:
    """The target's dependencies for presubmit, read-only (installed once per lock file); none if that fails."""
    modules, _ = ensure_deps(backend, hub, spec.base_sha, settings.gate_install, deps_root(settings.hub_path),
                             settings.gate_timeout_s, tsc_snapshot=settings.tsc_snapshot)
    if modules is not None:
        attach_deps(backend, sb, modules)


def _measured(backend: SandboxBackend, sb: SandboxHandle, spec: TaskSpec, hub: str, claimed: Handoff,
              gate: LLMGate | None, started: float) -> Handoff:
    """The handoff with its git fields measured from the imported bundle and its LLM calls from the gate."""
    _gate_calls(claimed, gate)
    bundle = backend.get_file(sb, BUNDLE_NAME)
    found = GitMeasure()
    if bundle is not None:
        with tempfile.TemporaryDirectory(prefix="agentswarm-bundle-") as tmp:
            path = Path(tmp) / BUNDLE_NAME
            path.write_bytes(bundle)
            try:
                found = take_in(hub, path, spec.branch, spec.base_sha)
            except (GitError, ValueError) as exc:
                bad = failure(spec.id, f"the sandbox's work could not be taken in: {exc}", started)
                bad.llm_calls, bad.tokens, bad.transcript = claimed.llm_calls, claimed.tokens, claimed.transcript
                return bad
    claimed.set_measure(found)
    return claimed


def _gate_calls(h: Handoff, gate: LLMGate | None) -> Handoff:
    """The handoff with the LLM calls the gate recorded (all of them: a failed attempt's too), not the agent's."""
    if gate is not None:
        calls = list(gate.calls)
        h.llm_calls = calls
        h.tokens = {"prompt": sum(c.prompt_tokens for c in calls), "completion": sum(c.completion_tokens for c in calls)}
    return h
