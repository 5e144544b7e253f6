"""Postgres records: models, sessions, the task state machine, and the event feed."""

from agentswarm.db.models import (
    Base,
    Event,
    Feature,
    FeatureStatus,
    HandoffRecord,
    LLMCall,
    MergeAttempt,
    MergeStatus,
    Run,
    RunStatus,
    Task,
    TaskKind,
    TaskStatus,
    new_id,
)
from agentswarm.db.session import after_commit, check_database, get_engine, session_scope

__all__ = [
    "Base", "Event", "Feature", "FeatureStatus", "HandoffRecord", "LLMCall", "MergeAttempt", "MergeStatus",
    "Run", "RunStatus", "Task", "TaskKind", "TaskStatus", "new_id", "after_commit", "check_database",
    "get_engine", "session_scope",
]
