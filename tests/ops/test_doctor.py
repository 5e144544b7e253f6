"""`agentswarm doctor`: every step green in demo mode; each failure names itself, its fix, and fails the run.

Real Redis, Postgres (this session's database, a private server to stop, a database left behind the head),
git, bubblewrap sandboxes and the fake LLM over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from agentswarm.config import load_settings
from agentswarm.db.migrate import upgrade
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.git.hub import create_hub
from agentswarm.ops.doctor import Ladder, endpoints, hub, services
from tests.support.env import PG_ADMIN, ROOT, TEST_DB
from tests.support.private_pg import private_pg  # noqa: F401  (the fixture)

KEY = "sk-doctor-never-printed-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes


def doctor(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m agentswarm doctor` with a fresh hub path and sandbox root, in demo mode unless told."""
    full = {**os.environ, "HUB_PATH": str(tmp_path / "hub.git"), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
            "RECONCILE_INSTALL": "", **env}
    return subprocess.run([sys.executable, "-m", "agentswarm", "doctor", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


def test_demo_mode_every_step_is_green(db, redis_client, tmp_path):
    r = doctor(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    steps = [line for line in r.stdout.splitlines() if line[:1] in "✓✗–"]
    # The shared test services are open to local processes by design (trust auth, the superuser, no Redis
    # password): those three steps warn, with their fix; every other step passes.
    warned = {line[2:].split("  ")[0] for line in steps if not line.startswith("✓")}
    assert warned == {"redis auth", "postgres auth", "postgres role"}, r.stdout
    assert all("→ fix:" in line and "docs/securing-services.md" in line for line in steps if line.startswith("–"))
    for name in ("redis", "postgres", "schema", "hub", "node", "sandbox", "install", "llm demo models",
                 "llm demo chat", "llm demo tool call"):
        assert any(line[2:].startswith(name) for line in steps), (name, r.stdout)
    assert "the demo simulator: the model called finish" in r.stdout
    assert "refuses pushes to main" in r.stdout and "agentswarm runner (task.json schema" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("ready:") and "3 warnings" in r.stdout.splitlines()[-1]
    assert not (tmp_path / "hub.git").exists()  # the doctor tests a scratch hub; it creates nothing of the run's


def test_postgres_stopped_fails_its_step_names_the_fix_and_exits_nonzero(private_pg, redis_client, tmp_path):  # noqa: F811
    url = private_pg.create_database("doctor")
    upgrade(url)
    up = doctor(tmp_path, DATABASE_URL=url)
    assert "✓ postgres" in up.stdout and "✓ schema" in up.stdout, up.stdout
    private_pg.stop()
    down = doctor(tmp_path, DATABASE_URL=url)
    assert down.returncode == 1, down.stdout
    line = next(ln for ln in down.stdout.splitlines() if ln.startswith("✗ postgres"))
    assert "cannot reach Postgres" in line and f":{private_pg.port}/doctor" in line and "fix: start Postgres" in line
    assert "– schema           skipped: needs `postgres`, which failed" in down.stdout
    assert "NOT ready: 1 step failed (postgres)" in down.stdout
    assert "✓ redis" in down.stdout and "✓ llm demo tool call" in down.stdout  # the other rungs still ran


def test_database_url_at_a_closed_port(redis_client, tmp_path):
    r = doctor(tmp_path, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/agentswarm")
    assert r.returncode == 1 and "✗ postgres" in r.stdout and "Traceback" not in r.stderr


@pytest.fixture
def behind_db(pg_url):
    """A database of its own on the shared server, migrated to 0005 only."""
    name = f"{TEST_DB}_behind"
    admin = PG_ADMIN
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def run_steps(settings, *checks) -> tuple[Ladder, list[str]]:
    lines: list[str] = []
    with Ladder(settings, lines.append) as ladder:
        for check in checks:
            check(ladder)
    return ladder, lines


def test_schema_behind_head_says_run_db_upgrade(behind_db):
    settings = load_settings(database_url=behind_db)
    ladder, lines = run_steps(settings, services.check_postgres, services.check_schema)
    assert not ladder.passed and "✗ schema" in lines[-1] and "no schema yet" in lines[-1]
    assert "run `agentswarm db upgrade`" in lines[-1]
    upgrade(behind_db, "0005")
    ladder, lines = run_steps(settings, services.check_postgres, services.check_schema)
    assert "behind: the database is at 0005" in lines[-1] and "run `agentswarm db upgrade`" in lines[-1]
    upgrade(behind_db)
    ladder, lines = run_steps(settings, services.check_postgres, services.check_schema)
    assert ladder.passed and lines[-1].startswith("✓ schema           at the head")


def test_a_database_from_a_newer_checkout_is_not_called_behind(behind_db):
    upgrade(behind_db)
    with psycopg.connect(behind_db.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("update alembic_version set version_num = '9999'")
    _, lines = run_steps(load_settings(database_url=behind_db), services.check_postgres, services.check_schema)
    assert "which this checkout's migrations do not know" in lines[-1] and "update this checkout" in lines[-1]


def test_a_dead_endpoint_fails_its_step_with_the_fix_and_skips_the_rest(monkeypatch):
    monkeypatch.setenv("LLM_API_KEY", KEY)
    settings = load_settings(llm_base_url=f"http://127.0.0.1:{closed_port()}", llm_api_key=KEY)
    ladder, lines = run_steps(settings, endpoints.check_endpoints)
    assert not ladder.passed
    assert lines[0].startswith("✗ llm default models") and "fix: start the server, or correct LLM_BASE_URL" in lines[0]
    assert lines[1].startswith("– llm default chat") and lines[2].startswith("– llm default tool call")
    assert all(KEY not in line for line in lines)


def test_an_endpoint_without_tool_calls_fails_the_tool_call_step(monkeypatch):
    monkeypatch.setenv("LLM_API_KEY", KEY)
    with FakeLLMServer(script=["ready", f"I would call finish now. {KEY}"]) as llm:
        settings = load_settings(llm_base_url=llm.url, llm_api_key=KEY, llm_model="fake-glm")
        ladder, lines = run_steps(settings, endpoints.check_endpoints)
        sent = str(llm.request_headers[-1])
    assert [line[:1] for line in lines] == ["✓", "✓", "✗"], lines
    assert "ms," in lines[1]  # the chat's latency
    assert lines[2].startswith("✗ llm default tool call") and "--tool-call-parser" in lines[2]
    assert not ladder.passed and all(KEY not in line for line in lines)
    assert KEY in sent  # the key was used for the probes, never shown


def test_a_tool_calling_endpoint_passes_every_probe():
    script = ["ready", {"content": None, "tool_calls": [{"name": "finish", "arguments": {"status": "complete",
                                                                                          "summary": "ok"}}]}]
    with FakeLLMServer(script=script) as llm:
        ladder, lines = run_steps(load_settings(llm_base_url=llm.url, llm_model="fake-glm"), endpoints.check_endpoints)
    assert ladder.passed and len(lines) == 3 and "the model called finish" in lines[2]


def test_the_hub_hook_is_checked_by_running_it(tmp_path):
    target = tmp_path / "target"
    (target / "src").mkdir(parents=True)
    (target / "src" / "a.ts").write_text("export {};\n")
    hub_path = tmp_path / "hub.git"
    create_hub(hub_path, target)
    settings = load_settings(hub_path=hub_path, target_repo_path=target)
    ladder, lines = run_steps(settings, hub.check_hub)
    assert ladder.passed and "refuses pushes to main" in lines[0]
    hook = hub_path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nexit 0\n")
    ladder, lines = run_steps(settings, hub.check_hub)
    assert not ladder.passed and "not the one agentswarm installs" in lines[0] and "agentswarm init" in lines[0]
    (hub_path / "hooks" / "post-receive").write_text("#!/bin/sh\n")
    _, lines = run_steps(settings, hub.check_hub)
    assert "hooks/post-receive not installed by agentswarm" in lines[0]


def test_a_missing_target_fails_the_hub_step(tmp_path):
    settings = load_settings(hub_path=tmp_path / "hub.git", target_repo_path=tmp_path / "nothing")
    ladder, lines = run_steps(settings, hub.check_hub)
    assert not ladder.passed and "TARGET_REPO_PATH" in lines[0]


def test_credentials_are_not_shown_in_urls():
    assert hub.without_credentials("https://x-token:ghp_secret@github.com/o/r.git") == "https://github.com/o/r.git"
    from agentswarm.ops.doctor.ladder import shown_url

    assert shown_url("redis://:pw@127.0.0.1:6379/3") == "redis://127.0.0.1:6379/3"


def test_every_endpoint_of_llm_endpoints_is_checked_and_no_key_is_printed(monkeypatch):
    import json

    monkeypatch.setenv("GOOD_KEY", KEY)
    monkeypatch.setenv("DEAD_KEY", KEY[::-1])
    script = lambda body: ({"content": None, "tool_calls": [{"name": "finish", "arguments": {  # noqa: E731
        "status": "complete", "summary": "ok"}}]} if body.get("tools") else {"content": "ready"})
    with FakeLLMServer(script=script) as llm:
        entries = [{"name": "primary", "base_url": llm.url, "key_env": "GOOD_KEY", "model": "fake-glm"},
                   {"name": "overflow", "base_url": f"http://127.0.0.1:{closed_port()}", "key_env": "DEAD_KEY",
                    "model": "glm-5", "roles": ["worker"]}]
        settings = load_settings(llm_endpoints=json.dumps(entries))
        ladder, lines = run_steps(settings, endpoints.check_endpoints)
        sent = str(llm.request_headers)
    expected = ["✓ llm primary models", "✓ llm primary chat", "✓ llm primary tool call",
                "✗ llm overflow models", "– llm overflow chat", "– llm overflow tool call"]
    assert len(lines) == 6 and all(line.startswith(want + " ") for line, want in zip(lines, expected, strict=True)), lines
    assert "base_url of endpoint 'overflow' in LLM_ENDPOINTS" in lines[3] and not ladder.passed
    assert KEY in sent and all(KEY not in line and KEY[::-1] not in line for line in lines)


def test_a_bad_setting_is_the_first_failed_step(tmp_path):
    r = doctor(tmp_path, MAX_WORKERS="0")
    assert r.returncode == 1 and r.stdout.startswith("✗ settings") and "MAX_WORKERS" in r.stdout
    assert "Traceback" not in r.stderr


def _install_steps(tmp_path, **overrides):
    from agentswarm.ops.doctor import node, sandboxes

    settings = load_settings(hub_path=tmp_path / "hub.git", target_repo_path=ROOT / "target-repo",
                             sandbox_root=tmp_path / "sandboxes", gate="batch", **overrides)
    return run_steps(settings, hub.check_hub, node.check_node, sandboxes.check_backend, node.check_install)


def test_a_failing_install_fails_its_step_with_the_output_and_the_fix(tmp_path):
    ladder, lines = _install_steps(tmp_path, gate_install="echo 'npm ERR! registry unreachable' >&2; exit 7")
    assert [line[:1] for line in lines] == ["✓", "✓", "✓", "✗"], lines
    assert "exited 7" in lines[-1] and "npm ERR! registry unreachable" in lines[-1] and "registry" in lines[-1]
    assert not ladder.passed


def test_the_targets_npm_ci_in_a_sandbox_fills_the_runs_dependency_cache(tmp_path):
    ladder, lines = _install_steps(tmp_path)
    if not ladder.passed and "exited" in lines[-1]:
        pytest.skip(f"npm ci could not reach the registry: {lines[-1][-300:]}")
    assert ladder.passed and "installed in" in lines[-1] and "inside: node v" in lines[-1], lines
    assert list((tmp_path / "deps").glob("*/node_modules/typescript"))  # where the gate will look for it
    _, again = _install_steps(tmp_path)
    assert "already installed for this lock file" in again[-1]


def test_a_remote_hub_is_reached_and_its_main_found(tmp_path):
    target = tmp_path / "target"
    (target / "src").mkdir(parents=True)
    (target / "src" / "a.ts").write_text("export {};\n")
    remote = tmp_path / "remote.git"
    sha = create_hub(remote, target)
    settings = load_settings(git_repo_url=f"file://{remote}", hub_path=tmp_path / "mirror.git")
    ladder, lines = run_steps(settings, hub.check_hub)
    assert ladder.passed and f"main {sha[:12]}" in lines[0] and "protect main on the server" in lines[0]
    settings = load_settings(git_repo_url=f"file://{tmp_path}/missing.git", hub_path=tmp_path / "mirror.git")
    ladder, lines = run_steps(settings, hub.check_hub)
    assert not ladder.passed and "git ls-remote failed" in lines[0] and "GIT_TOKEN" in lines[0]
