"""The local backend's own mechanics, unisolated (SANDBOX_ISOLATION=none): real subprocesses, process groups, /proc.

The same backend under bubblewrap, and what a hostile command cannot do there: tests/security/.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentswarm.sandbox import SandboxGone, get_backend
from agentswarm.sandbox.base import SandboxBackend
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig
from agentswarm.sandbox.procs import marked_processes


@pytest.fixture
def backend(tmp_path: Path) -> LocalSandboxBackend:
    return get_backend("local", {"root": tmp_path / "sandboxes", "isolation": "none"})


@pytest.fixture
def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:8]}"


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_registry_builds_a_backend_that_follows_the_protocol(backend: LocalSandboxBackend) -> None:
    assert isinstance(backend, SandboxBackend) and backend.name == "local"
    with pytest.raises(ValueError, match="SANDBOX_BACKEND"):
        get_backend("docker", {})
    with pytest.raises(ValueError):
        get_backend("local", {"root": "x", "memroy_mb": 1})  # unknown keys are refused


def test_create_put_exec_get_terminate(backend: LocalSandboxBackend, run_id: str) -> None:
    sb = backend.create(run_id=run_id, task_id="t1", attempt=1, env={"LLM_MODEL": "m"})
    assert Path(sb.workdir).is_dir() and list(Path(sb.workdir).iterdir()) == []
    backend.put_file(sb, "task.json", json.dumps({"n": 20}).encode())
    program = (
        "import json; n = json.load(open('task.json'))['n'];"
        "json.dump({'sum': sum(range(n))}, open('result.json', 'w')); print('done'); "
        "import sys; print('warn', file=sys.stderr)"
    )
    res = backend.exec(sb, [sys.executable, "-c", program], timeout_s=30)
    assert (res.exit_code, res.timed_out, res.stdout, res.stderr) == (0, False, "done\n", "warn\n")
    assert json.loads(backend.get_file(sb, "result.json")) == {"sum": 190}
    assert backend.get_file(sb, "missing.json") is None
    assert backend.exec(sb, ["sh", "-c", "exit 2"], timeout_s=10).exit_code == 2
    assert backend.exec(sb, ["no-such-program"], timeout_s=10).exit_code == 127

    backend.terminate(sb)
    assert not Path(sb.workdir).parent.exists()
    backend.terminate(sb)  # idempotent
    backend.terminate(sb.id)
    with pytest.raises(SandboxGone):
        backend.exec(sb, ["true"], timeout_s=5)


def test_same_attempt_gives_the_same_sandbox(backend: LocalSandboxBackend, run_id: str) -> None:
    first = backend.create(run_id=run_id, task_id="t1", attempt=1, env={})
    backend.put_file(first, "task.json", b"{}")
    again = backend.create(run_id=run_id, task_id="t1", attempt=1, env={})
    assert again.id == first.id and backend.get_file(again, "task.json") == b"{}"
    assert backend.create(run_id=run_id, task_id="t1", attempt=2, env={}).id != first.id
    assert backend.attach(first.id).workdir == first.workdir
    backend.terminate(first)
    assert backend.attach(first.id) is None


def test_paths_cannot_leave_the_workdir(backend: LocalSandboxBackend, run_id: str, tmp_path: Path) -> None:
    sb = backend.create(run_id=run_id, task_id="t1", attempt=1, env={})
    secret = tmp_path / "secret.txt"
    secret.write_text("orchestrator secret")
    os.symlink(secret, Path(sb.workdir) / "result.json")
    assert backend.get_file(sb, "result.json") is None
    with pytest.raises(ValueError):
        backend.put_file(sb, "../meta.json", b"x")
    with pytest.raises(ValueError):
        backend.put_file(sb, "result.json", b"overwrite through the link")
    assert secret.read_text() == "orchestrator secret"
    with pytest.raises(ValueError):
        backend.terminate("../../etc")
    backend.terminate(sb)


def test_timeout_kills_the_whole_group(backend: LocalSandboxBackend, run_id: str) -> None:
    sb = backend.create(run_id=run_id, task_id="t1", attempt=1, env={})
    script = "sleep 1000 & echo $! > grandchild.pid; echo started; wait"
    started = time.monotonic()
    res = backend.exec(sb, ["sh", "-c", script], timeout_s=1.0)
    assert res.timed_out and res.exit_code == -1
    assert 1.0 <= res.duration_s < 10 and time.monotonic() - started < 10
    assert res.stdout == "started\n"
    grandchild = int(backend.get_file(sb, "grandchild.pid"))
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
    assert marked_processes(str(backend.root / sb.id)) == {}
    backend.terminate(sb)


def test_child_environment_is_scrubbed(
    backend: LocalSandboxBackend, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"DATABASE_URL": "postgresql://u:pw@db/x", "REDIS_URL": "redis://:pw@r:6379/0",
               "AWS_SECRET_ACCESS_KEY": "aws-secret", "GITHUB_TOKEN": "ghp_secret", "CELERY_BROKER_URL": "amqp://guest:broker-pw@mq"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    sb = backend.create(run_id=run_id, task_id="t1", attempt=1,
                        env={"LLM_API_KEY": "sk-llm", "LLM_BASE_URL": "http://127.0.0.1:9"})
    res = backend.exec(sb, ["env"], timeout_s=10)
    env = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert env["LLM_API_KEY"] == "sk-llm" and env["LLM_BASE_URL"] == "http://127.0.0.1:9"
    assert not set(secrets) & set(env)
    assert not any(value in res.stdout for value in secrets.values())
    assert env["HOME"].startswith(str(backend.root / sb.id))
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONUNBUFFERED",
                        "GIT_TERMINAL_PROMPT", "AGENTSWARM_SANDBOX", "LLM_API_KEY", "LLM_BASE_URL", "PWD", "SHLVL", "_"}
    # The worker runner can import the package from the scrubbed environment.
    probe = backend.exec(sb, ["python", "-c", "import agentswarm.agent.contract as c; print(c.SCHEMA_VERSION)"],
                         timeout_s=30)
    assert probe.exit_code == 0, probe.stderr
    backend.terminate(sb)


def test_resource_limits_apply(tmp_path: Path, run_id: str) -> None:
    backend = LocalSandboxBackend(LocalSandboxConfig(isolation="none", root=tmp_path / "sb", max_file_mb=1, max_open_files=64))
    sb = backend.create(run_id=run_id, task_id="t1", attempt=1, env={})
    res = backend.exec(sb, ["sh", "-c", "ulimit -n; ulimit -f; ulimit -c"], timeout_s=10)
    assert res.stdout.split() == ["64", str(1024 * 1024 // 512), "0"]
    big = backend.exec(sb, ["sh", "-c", "head -c 3000000 /dev/zero > big.bin"], timeout_s=10)
    assert big.exit_code != 0 and (Path(sb.workdir) / "big.bin").stat().st_size <= 1024 * 1024
    backend.terminate(sb)


def test_output_is_capped(tmp_path: Path, run_id: str) -> None:
    backend = LocalSandboxBackend(LocalSandboxConfig(isolation="none", root=tmp_path / "sb", output_cap_bytes=1000))
    sb = backend.create(run_id=run_id, task_id="t1", attempt=1, env={})
    res = backend.exec(sb, ["sh", "-c", "echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END"],
                       timeout_s=10)
    assert res.stdout.startswith("START") and res.stdout.rstrip().endswith("END")
    assert "bytes truncated" in res.stdout and len(res.stdout) < 1100
    backend.terminate(sb)


def test_list_and_reap_leftovers_of_a_crashed_worker(tmp_path: Path, run_id: str) -> None:
    root = tmp_path / "sandboxes"
    crashed = LocalSandboxBackend(LocalSandboxConfig(isolation="none", root=root))
    sb = crashed.create(run_id=run_id, task_id="t1", attempt=1, env={})
    idle = crashed.create(run_id=run_id, task_id="t2", attempt=1, env={})
    other_run = crashed.create(run_id=run_id + "x", task_id="t1", attempt=1, env={})
    # A daemon that escaped into its own session, as a crashed worker would leave behind.
    res = crashed.exec(sb, ["sh", "-c", "setsid sleep 1000 > /dev/null 2>&1 & echo $!"], timeout_s=10)
    daemon = int(res.stdout)
    assert alive(daemon)

    monitor = LocalSandboxBackend(LocalSandboxConfig(isolation="none", root=root))  # another process, after the crash
    found = {info.id: info for info in monitor.list(run_id)}
    assert set(found) == {sb.id, idle.id}
    assert found[sb.id].alive and not found[idle.id].alive
    assert found[sb.id].task_id == "t1" and found[sb.id].run_id == run_id and found[sb.id].created_at

    # A process whose directory is already gone (its quota's mounts too) is still found.
    import shutil

    from agentswarm.sandbox import disk
    disk.release(root / sb.id)
    shutil.rmtree(root / sb.id)
    assert [i.id for i in monitor.list(run_id) if i.alive] == [sb.id]
    for info in monitor.list(run_id):
        monitor.terminate(info.id)
    assert not alive(daemon)
    assert monitor.list(run_id) == []
    assert [i.id for i in monitor.list()] == [other_run.id]
    monitor.terminate(other_run)


def test_concurrent_creates_of_one_attempt_make_one_sandbox(backend: LocalSandboxBackend, run_id: str) -> None:
    import threading

    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(
        backend.create(run_id=run_id, task_id="t1", attempt=1, env={}).id)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 10 and len(set(ids)) == 1
    assert [i.id for i in backend.list(run_id)] == ids[:1]
    backend.terminate(ids[0])


def test_backend_from_settings() -> None:
    """The one factory maps SANDBOX_BACKEND and its settings to the backend's typed config."""
    from agentswarm.config import load_settings
    from agentswarm.sandbox.factory import backend_config, backend_for

    settings = load_settings(sandbox_backend="modal", worker_timeout=600, sandbox_cpu=1.0, sandbox_memory_mb=2048,
                             sandbox_create_concurrency=3, sandbox_create_rate=2.5, modal_app_name="a",
                             sandbox_root="/tmp/x")
    name, fields = backend_config(settings)
    assert name == "modal" and fields == {"app_name": "a", "timeout_s": 600, "cpu": 1.0, "memory_mb": 2048,
                                          "create_concurrency": 3, "create_rate": 2.5}
    name, fields = backend_config(load_settings(sandbox_backend="local", sandbox_root="/tmp/x", sandbox_uid=1234,
                                                sandbox_isolation="none"))
    config = LocalSandboxConfig(**fields)
    assert name == "local" and (config.root, config.isolation, config.uid) == (Path("/tmp/x"), "none", 1234)
    assert LocalSandboxConfig(**backend_config(load_settings(sandbox_root="/tmp/x"))[1]).isolation == "bwrap"
    backend = backend_for(load_settings(sandbox_root="/tmp/x"))
    assert backend.name == "local" and backend is backend_for(load_settings(sandbox_root="/tmp/x"))


def test_admission_defaults_scale_with_workers() -> None:
    """Unset, a local backend's creation limits grow with MAX_WORKERS; Modal's stay put; set values win."""
    from agentswarm.config import load_settings
    from agentswarm.sandbox.factory import backend_config

    def limits(**kw: object) -> tuple[int, float]:
        fields = backend_config(load_settings(sandbox_root="/tmp/x", **kw))[1]
        return fields["create_concurrency"], fields["create_rate"]

    assert limits(max_workers=4) == (8, 5.0)
    assert limits(max_workers=100) == (25, 50.0)
    assert limits(max_workers=100, sandbox_backend="modal") == (8, 5.0)
    assert limits(max_workers=100, sandbox_create_concurrency=3, sandbox_create_rate=0.5) == (3, 0.5)
