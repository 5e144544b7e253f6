"""docker-compose.yml, read as YAML (no Docker daemon here): on a fresh clone `docker compose up` runs a demo
swarm. The Procfile's processes with the same commands, an init service that prepares a run, the demo model as
a service, every variable with a default (no .env needed), the dashboard and Flower on loopback only. The two
commands only compose runs (`agentswarm prepare`, `agentswarm dashboard --token-file`) run here for real."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import select

from agentswarm.dashboard.app import TOKEN_ENV, token_from_file
from agentswarm.db.models import Feature, Run
from agentswarm.db.session import session_scope
from agentswarm.ops.cli import cli
from agentswarm.ops.supervision import read_procfile
from agentswarm.queue.broker import queue_lengths
from tests.ops.test_processes import _argv, _check_process_set, _opt

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# compose's service for each Procfile process; the options that only say where a server listens (and where
# the off-loopback dashboard keeps its token) may differ
COMPOSE_NAME = {"beat": "beat", "control": "control-worker", "reconcile": "reconcile-worker", "work": "sandbox-worker",
                "merge": "merge-worker", "gate": "gate-worker", "flower": "flower", "dashboard": "dashboard"}
ONLY_COMPOSE = {"redis", "postgres", "init", "llm"}
WHERE = ("--port", "--address", "--host", "--token-file")
SANDBOXING = {"init", "sandbox-worker", "merge-worker", "gate-worker", "reconcile-worker"}  # bubblewrap: agents, gate, reconciler


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _same_command(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in WHERE:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in WHERE)):
            out.append(re.sub(r"\$\$?\{(\w+):-[^}]*\}", r"${\1}", arg))  # ${X:-4} and compose's $${X:-4}
    return out


def test_compose_runs_the_procfile_processes():
    procfile, services = read_procfile(ROOT / "Procfile"), _services()
    assert set(COMPOSE_NAME) == set(procfile) and set(services) == set(COMPOSE_NAME.values()) | ONLY_COMPOSE
    for name, line in procfile.items():
        service = services[COMPOSE_NAME[name]]
        assert _same_command(_argv(service["command"])) == _same_command(shlex.split(line)), name
    _check_process_set({n: _argv(s["command"]) for n, s in services.items()
                        if "celery" in " ".join(_argv(s.get("command", [])))})
    for name, service in services.items():  # every long-running service comes back after a crash
        assert service.get("restart") == ("no" if name == "init" else "unless-stopped"), name


def test_init_prepares_a_run_before_anything_else_starts():
    services = _services()
    init = services["init"]
    assert init["command"] == ["agentswarm", "prepare"]
    assert init["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                  "redis": {"condition": "service_healthy"}}
    assert all(services[s].get("healthcheck") for s in ("postgres", "redis"))
    for name, service in services.items():
        if name not in ONLY_COMPOSE:
            assert service["depends_on"] == {"init": {"condition": "service_completed_successfully"}}, name
        if name not in ("redis", "postgres"):
            assert service["volumes"] == ["./var:/app/var"] and service["build"] == ".", name


def test_the_demo_model_is_a_service_when_no_model_is_configured():
    services = _services()
    llm = _argv(services["llm"]["command"])
    assert llm[:2] == ["agentswarm", "fake-llm"] and _opt(llm, "--host") == "0.0.0.0" and "ports" not in services["llm"]
    for name, service in services.items():
        if name not in ("redis", "postgres"):
            assert service["environment"]["LLM_BASE_URL"] == f"${{LLM_BASE_URL:-http://llm:{_opt(llm, '--port')}}}"
    assert services["llm"]["depends_on"] == []  # it needs nothing, and the workers find it at once


def test_every_variable_has_a_default_and_no_env_file_is_required():
    text = COMPOSE.read_text()
    for var, default in re.findall(r"(?<!\$)\$\{(\w+)(:-[^}]*)?\}", text):
        assert default, f"${{{var}}} has no default: a fresh clone without .env would start it empty"
    assert not re.search(r"(?<![$\\])\$(?!\{|\$)\w", text)  # no bare $VAR either
    for name, service in _services().items():
        for entry in service.get("env_file", []):
            assert entry == {"path": ".env", "required": False}, name


def test_the_dashboard_and_flower_are_published_on_loopback_only():
    services = _services()
    published = {n: s["ports"] for n, s in services.items() if s.get("ports")}
    assert {"dashboard", "flower"} <= set(published)
    for name, ports in published.items():
        assert all(isinstance(p, str) and p.startswith("127.0.0.1:") for p in ports), (name, ports)
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    argv = _argv(services["dashboard"]["command"])  # all addresses inside its container: so it needs a token
    assert _opt(argv, "--host") == "0.0.0.0" and _opt(argv, "--port") == "8080"
    assert _opt(argv, "--token-file") == "var/dashboard-token"
    assert services["dashboard"]["environment"][TOKEN_ENV] == f"${{{TOKEN_ENV}:-}}"


def test_the_processes_that_make_sandboxes_may_make_namespaces():
    for name, service in _services().items():
        allowed = "SYS_ADMIN" in service.get("cap_add", []) and "seccomp=unconfined" in service.get("security_opt", [])
        assert allowed == (name in SANDBOXING), name


def test_the_image_has_what_the_services_run():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("git", "nodejs", "npm", "bubblewrap", "chromium"):
        assert re.search(rf"\s{package}\s", dockerfile), package
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "var", ".venv"} <= set(ignored)  # keys and this machine's state stay out of the image
    for name in ("prepare", "fake-llm", "dashboard"):
        assert name in cli.commands
    assert "--token-file" in {o for p in cli.commands["dashboard"].params for o in p.opts}


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file(tmp_path):
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_prepare_makes_a_run_once(db, redis_client, tmp_path):
    env = {**os.environ, "HUB_PATH": str(tmp_path / "hub.git"), "SANDBOX_ROOT": str(tmp_path / "sb")}
    runs = []
    for _ in range(2):  # `docker compose up` again: the same run
        out = subprocess.run([sys.executable, "-m", "agentswarm", "prepare"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        runs.append(re.search(r"^run (\w+) active$", out.stdout, re.M).group(1))
    assert runs[0] == runs[1] and (tmp_path / "hub.git" / "HEAD").exists()
    with session_scope(db) as s:
        assert [r.id for r in s.scalars(select(Run))] == [runs[0]]
        assert s.scalar(select(Feature.id).limit(1)) is not None
    assert queue_lengths(redis_client)["reconcile"] == 2  # main's first check asked for (twice: one is dropped)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dashboard_makes_and_keeps_its_token(db, tmp_path):
    path = tmp_path / "var" / "dashboard-token"
    token = token_from_file(path)
    assert len(token) >= 24 and stat.S_IMODE(path.stat().st_mode) == 0o600 and token_from_file(path) == token
    path.unlink()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "agentswarm", "dashboard", "--host", "0.0.0.0", "--port", str(port),
                             "--token-file", str(path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        base, deadline, r = f"http://127.0.0.1:{port}", time.monotonic() + 30, None
        while time.monotonic() < deadline:
            try:
                r = requests.get(base + "/api/summary", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert r is not None and r.status_code == 401  # off loopback, made a token rather than refusing to start
        made = path.read_text().strip()
        assert made and made not in (proc.stdout.readline() + proc.stdout.readline())  # never printed
        ok = requests.get(base + "/api/summary", headers={"Authorization": f"Bearer {made}"}, timeout=5)
        assert ok.status_code == 200
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
