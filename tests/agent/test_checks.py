"""Presubmit: which commands run for which changes, once per tree, and what the agent is shown."""

from __future__ import annotations

import json
import subprocess

import pytest

from agentswarm.agent.checks import (
    NARROWED_TSCONFIG,
    PRESUBMIT_FAILED,
    Presubmit,
    failing_tests,
    needs_full,
    plan_commands,
)
from agentswarm.agent.contract import PresubmitSpec, TaskSpec


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.email", "t@t")
    git(r, "config", "user.name", "t")
    (r / "tsconfig.json").write_text('{"compilerOptions": {"strict": true}, "include": ["src"]}\n')
    (r / "src").mkdir()
    (r / "src" / "a.ts").write_text("export const a = 1;\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "seed")
    return r


def test_full_commands_run_when_a_config_or_lock_file_changed():
    cmds, pats = ["check {files}"], ["package.json", "tsconfig*.json", "vite.config.*"]
    assert plan_commands(cmds, ["all"], pats, ["src/a b.ts", "src/c.ts"]) == (["check 'src/a b.ts' src/c.ts"], False)
    assert plan_commands(cmds, ["all"], pats, ["src/a.ts", "package.json"]) == (["all"], True)
    assert plan_commands(cmds, ["all"], pats, ["tsconfig.build.json"]) == (["all"], True)
    assert plan_commands(cmds, ["all"], pats, ["src/a.ts"], force_full=True) == (["all"], True)
    assert plan_commands(cmds, [], pats, ["package.json"]) == (["check package.json"], False)  # no full commands set
    assert needs_full(["web/vite.config.ts"], pats) and not needs_full(["src/vite.ts"], pats)


def test_failing_tests_are_read_from_vitest_output():
    out = (" ✓ src/ok.test.ts (2 tests) 3ms\n FAIL  src/a.test.ts > suite > breaks\n"
           " FAIL  src/a.test.ts > suite > breaks\n × src/b.spec.ts > other\n FAIL  src/c.test.ts\n")
    assert failing_tests(out) == ["src/a.test.ts > suite > breaks", "src/b.spec.ts > other", "src/c.test.ts"]
    coloured = " \x1b[31mFAIL\x1b[39m  src/d.test.ts\x1b[2m > \x1b[22mflaky: it wobbles\n"
    assert failing_tests(coloured) == ["src/d.test.ts > flaky: it wobbles"]


def spec(**kw) -> PresubmitSpec:
    return PresubmitSpec(**{"commands": ["test ! -e src/BROKEN"], "timeout_s": 30, **kw})


def test_a_tree_is_checked_once_and_a_failure_tells_the_agent_what_failed(repo):
    base = git(repo, "rev-parse", "HEAD")
    pre = Presubmit(repo, base, spec(commands=["echo checking {files}", "test ! -e src/BROKEN"]))
    (repo / "src" / "BROKEN").write_text("x")
    run = pre.check()
    assert not run.ok and not run.unavailable and [c.exit_code for c in run.commands] == [0, 1]
    assert run.output.startswith("$ test ! -e src/BROKEN")
    feedback = run.feedback()
    assert feedback.startswith(PRESUBMIT_FAILED) and "exit 1" in feedback
    assert pre.check() is run  # the same tree (uncommitted changes included) is not checked again
    (repo / "src" / "BROKEN").unlink()
    fixed = pre.check()
    assert fixed.ok and fixed.tree != run.tree and len(pre.runs) == 2
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "work", "--allow-empty")
    assert pre.check() is fixed  # committing the same tree checks nothing new


def test_a_missing_tool_makes_the_check_unavailable_not_failed(repo):
    run = Presubmit(repo, git(repo, "rev-parse", "HEAD"), spec(commands=["no-such-tool-xyz"])).check()
    assert run.unavailable and not run.ok


def test_a_slow_command_is_stopped_at_the_timeout(repo):
    run = Presubmit(repo, git(repo, "rev-parse", "HEAD"), spec(commands=["sleep 5"], timeout_s=1)).check()
    assert run.commands[0].timed_out and not run.ok and "timed out" in run.output


def test_the_tsconfig_is_narrowed_to_the_changed_typescript_files(repo):
    base = git(repo, "rev-parse", "HEAD")
    pre = Presubmit(repo, base, spec(commands=["cat {tsconfig}", "echo {files}"]))
    (repo / "src" / "b.ts").write_text("export const b = 2;\n")
    (repo / "src" / "b.test.ts").write_text("test\n")  # tests are typed by the gate's whole program
    (repo / "README.md").write_text("docs\n")
    run = pre.check()
    assert run.ok and [c.command.split()[0] for c in run.commands] == ["cat", "echo"]
    narrowed = json.loads((repo / ".git" / NARROWED_TSCONFIG).read_text())
    assert narrowed == {"extends": "../tsconfig.json", "include": ["../src/b.ts"]}
    assert "agentswarm" not in git(repo, "status", "--porcelain")  # nothing of it is part of the work
    (repo / "src" / "b.ts").unlink()
    (repo / "src" / "b.test.ts").unlink()
    only_docs = pre.check()
    assert [c.command for c in only_docs.commands] == ["echo README.md"]  # no TypeScript changed: no tsc


def test_task_json_carries_the_presubmit_spec_and_the_attempt(tmp_path):
    data = {"id": "t1", "run_id": "r", "description": "d", "branch": "swarm/t1", "base_sha": "a" * 40,
            "repo_url": "/hub", "llm": {"base_url": "http://x", "model": "m"}, "attempt": 2,
            "presubmit": {"commands": ["tsc"], "full_commands": [], "full_paths": [], "install": "",
                          "timeout_s": 60, "max_rounds": 2}}
    task = TaskSpec.from_dict(data)
    assert isinstance(task.presubmit, PresubmitSpec) and task.presubmit.max_rounds == 2 and task.attempt == 2
    assert TaskSpec.from_dict(task.to_dict()) == task


def test_the_branch_s_own_tests_are_its_changed_tests_and_the_siblings_of_its_changed_sources(repo):
    (repo / "src" / "a.test.ts").write_text("test\n")
    (repo / "src" / "lonely.ts").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tests")
    base = git(repo, "rev-parse", "HEAD")
    pre = Presubmit(repo, base, spec(commands=["echo {tests}"]))
    (repo / "src" / "a.ts").write_text("export const a = 2;\n")  # its sibling test is run
    (repo / "src" / "b.spec.ts").write_text("new\n")  # a new test is run
    (repo / "src" / "lonely.ts").write_text("y\n")  # no sibling test: nothing added for it
    assert [c.command for c in pre.check().commands] == ["echo src/a.test.ts src/b.spec.ts"]
    for name in ("a.ts", "lonely.ts"):
        git(repo, "checkout", "--", f"src/{name}")
    (repo / "src" / "b.spec.ts").unlink()
    (repo / "NOTES.md").write_text("n\n")
    assert pre.check().commands == []  # no test of its own: the command is dropped
