"""What every coding agent the runner can drive looks like: its context in, its outcome out.

Standard library only (plus the contract): imported inside slim sandbox images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agentswarm.agent.checks import Presubmit
from agentswarm.agent.contract import HANDOFF_STATUSES, LLMCallRecord, TaskSpec
from agentswarm.agent.transcript import Transcript


class RunnerInterrupt(BaseException):  # noqa: N818 - an interrupt, like KeyboardInterrupt
    """Ends the agent from outside: a deadline or a signal. BaseException so no `except Exception` eats it."""


class DeadlineExceeded(RunnerInterrupt):
    """The agent's share of the task's wall-clock limit ran out."""


class Killed(RunnerInterrupt):
    """The runner received SIGTERM or SIGINT."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"killed by {signame}")
        self.signame = signame


@dataclass
class AgentContext:
    """Everything an agent gets: the task, the checkout, the deadline, the transcript and the LLM key."""

    spec: TaskSpec
    repo: Path
    deadline: float  # time.monotonic() value the agent must end by
    transcript: Transcript
    api_key: str | None = None
    work_dir: Path | None = None  # scratch space outside the repository (prompt files, configs)
    llm_calls: list[LLMCallRecord] = field(default_factory=list)  # appended as calls happen, kept on a kill
    presubmit: Presubmit | None = None  # the gate's checks an agent may run before it finishes "complete"

    def tokens(self) -> dict[str, int]:
        """Prompt and completion tokens over every call so far."""
        return {"prompt": sum(c.prompt_tokens for c in self.llm_calls),
                "completion": sum(c.completion_tokens for c in self.llm_calls)}

    def remaining_s(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


@dataclass
class AgentOutcome:
    """What the agent says it did; the runner checks it against git before it becomes a handoff."""

    status: str
    summary: str = ""
    error: str | None = None
    steps: int = 0

    def __post_init__(self) -> None:
        if self.status not in HANDOFF_STATUSES:
            raise ValueError(f"agent outcome status must be one of {HANDOFF_STATUSES}, got {self.status!r}")


class Agent(Protocol):
    """A coding agent: changes files in `ctx.repo` and reports; it never pushes."""

    def run(self, ctx: AgentContext) -> AgentOutcome: ...


def load_agents_md(repo: Path, cap: int = 32 * 1024) -> str:
    """AGENTS.md from the repository root, capped; a placeholder when there is none."""
    path = repo / "AGENTS.md"
    try:
        if path.is_file() and path.resolve().is_relative_to(repo.resolve()):
            return path.read_text(encoding="utf-8", errors="replace")[:cap]
    except OSError:
        pass
    return "(this repository has no AGENTS.md)"
