"""Fixtures for the sandbox side: a real bare hub, task.json files, and the runner as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentswarm.git.hub import create_hub

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = "sk-test-SECRET-llm-key-0123456789"
SECRET_TOKEN = "ghp_TEST_SECRET_git_token_987654321"


def git(cwd: Path, *args: str) -> str:
    """Run git and return stdout (raises on failure)."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Hub:
    path: Path
    base: str

    def numstat(self, base: str, head: str) -> list[tuple[int, int, str]]:
        """`git diff --numstat base..head` in the hub, parsed."""
        out = git(self.path, "diff", "--numstat", f"{base}..{head}")
        return [(int(a), int(d), p) for a, d, p in (ln.split("\t") for ln in out.splitlines())]

    def branch_sha(self, branch: str) -> str | None:
        proc = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"], cwd=self.path,
                              capture_output=True, text=True)
        return proc.stdout.strip() or None


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    """A bare hub (with the pre-receive hook) whose main holds a small TypeScript project."""
    src = tmp_path / "source"
    (src / "src").mkdir(parents=True)
    (src / "README.md").write_text("# Demo\n\nline two\nline three\n")
    (src / "src" / "index.ts").write_text("export const answer = 41;\n")
    (src / "AGENTS.md").write_text("Use two-space indentation. AGENTS-MARKER-42.\n")
    path = tmp_path / "hub.git"
    return Hub(path, create_hub(path, src))


def write_task(task_dir: Path, hub: Hub, llm_url: str, task_id: str = "t1", **overrides) -> Path:
    """Write task.json for `task_id` against the hub; returns its path."""
    task_dir.mkdir(parents=True, exist_ok=True)
    limits = {"timeout_s": 60, "max_steps": 10, "max_tokens": 100_000} | overrides.pop("limits", {})
    spec = {
        "id": task_id, "run_id": "r1", "title": "Bump the answer", "description": "Make answer 42 and add notes.",
        "branch": f"swarm/{task_id}", "base_sha": hub.base, "repo_url": str(hub.path),
        "scope": ["src/index.ts", "NOTES.md"], "acceptance": ["answer is 42"],
        "llm": {"base_url": llm_url, "model": "fake-glm", "max_tokens": 512, "temperature": 0.0, "timeout_s": 20},
        "limits": limits,
    } | overrides
    path = task_dir / "task.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def runner_env(**extra: str) -> dict[str, str]:
    """The environment a sandbox gives the runner: the package on the path and the two secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "GIT_", "OPENAI_"))}
    env.update(PYTHONPATH=str(ROOT), LLM_API_KEY=SECRET_KEY, GIT_TOKEN=SECRET_TOKEN, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start_runner(task_path: Path, **env: str) -> subprocess.Popen:
    """Start `python -m agentswarm.agent.runner task.json result.json` as a real subprocess."""
    task_dir = task_path.parent
    return subprocess.Popen([sys.executable, "-m", "agentswarm.agent.runner", str(task_path),
                             str(task_dir / "result.json")], cwd=task_dir, env=runner_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_runner(task_path: Path, timeout: float = 60, **env: str) -> tuple[int, dict, str]:
    """Run the runner to the end; (exit code, result.json, stderr)."""
    proc = start_runner(task_path, **env)
    _out, err = proc.communicate(timeout=timeout)
    result = json.loads((task_path.parent / "result.json").read_text())
    return proc.returncode, result, err


def assert_no_secrets(*texts: str) -> None:
    """Neither secret appears in any of the texts."""
    for text in texts:
        assert SECRET_KEY not in text
        assert SECRET_TOKEN not in text
