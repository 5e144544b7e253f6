"""The built-in agent's tools: confinement to the repository, limits on `run`, capped output."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from agentswarm.agent.shell import HeadTail, clean_env, run_capped
from agentswarm.agent.tools import Finish, Toolbox, ToolError, check_arguments


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "src" / "a.ts").write_text("one\ntwo\nthree\nfour\n")
    (tmp_path / "outside.txt").write_text("SECRET OUTSIDE\n")
    return root


@pytest.fixture
def tools(repo: Path) -> Toolbox:
    return Toolbox(repo, run_env=clean_env(), run_timeout_s=10, output_cap=4096)


@pytest.mark.parametrize("path", ["../outside.txt", "src/../../outside.txt", "/etc/passwd", "~/x", ""])
def test_paths_that_escape_are_refused(tools: Toolbox, path: str) -> None:
    for name, args in (("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"}),
                       ("list_files", {"path": path}), ("search", {"pattern": "x", "path": path})):
        if not path and name in ("list_files", "search"):
            continue  # an empty path there means the root
        with pytest.raises(ToolError):
            tools.call(name, args)


def test_symlinks_leading_out_are_refused_and_inside_ones_allowed(tools: Toolbox, repo: Path) -> None:
    (repo / "escape").symlink_to(repo.parent)
    (repo / "leak.txt").symlink_to(repo.parent / "outside.txt")
    (repo / "inner.ts").symlink_to(repo / "src" / "a.ts")
    for args in ({"path": "escape/outside.txt"}, {"path": "leak.txt"}):
        with pytest.raises(ToolError, match="outside the repository"):
            tools.call("read_file", args)
    with pytest.raises(ToolError, match="outside the repository"):
        tools.call("write_file", {"path": "leak.txt", "content": "overwrite"})
    with pytest.raises(ToolError, match="outside the repository"):
        tools.call("edit_file", {"path": "escape/outside.txt", "old": "SECRET", "new": "x"})
    assert (repo.parent / "outside.txt").read_text() == "SECRET OUTSIDE\n"
    assert "two" in tools.call("read_file", {"path": "inner.ts"})


def test_writes_into_git_are_refused(tools: Toolbox, repo: Path) -> None:
    for path in (".git/HEAD", ".git/hooks/pre-commit", "./.git/config"):
        with pytest.raises(ToolError, match=".git"):
            tools.call("write_file", {"path": path, "content": "#!/bin/sh\n"})
    assert (repo / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"


def test_read_write_edit_list_search(tools: Toolbox, repo: Path) -> None:
    assert tools.call("read_file", {"path": "src/a.ts", "start_line": 2, "end_line": 3}) == \
        "src/a.ts (lines 2-3 of 4)\ntwo\nthree\n"
    assert "wrote src/new/b.ts" in tools.call("write_file", {"path": "src/new/b.ts", "content": "two; two\n"})
    with pytest.raises(ToolError, match="occurs 2 times"):
        tools.call("edit_file", {"path": "src/new/b.ts", "old": "two", "new": "x"})
    with pytest.raises(ToolError, match="not found"):
        tools.call("edit_file", {"path": "src/a.ts", "old": "five", "new": "5"})
    tools.call("edit_file", {"path": "src/a.ts", "old": "three\n", "new": "3\n"})
    assert (repo / "src" / "a.ts").read_text() == "one\ntwo\n3\nfour\n"
    (repo / "node_modules" / "pkg").mkdir(parents=True)
    assert tools.call("list_files", {}).splitlines() == ["node_modules/ (skipped)", "src/a.ts", "src/new/b.ts"]
    assert tools.call("list_files", {"path": "src/new"}) == "src/new/b.ts"
    tools.rg = None  # the Python fallback (the sandbox image has ripgrep; this machine may not)
    assert tools.call("search", {"pattern": r"^tw"}).splitlines() == ["src/a.ts:2:two", "src/new/b.ts:1:two; two"]
    assert tools.call("search", {"pattern": "zzz"}) == "no match for 'zzz'"
    with pytest.raises(ToolError, match="bad regular expression"):
        tools.call("search", {"pattern": "("})
    assert tools.call("finish", {"status": "blocked", "summary": "s"}) == Finish("blocked", "s")
    with pytest.raises(ToolError, match="status"):
        tools.call("finish", {"status": "done", "summary": "s"})


def test_arguments_are_checked_against_the_schema() -> None:
    with pytest.raises(ToolError, match="missing argument"):
        check_arguments("write_file", {"path": "a"})
    with pytest.raises(ToolError, match="unknown argument"):
        check_arguments("read_file", {"path": "a", "lines": "1-3"})
    with pytest.raises(ToolError, match="must be a integer"):
        check_arguments("read_file", {"path": "a", "start_line": "two"})
    with pytest.raises(ToolError, match="unknown tool"):
        check_arguments("delete_everything", {})
    assert check_arguments("read_file", {"path": "a", "start_line": "3"}) == {"path": "a", "start_line": 3}


def test_run_that_never_ends_is_killed_with_its_whole_group(tools: Toolbox, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    out = tools.call("run", {"command": f"(sleep 300 & echo $! > {pidfile}; wait) ; echo never", "timeout_s": 1})
    assert time.monotonic() - started < 6
    assert out.startswith("timed out after 1s") and "never" not in out
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the background grandchild survived the kill"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_run_reports_exit_code_and_hides_secrets(tools: Toolbox, monkeypatch) -> None:
    monkeypatch.setenv("LLM_API_KEY", "sk-should-not-leak")
    tools.run_env = clean_env()
    out = tools.call("run", {"command": "echo hi; env; exit 3"})
    assert out.startswith("exit code 3\nhi\n") and "sk-should-not-leak" not in out and "LLM_API_KEY" not in out


def test_output_larger_than_the_cap_is_truncated_not_kept(tmp_path: Path) -> None:
    total = 40 * 1024 * 1024
    tracemalloc.start()
    try:
        res = run_capped(f"head -c {total} /dev/zero | tr '\\0' 'a'; echo; echo THE-END", cwd=str(tmp_path),
                         timeout_s=60, env=clean_env(), cap_bytes=8192)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.exit_code == 0 and not res.timed_out
    assert res.total_bytes == total + len("\nTHE-END\n")
    assert res.dropped_bytes == res.total_bytes - 8192
    assert res.output.startswith("a" * 4096) and res.output.rstrip().endswith("THE-END")
    assert f"{res.dropped_bytes} bytes of output truncated" in res.output
    assert peak < 2 * 1024 * 1024, f"peak Python memory {peak} bytes: output was kept in memory"


def test_head_tail_keeps_both_ends() -> None:
    buf = HeadTail(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qr"):
        buf.feed(chunk)
    assert (bytes(buf.head), bytes(buf.tail), buf.dropped, buf.total) == (b"abcde", b"nopqr", 8, 18)


def test_command_that_exits_but_leaves_a_child_holding_the_pipe(tmp_path: Path) -> None:
    started = time.monotonic()
    res = run_capped("sleep 30 & echo started", cwd=str(tmp_path), timeout_s=20, env=clean_env())
    assert time.monotonic() - started < 5
    assert res.exit_code == 0 and res.output.strip() == "started"
