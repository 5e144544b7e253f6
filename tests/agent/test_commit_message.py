"""The runner's commit subject and the conflict task's title: built once, no repeated prefix."""

from __future__ import annotations

import pytest

from agentswarm.agent.runner import without_prefix


@pytest.mark.parametrize(("title", "prefix", "expected"), [
    ("Fix: the toast overlaps", "fix", "the toast overlaps"),
    ("fix: FIX: twice", "fix", "twice"),
    ("Fixture loader", "fix", "Fixture loader"),
    ("Resolve merge conflict: Resolve merge conflict: hud", "Resolve merge conflict", "hud"),
    ("fix:", "fix", "fix:"),
])
def test_a_prefix_is_said_once(title, prefix, expected):
    assert without_prefix(title, prefix) == expected


def test_the_commit_subject_says_the_kind_once(tmp_path):
    import json

    from agentswarm.agent.base import AgentOutcome
    from agentswarm.agent.contract import TaskSpec
    from agentswarm.agent.runner import commit_message

    spec = TaskSpec.from_dict({
        "id": "t1", "run_id": "r1", "kind": "fix", "title": "Fix: the toast overlaps the hotbar",
        "description": "d", "branch": "swarm/t1", "base_sha": "0" * 40, "repo_url": str(tmp_path),
        "scope": ["src/ui/toast.ts"], "acceptance": [],
        "llm": {"base_url": "http://127.0.0.1:9", "model": "m", "max_tokens": 10, "temperature": 0.0, "timeout_s": 5},
        "limits": {"timeout_s": 60, "max_steps": 10, "max_tokens": 1000}})
    subject = commit_message(spec, AgentOutcome("complete", summary="done")).splitlines()[0]
    assert subject == "fix: the toast overlaps the hotbar", json.dumps(subject)
