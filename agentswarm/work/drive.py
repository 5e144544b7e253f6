"""Driving one sandbox: task.json in, the worker runner run, result.json (the handoff) out.

task.json carries no secret; the sandbox's environment holds only what the agent may see.
"""

from __future__ import annotations

import json
import time

from agentswarm.agent.contract import ContractError, Handoff, Limits, LLMSettings, TaskSpec
from agentswarm.config import Settings
from agentswarm.db.models import Task
from agentswarm.db.text import stored_text
from agentswarm.git.hub import hub_url
from agentswarm.sandbox import SandboxBackend, SandboxHandle

RUNNER_ARGV = ["-m", "agentswarm.agent.runner", "task.json", "result.json", "--workdir", "repo"]
RUNNER_MARGIN_S = 60  # the runner stops its agent this long before the sandbox's deadline


def sandbox_env(settings: Settings) -> dict[str, str]:
    """What the agent may see: the LLM key (and the git token for a remote hub); nothing else."""
    env = {"LLM_API_KEY": settings.llm_api_key} if settings.llm_api_key else {}
    if settings.git_repo_url and settings.git_token:
        env["GIT_TOKEN"] = settings.git_token
    return env


def build_spec(task: Task, settings: Settings) -> TaskSpec:
    """task.json for this task: no secrets, only what the runner needs."""
    return TaskSpec(
        id=task.id, run_id=task.run_id, title=task.title, description=task.description,
        branch=task.branch, base_sha=task.base_sha or "", repo_url=hub_url(settings.git_repo_url, settings.hub_path),
        scope=list(task.scope), acceptance=list(task.acceptance), priority=task.priority,
        parent_id=task.parent_id, kind=task.kind, feature_ids=list(task.feature_ids),
        context=dict(task.context or {}), agent=settings.agent,
        llm=LLMSettings(base_url=settings.llm_base_url, model=settings.llm_model,
                        max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
                        timeout_s=settings.llm_timeout_s),
        limits=Limits(timeout_s=max(30, settings.worker_timeout - RUNNER_MARGIN_S),
                      max_steps=settings.agent_max_steps, max_tokens=settings.agent_max_tokens),
    )


def failure(task_id: str, error: str, started: float) -> Handoff:
    """A failed handoff made by the orchestrator when the sandbox gave none."""
    error = stored_text(error)  # scrubbed before it is cut
    return Handoff(task_id=task_id, status="failed", error=error[:4000], summary=error[:500],
                   duration_s=round(time.monotonic() - started, 3))


def drive(backend: SandboxBackend, sb: SandboxHandle, spec: TaskSpec, settings: Settings) -> Handoff:
    started = time.monotonic()
    backend.put_file(sb, "task.json", json.dumps(spec.to_dict(), indent=2).encode())
    res = backend.exec(sb, ["python", *RUNNER_ARGV], timeout_s=settings.worker_timeout)
    raw = backend.get_file(sb, "result.json")
    if res.timed_out:
        return failure(spec.id, f"timed out after {settings.worker_timeout}s; sandbox stopped", started)
    if raw is None:
        tail = (res.stderr or res.stdout)[-1500:]
        return failure(spec.id, f"runner exited {res.exit_code} without result.json: {tail}", started)
    try:
        return Handoff.from_dict(json.loads(raw))
    except (ValueError, ContractError) as exc:
        return failure(spec.id, f"unreadable result.json: {exc}", started)
