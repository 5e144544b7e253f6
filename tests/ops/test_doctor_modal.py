"""The doctor's Modal steps with Modal's cloud out of reach: against the recording fake of the SDK (every call it
makes binds to the installed `modal`'s signatures, as in tests/sandbox/test_sandbox_modal_contract.py), and
against the real SDK without a token or with its API at a closed port."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from pathlib import Path

import modal
import modal.config
import modal.exception
import pytest

from agentswarm.config import load_settings
from agentswarm.ops.doctor import Ladder, sandboxes

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sandbox"))
from modal_fake import World, default_exec, make_fake_modal  # noqa: E402
from test_sandbox_modal_contract import REAL  # noqa: E402

TOKEN_ID, TOKEN_SECRET = "ak-doctor-test-0123456789", "as-doctor-test-abcdefghij"
CALLS = {**REAL, "Image.build": (modal.Image.build, True)}
MODAL_STEPS = ["modal sdk", "modal token", "modal api", "modal app", "modal image", "sandbox"]


class FakeConfig:
    """modal.config.config's `get`, over a dict."""

    def __init__(self, values: dict[str, str | None]) -> None:
        self.values = values

    def get(self, key: str) -> str | None:
        return self.values.get(key)


@pytest.fixture
def listening():
    """A socket that accepts connections: 'Modal's API' in reach, for the fake."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def fake_modal(world: World, server_url: str, token: bool = True):
    fake = make_fake_modal(world)
    fake.__version__ = modal.__version__
    values = {"token_id": TOKEN_ID, "token_secret": TOKEN_SECRET} if token else {}
    fake.config = type("ConfigModule", (), {"config": FakeConfig({**values, "server_url": server_url})})

    def build(self, app=None):
        world.record("Image.build", (), {"app": app})
        self.object_id = "im-fake-built"
        return self

    fake.Image.build = build

    def handler(sb, argv, timeout, workdir):
        if argv == ["git", "--version"]:
            return 0, b"git version 2.39.5\n", b""
        if argv[1:] == sandboxes.RUNNER_VERSION:
            return 0, b"agentswarm runner (task.json schema 1, Python 3.11.9)\n", b""
        return default_exec(sb, argv, timeout, workdir)

    world.exec_handler = handler
    return fake


def modal_steps(settings, module) -> tuple[Ladder, list[str]]:
    lines: list[str] = []
    with Ladder(settings, lines.append, module) as ladder:
        sandboxes.check_backend(ladder)
    return ladder, lines


def modal_settings(**kw):
    return load_settings(sandbox_backend="modal", modal_app_name="agentswarm-doctor", **kw)


def test_every_modal_step_passes_and_every_call_binds_to_the_installed_sdk(listening):
    world = World()
    ladder, lines = modal_steps(modal_settings(), fake_modal(world, listening))
    assert ladder.passed, lines
    assert [line[2:].split()[0] + (" " + line[2:].split()[1] if line[2:].startswith("modal") else "")
            for line in lines] == MODAL_STEPS
    assert "inside one: git version 2.39.5; agentswarm runner (task.json schema 1" in lines[-1]
    assert "im-fake-built" in lines[4] and "agentswarm-doctor" in lines[3]
    assert world.sandboxes == {}, "the probe sandbox is terminated"
    [(_, create)] = world.called("Sandbox.create")
    assert create["image"].object_id == "im-fake-built"  # the sandbox runs the image just built
    used = {name for name, _, _ in world.calls}
    assert used <= set(CALLS), f"add these to CALLS: {used - set(CALLS)}"
    for name, args, kwargs in world.calls:
        real, is_method = CALLS[name]
        try:
            inspect.signature(real).bind(*((object(),) if is_method else ()), *args, **kwargs)
        except TypeError as exc:
            pytest.fail(f"{name}{args!r:.80} {kwargs} does not fit modal {modal.__version__}: {exc}")
    assert all(TOKEN_ID not in line and TOKEN_SECRET not in line for line in lines)


def test_the_config_keys_read_exist_in_the_installed_sdk():
    for key in ("token_id", "token_secret", "server_url"):
        modal.config.config.get(key)  # KeyError for a setting the SDK does not know
    assert issubclass(modal.exception.AuthError, modal.exception.Error)
    assert "app" in inspect.signature(modal.Image.build).parameters


def test_a_refused_token_fails_the_app_step_and_skips_the_rest(listening):
    world = World()
    world.fail_next["App.lookup"] = [modal.exception.AuthError("Token ID is malformed")]
    ladder, lines = modal_steps(modal_settings(), fake_modal(world, listening))
    assert not ladder.passed
    assert lines[3].startswith("✗ modal app") and "Modal refused the token" in lines[3] and "modal token new" in lines[3]
    assert lines[4].startswith("– modal image") and lines[5].startswith("– sandbox") and "needs `modal" in lines[5]


def test_a_missing_named_secret_fails_the_sandbox_step_naming_it(listening):
    world = World()
    world.fail_next["Sandbox.create"] = [modal.exception.NotFoundError("Secret 'agentswarm-llm' not found")]
    ladder, lines = modal_steps(modal_settings(), fake_modal(world, listening))
    assert not ladder.passed and lines[-1].startswith("✗ sandbox") and "modal secret create agentswarm-llm" in lines[-1]


def test_without_a_token_the_token_step_fails_and_the_cloud_steps_are_skipped(monkeypatch):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    if modal.config.config.get("token_id"):
        pytest.skip("this machine has a Modal profile in ~/.modal.toml (the CLI test below still runs)")
    ladder, lines = modal_steps(modal_settings(), None)  # the real SDK
    assert lines[0].startswith(f"✓ modal sdk         modal {modal.__version__}") or lines[0].startswith("✓ modal sdk")
    assert lines[1].startswith("✗ modal token") and "modal token new" in lines[1]
    assert all(line.startswith("–") and "no Modal token" in line for line in lines[3:]), lines
    assert [line[2:].split("  ")[0].strip() for line in lines[2:]] == MODAL_STEPS[2:]


def test_modal_api_out_of_reach_with_the_real_sdk(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MODAL_TOKEN_ID", TOKEN_ID)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", TOKEN_SECRET)
    monkeypatch.setenv("MODAL_SERVER_URL", f"http://127.0.0.1:{port}")
    ladder, lines = modal_steps(modal_settings(), None)
    assert lines[1].startswith("✓ modal token")
    assert lines[2].startswith("✗ modal api") and f"127.0.0.1:{port} is out of reach" in lines[2]
    assert all(line.startswith("–") and "out of reach" in line for line in lines[3:])
    assert all(TOKEN_ID not in line and TOKEN_SECRET not in line for line in lines)


def test_the_cli_without_modal_credentials_exits_nonzero_and_says_so(db, redis_client, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), SANDBOX_BACKEND="modal", HUB_PATH=str(tmp_path / "hub.git"),
               SANDBOX_ROOT=str(tmp_path / "sandboxes"), RECONCILE_INSTALL="")
    r = subprocess.run([sys.executable, "-m", "agentswarm", "doctor"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "✗ modal token" in r.stdout and "– sandbox          skipped: no Modal token" in r.stdout
    assert "NOT ready: 1 step failed (modal token)" in r.stdout
