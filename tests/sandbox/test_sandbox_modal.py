"""The Modal backend's flow against a fake of the SDK surface (Modal's cloud is unreachable here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import modal.exception as mexc
import pytest
from modal_fake import World, make_fake_modal

from agentswarm.sandbox import SandboxCreateError, SandboxGone, get_backend
from agentswarm.sandbox.admission import AdmissionController
from agentswarm.sandbox.base import SandboxBackend, SandboxError
from agentswarm.sandbox.modal_backend import (
    NOT_A_FILE,
    RANGE_READER,
    TAG_RUN,
    TAG_TASK,
    ModalSandboxBackend,
    ModalSandboxConfig,
    sandbox_name,
)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backend(world: World, sleeps: list[float]) -> ModalSandboxBackend:
    config = ModalSandboxConfig(app_name="swarm-test", cpu=1.5, memory_mb=2048, timeout_s=900,
                                secret_names=["llm", "git"], output_cap_bytes=64)
    return ModalSandboxBackend(config, make_fake_modal(world), admission=AdmissionController(4, 1000.0),
                               sleep=sleeps.append)


def test_registry_and_protocol(world: World) -> None:
    b = get_backend("modal", {"app_name": "x"}, modal_module=make_fake_modal(world))
    assert isinstance(b, SandboxBackend) and b.name == "modal" and b.config.app_name == "x"
    with pytest.raises(ValueError):
        get_backend("modal", {"app_nmae": "x"}, modal_module=make_fake_modal(world))


def test_create_passes_settings_name_tags_and_secrets(backend: ModalSandboxBackend, world: World) -> None:
    sb = backend.create(run_id="r1", task_id="t1", attempt=2, env={"LLM_API_KEY": "sk-secret"})
    assert sb.id.startswith("sb-") and sb.backend == "modal" and sb.workdir == "/work"
    assert (sb.run_id, sb.task_id, sb.meta["name"]) == ("r1", "t1", "r1-t1-a2")
    assert world.called("App.lookup") == [(("swarm-test",), {"create_if_missing": True})]
    [(args, kw)] = world.called("Sandbox.create")
    assert args == ()  # no command: the sandbox idles until exec or its timeout
    assert kw["name"] == "r1-t1-a2" and kw["timeout"] == 900 and kw["cpu"] == 1.5 and kw["memory"] == 2048
    assert kw["app"].app_id == "ap-fake-swarm-test" and kw["workdir"] == "/work"
    assert kw["tags"][TAG_RUN] == "r1" and kw["tags"][TAG_TASK] == "t1" and kw["tags"]["agentswarm.attempt"] == "2"
    sources = [s.source for s in kw["secrets"]]
    assert sources == ["llm", "git", "<dict>"] and kw["secrets"][2].env == {"LLM_API_KEY": "sk-secret"}
    # The key travels only as a secret: not in tags, names, or the handle.
    assert "sk-secret" not in json.dumps({**kw["tags"], "name": kw["name"], "meta": sb.meta})
    steps = [step[0] for step in kw["image"].steps]
    assert steps[0] == "debian_slim" and "add_local_python_source" in steps
    assert world.called("SandboxFilesystem.make_directory") == [(("/work",), {"create_parents": True})]


def test_files_and_exec(backend: ModalSandboxBackend, world: World) -> None:
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    backend.put_file(sb, "task.json", b'{"id": "t1"}')
    assert world.sandboxes[sb.id].files["/work/task.json"] == b'{"id": "t1"}'
    assert backend.get_file(sb, "task.json") == b'{"id": "t1"}'
    assert backend.get_file(sb, "result.json") is None
    with pytest.raises(ValueError):
        backend.put_file(sb, "/etc/passwd", b"x")

    res = backend.exec(sb, ["cat", "task.json"], timeout_s=10.2)
    assert (res.exit_code, res.stdout, res.timed_out) == (0, '{"id": "t1"}', False)
    assert world.called("Sandbox.exec")[-1] == (("cat", "task.json"), {"timeout": 11, "workdir": "/work", "text": False})
    assert backend.exec(sb, ["exit", "2"], timeout_s=5).exit_code == 2

    long = backend.exec(sb, ["echo", "x" * 500], timeout_s=5)
    assert "bytes of output truncated" in long.stdout and len(long.stdout) < 120


def test_ranged_reads_are_one_capped_exec_of_the_reader(backend: ModalSandboxBackend, world: World) -> None:
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    backend.put_file(sb, "transcript.jsonl", b"0123456789")
    calls = len(world.called("Sandbox.exec"))
    assert backend.read_range(sb, "transcript.jsonl", 3, 4) == b"3456"
    assert backend.read_range(sb, "transcript.jsonl", 8, 100) == b"89"
    assert backend.read_range(sb, "transcript.jsonl", 50, 100) == b""
    assert backend.read_range(sb, "missing.jsonl", 0, 100) is None
    execs = world.called("Sandbox.exec")[calls:]
    assert len(execs) == 4 and not world.called("SandboxFilesystem.stat")
    assert execs[0] == (("python", "-I", "-c", RANGE_READER, "/work/transcript.jsonl", "3", "4"),
                        {"timeout": 30, "workdir": "/work", "text": False})
    with pytest.raises(ValueError):
        backend.read_range(sb, "../etc/passwd", 0, 10)

    # A reader that prints more than asked (a hostile python) is cut; one that fails is an error, not data.
    world.exec_handler = lambda box, argv, timeout, workdir: (0, b"x" * 500, b"")
    assert backend.read_range(sb, "transcript.jsonl", 0, 10) == b"x" * 10
    world.exec_handler = lambda box, argv, timeout, workdir: (-1, b"", b"")
    with pytest.raises(SandboxError, match="exited -1"):
        backend.read_range(sb, "transcript.jsonl", 0, 10)
    backend.terminate(sb)
    with pytest.raises(SandboxGone):
        backend.read_range(sb, "transcript.jsonl", 0, 10)


def _reader(path, offset: int, limit: int) -> tuple[int, bytes]:
    proc = subprocess.run([sys.executable, "-I", "-c", RANGE_READER, str(path), str(offset), str(limit)],
                          capture_output=True, timeout=10)
    return proc.returncode, proc.stdout


def test_the_reader_script_refuses_links_fifos_and_directories_without_hanging(tmp_path) -> None:
    (tmp_path / "t.jsonl").write_bytes(b'{"kind": "note"}\n' * 10)
    assert _reader(tmp_path / "t.jsonl", 17, 17) == (0, b'{"kind": "note"}\n')
    (tmp_path / "secret").write_text("orchestrator's file")
    os.symlink(tmp_path / "secret", tmp_path / "link.jsonl")
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    for name in ("link.jsonl", "fifo.jsonl", "dir.jsonl", "absent.jsonl"):
        assert _reader(tmp_path / name, 0, 100) == (NOT_A_FILE, b""), name


def test_timed_out_exec_returns_minus_one(backend: ModalSandboxBackend) -> None:
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    res = backend.exec(sb, ["sleep", "1000"], timeout_s=2)
    assert res.timed_out and res.exit_code == -1


def test_rate_limits_are_retried_with_backoff(backend: ModalSandboxBackend, world: World, sleeps: list[float]) -> None:
    world.fail_next["Sandbox.create"] = [mexc.ResourceExhaustedError("rate limit")] * 3
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    assert len(world.called("Sandbox.create")) == 4 and len(world.sandboxes) == 1
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]  # 1, 2, 4 s with jitter in [0.5, 1)
    assert 0.5 <= sleeps[0] <= 1.0 and 2.0 <= sleeps[2] <= 4.0

    world.fail_next["SandboxFilesystem.write_bytes"] = [mexc.ResourceExhaustedError("slow down")]
    backend.put_file(sb, "a.txt", b"a")
    assert backend.get_file(sb, "a.txt") == b"a"

    world.fail_next["Sandbox.create"] = [mexc.ResourceExhaustedError("rate limit")] * 10
    with pytest.raises(SandboxCreateError, match="still refused"):
        backend.create(run_id="r1", task_id="t2", attempt=1, env={})


def test_name_collision_attaches_to_the_running_sandbox(backend: ModalSandboxBackend, world: World) -> None:
    first = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    again = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    assert again.id == first.id and len(world.sandboxes) == 1
    assert world.called("Sandbox.from_name") == [(("swarm-test", "r1-t1-a1"), {})]
    assert backend.create(run_id="r1", task_id="t1", attempt=2, env={}).id != first.id


def test_terminate_list_and_attach_after_a_crash(world: World, backend: ModalSandboxBackend) -> None:
    a = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    b = backend.create(run_id="r1", task_id="t2", attempt=1, env={})
    c = backend.create(run_id="r2", task_id="t1", attempt=1, env={})

    monitor = ModalSandboxBackend(backend.config, make_fake_modal(world), admission=AdmissionController(1, 10.0))
    infos = monitor.list("r1")
    assert [(i.id, i.task_id, i.alive) for i in infos] == sorted([(a.id, "t1", True), (b.id, "t2", True)])
    assert infos[0].created_at is not None
    assert world.called("Sandbox.list")[-1][1] == {"app_id": "ap-fake-swarm-test", "tags": {TAG_RUN: "r1"}}
    assert {i.id for i in monitor.list()} == {a.id, b.id, c.id}

    attached = monitor.attach(a.id)
    assert attached is not None and (attached.run_id, attached.task_id, attached.workdir) == ("r1", "t1", "/work")
    monitor.put_file(attached, "result.json", b"{}")
    assert backend.get_file(a, "result.json") == b"{}"
    assert monitor.attach("sb-nonexistent") is None

    monitor.terminate(a.id)
    monitor.terminate(a.id)  # gone already: fine
    backend.terminate(a)  # the other process's stale handle: fine too
    monitor.terminate("sb-nonexistent")
    assert monitor.attach(a.id) is None
    with pytest.raises(SandboxGone):
        backend.exec(a, ["echo", "hi"], timeout_s=5)
    assert [i.id for i in monitor.list("r1")] == [b.id]


def test_sandbox_names_fit_modal_rules() -> None:
    assert sandbox_name("r1", "t1", 3) == "r1-t1-a3"
    long = sandbox_name("a" * 40, "b" * 40, 12)
    assert long == sandbox_name("a" * 40, "b" * 40, 12) and len(long) <= 64 and long.endswith("-a12")
    assert sandbox_name("a" * 40, "c" * 40, 12) != long
    with pytest.raises(ValueError):
        ModalSandboxBackend(ModalSandboxConfig(), make_fake_modal(World())).create(
            run_id="r/1", task_id="t", attempt=1, env={})


def test_the_hub_goes_in_as_a_bundle_through_the_filesystem(backend: ModalSandboxBackend, tmp_path) -> None:
    """A Modal sandbox cannot reach a local hub: prepare_repo puts every branch in as repo.bundle."""
    import subprocess

    from agentswarm.git.hub import create_hub

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.ts").write_text("export {};\n")
    create_hub(tmp_path / "hub.git", tmp_path / "src")
    sb = backend.create(run_id="r1", task_id="t9", attempt=1, env={})
    assert backend.delivery == "bundle"
    backend.prepare_repo(sb, str(tmp_path / "hub.git"))
    data = backend.get_file(sb, "repo.bundle")
    assert data is not None and data.startswith(b"# v")
    (tmp_path / "in.bundle").write_bytes(data)
    heads = subprocess.run(["git", "bundle", "list-heads", str(tmp_path / "in.bundle")], capture_output=True,
                           text=True, check=True).stdout
    assert "refs/heads/main" in heads
