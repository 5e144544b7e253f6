"""The sandbox interface every backend implements, its records, and its errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from agentswarm.agent.shell import HeadTail
from agentswarm.errors import SwarmError

OUTPUT_CAP_BYTES = 64 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


class SandboxError(SwarmError):
    """A sandbox operation failed."""


class SandboxGone(SandboxError):
    """The sandbox no longer exists (terminated, timed out, or never created)."""


class SandboxCreateError(SandboxError):
    """The provider refused to create a sandbox, after retries."""


@dataclass
class SandboxHandle:
    """A live sandbox: enough to reach it again, from this process or another."""

    id: str
    run_id: str
    task_id: str
    backend: str
    workdir: str
    meta: dict = field(default_factory=dict)


@dataclass
class ExecResult:
    """What one command did; stdout/stderr are capped (head and tail kept)."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float


@dataclass
class SandboxInfo:
    """One sandbox found by list(): a reaping candidate."""

    id: str
    run_id: str
    task_id: str
    created_at: datetime | None
    alive: bool


@runtime_checkable
class SandboxBackend(Protocol):
    """A place to run one task's agent, isolated from the orchestrator."""

    name: str
    delivery: str  # "bundle": the orchestrator prepares the repository and imports a bundle; "push": the runner pushes

    def create(self, *, run_id: str, task_id: str, attempt: int, env: dict[str, str]) -> SandboxHandle: ...

    def prepare_repo(self, sb: SandboxHandle, hub: str) -> None: ...

    def put_file(self, sb: SandboxHandle, path: str, data: bytes) -> None: ...

    def get_file(self, sb: SandboxHandle, path: str) -> bytes | None: ...

    def read_range(self, sb: SandboxHandle, path: str, offset: int, limit: int) -> bytes | None: ...

    def exec(self, sb: SandboxHandle, argv: list[str], *, timeout_s: float, network: bool = False) -> ExecResult: ...

    def terminate(self, sb_or_id: SandboxHandle | str) -> None: ...

    def list(self, run_id: str | None = None) -> list[SandboxInfo]: ...

    def attach(self, sandbox_id: str) -> SandboxHandle | None: ...


def check_id(kind: str, value: str) -> str:
    """Refuse a run/task id that is not safe as a path component, a Modal tag and a sandbox name part."""
    if not isinstance(value, str) or not _ID_RE.match(value) or value in (".", ".."):
        raise ValueError(f"{kind} {value!r} must match [A-Za-z0-9_.-]{{1,63}}")
    return value


def check_relpath(path: str) -> str:
    """Refuse a file path that is absolute or climbs out of the sandbox's workdir."""
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith("/") or ".." in parts:
        raise ValueError(f"sandbox path {path!r} must be relative and stay inside the workdir")
    return path


def cap_output(data: bytes | str, cap: int = OUTPUT_CAP_BYTES) -> str:
    """Cap one complete output to `cap` bytes, keeping its head and tail."""
    buf = HeadTail(cap)
    buf.feed(data)
    return buf.text()
