"""The two documents that cross the sandbox boundary: task.json in, result.json out.

Standard library only: this module is imported inside slim sandbox images.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self

SCHEMA_VERSION = 1
TASK_KINDS = ("feature", "fix", "conflict", "manual")
# How the work leaves the sandbox: "push" (the runner pushes its branch to repo_url) or "bundle"
# (the repository was prepared for it; the runner writes out.bundle and the orchestrator imports it).
DELIVERIES = ("push", "bundle")
BUNDLE_NAME = "out.bundle"
REPO_BUNDLE_NAME = "repo.bundle"  # the hub's branches, for a sandbox that cannot reach the hub
# Set in the sandbox when the model is reached through the orchestrator's LLM gate: the gate's Unix
# socket, and the per-sandbox token the gate accepts (never the real key).
GATE_SOCKET_ENV = "AGENTSWARM_LLM_SOCKET"
GATE_TOKEN_ENV = "AGENTSWARM_LLM_TOKEN"
# Asked on the gate's socket before presubmit: the orchestrator grants a slot (held while the
# connection stays open) so that a machine runs only so many checks at once.
GATE_SLOT_PATH = "/agentswarm/check-slot"
SLOT_HEADER = "X-Agentswarm-Slot"  # "granted" in the reply's headers
HANDOFF_STATUSES = ("complete", "failed", "blocked")


class ContractError(ValueError):
    """A task.json or result.json document that does not follow the contract."""


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ContractError(f"{where}: {exc}") from None


class _Document:
    """Reading and writing one of the two JSON documents."""

    _where = "document"
    __dataclass_fields__: ClassVar[dict[str, Any]]  # every subclass is a @dataclass (for asdict's type)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from parsed JSON, refusing unknown fields."""
        return _build(cls, data, cls._where)

    @classmethod
    def load(cls, path: str) -> Self:
        """Read and check a JSON file."""
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ContractError(f"{path}: not JSON ({exc})") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self)

    def dump(self, path: str) -> None:
        """Write atomically."""
        write_json_atomic(path, self.to_dict())


@dataclass
class LLMSettings:
    """How the agent reaches the model. The API key is never written here: it comes from the env."""

    base_url: str
    model: str
    max_tokens: int = 8192
    temperature: float = 0.7
    timeout_s: float = 300.0


@dataclass
class Limits:
    timeout_s: int = 1800
    max_steps: int = 60
    max_tokens: int = 400_000


@dataclass
class PresubmitSpec:
    """The gate's checks the runner runs on the branch, in the sandbox, before the work may count as complete.

    `commands` run with `{files}` replaced by the changed files; `full_commands` instead when a file
    matching `full_paths` changed. `install` runs first (with the network, if the sandbox has any)
    only when the checkout has no node_modules (a local sandbox gets them linked read-only).
    """

    commands: list[str] = field(default_factory=list)
    full_commands: list[str] = field(default_factory=list)
    full_paths: list[str] = field(default_factory=list)
    install: str = ""
    timeout_s: float = 600.0
    max_rounds: int = 3  # how many failed checks the agent is shown before its finish stands


@dataclass
class TaskSpec(_Document):
    """task.json: everything the worker runner needs, and nothing secret."""

    _where = "task"

    id: str
    run_id: str
    description: str
    branch: str
    base_sha: str
    repo_url: str
    llm: LLMSettings
    title: str = ""
    scope: list[str] = field(default_factory=list)
    acceptance: list[str] = field(default_factory=list)
    priority: int = 5
    parent_id: str | None = None
    kind: str = "feature"
    feature_ids: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    agent: str = "builtin"
    context: dict[str, Any] = field(default_factory=dict)
    delivery: str = "push"
    attempt: int = 1
    presubmit: PresubmitSpec | None = None
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.presubmit, dict):
            self.presubmit = _build(PresubmitSpec, self.presubmit, "task.presubmit")
        if isinstance(self.llm, dict):
            self.llm = _build(LLMSettings, self.llm, "task.llm")
        if isinstance(self.limits, dict):
            self.limits = _build(Limits, self.limits, "task.limits")
        if self.delivery not in DELIVERIES:
            raise ContractError(f"task.delivery: must be one of {', '.join(DELIVERIES)}, got {self.delivery!r}")
        if self.kind not in TASK_KINDS:
            raise ContractError(f"task.kind: must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        if self.version != SCHEMA_VERSION:
            raise ContractError(f"task.version: this runner reads version {SCHEMA_VERSION}, got {self.version}")
        if isinstance(self.acceptance, str):
            self.acceptance = [self.acceptance]



@dataclass
class GitMeasure:
    """What a task did, as git says (base..head): measured by the runner, never taken from the agent.

    The one definition of these fields: result.json carries them flat (`Handoff`), the database
    keeps one column each (`db.models.GitMeasureColumns`), and the store copies them by name.
    """

    commits: list[str] = field(default_factory=list)  # base..head, oldest first
    head_sha: str | None = None
    files_changed: list[str] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0

    @classmethod
    def from_numstat(cls, commits: list[str], head: str, numstat_z: str) -> GitMeasure:
        """Built from `git diff --numstat -z --no-renames base head` output (binary files count no lines)."""
        m = cls(commits=commits, head_sha=head)
        for entry in numstat_z.split("\0"):
            if not entry.strip():
                continue
            added, removed, path = entry.split("\t", 2)
            m.files_changed.append(path)
            m.insertions += int(added) if added.isdigit() else 0  # "-" marks a binary file
            m.deletions += int(removed) if removed.isdigit() else 0
        return m


MEASURED_FIELDS = tuple(f.name for f in fields(GitMeasure))


@dataclass
class LLMCallRecord:
    """One model call made inside the sandbox; the orchestrator stores it with role=worker."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    model: str = ""
    ok: bool = True
    error: str | None = None
    endpoint: str = ""  # the LLM_ENDPOINTS entry the orchestrator's gate routed it to
    started_at: float = 0.0  # wall clock when it began (GPU-hour endpoints share overlapping time)
    usage_estimated: bool = False  # the server reported no usage: counted from characters


@dataclass
class Handoff(_Document):
    """result.json: what the task did, measured from git rather than taken from the agent's word."""

    _where = "handoff"

    task_id: str
    status: str
    summary: str = ""
    commits: list[str] = field(default_factory=list)
    head_sha: str | None = None
    files_changed: list[str] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    llm_calls: list[LLMCallRecord] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None
    transcript: str = ""
    transcript_truncated: bool = False
    presubmit: list[dict[str, Any]] = field(default_factory=list)  # each check run: ok, tree, commands, output
    version: int = SCHEMA_VERSION

    def measured(self) -> dict[str, Any]:
        """The git-measured fields (MEASURED_FIELDS) and their values."""
        return {name: getattr(self, name) for name in MEASURED_FIELDS}

    def set_measure(self, measure: GitMeasure) -> None:
        """Take every git-measured field from what the runner measured."""
        for name in MEASURED_FIELDS:
            setattr(self, name, getattr(measure, name))

    def __post_init__(self) -> None:
        if self.status not in HANDOFF_STATUSES:
            raise ContractError(
                f"handoff.status: must be one of {', '.join(HANDOFF_STATUSES)}, got {self.status!r}"
            )
        self.llm_calls = [
            _build(LLMCallRecord, c, "handoff.llm_calls[]") if isinstance(c, dict) else c for c in self.llm_calls
        ]



def write_json_atomic(path: str, data: Any) -> None:
    """Write JSON so that a reader sees either the old file or the whole new one, never a part."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
