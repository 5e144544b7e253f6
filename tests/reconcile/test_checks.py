"""The reconciler's checks, each in an isolated sandbox, against a real hub: install once per lock file, then the commands."""

from __future__ import annotations

import pytest

from agentswarm.reconcile.checks import run_checks
from agentswarm.sandbox.deps import lock_digest
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig
from tests.reconcile.hubs import git, main_of, make_hub

pytestmark = pytest.mark.bwrap

INSTALL = "mkdir -p node_modules/dep && echo built > node_modules/dep/index.js"


@pytest.fixture
def backend(tmp_path) -> LocalSandboxBackend:
    return LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))



def _commit(tmp_path, hub, name: str, files: dict[str, str]) -> str:
    clone = tmp_path / f"clone-{name}"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    for path, text in files.items():
        (clone / path).write_text(text)
    git("add", ".", cwd=clone)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name, cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    return main_of(hub)


def test_install_runs_once_per_lock_file_and_checks_see_the_modules_read_only(tmp_path, backend):
    hub = make_hub(tmp_path, {"package-lock.json": "v1", "package.json": "{}"})
    deps = tmp_path / "deps"
    checks = ["cat node_modules/dep/index.js", "echo 'src/x.ts(1,2): error TS2304: nope' && false",
              "touch node_modules/dep/planted 2>&1; test ! -e node_modules/dep/planted"]
    first = run_checks(backend, str(hub), main_of(hub), INSTALL, checks, 30, deps)
    assert [r.command for r in first] == [INSTALL, *checks]
    assert [r.ok for r in first] == [True, True, False, True], [r.output for r in first]
    assert "built" in first[1].output and "TS2304" in first[2].output
    again = run_checks(backend, str(hub), main_of(hub), INSTALL, checks[:1], 30, deps)
    assert [r.command for r in again] == checks[:1] and again[0].ok  # same lock file: the cache serves
    sha = _commit(tmp_path, hub, "bump", {"package-lock.json": "v2"})
    third = run_checks(backend, str(hub), sha, INSTALL, checks[:1], 30, deps)
    assert [r.command for r in third] == [INSTALL, checks[0]] and all(r.ok for r in third)
    assert lock_digest(str(hub), sha) != lock_digest(str(hub), main_of(hub) + "~1")
    assert backend.list() == []  # every check sandbox was removed


def test_no_lock_file_means_no_install_and_a_failed_install_stops_the_checks(tmp_path, backend):
    hub = make_hub(tmp_path, {"a.txt": "x"})
    results = run_checks(backend, str(hub), main_of(hub), INSTALL, ["test -f a.txt"], 30, tmp_path / "deps")
    assert [(r.command, r.ok) for r in results] == [("test -f a.txt", True)]
    (tmp_path / "l").mkdir()
    locked = make_hub(tmp_path / "l", {"package-lock.json": "{}"})
    failed = run_checks(backend, str(locked), main_of(locked), "echo nope; exit 3", ["true"], 30, tmp_path / "deps")
    assert [(r.command, r.exit_code) for r in failed] == [("echo nope; exit 3", 3)] and "nope" in failed[0].output


def test_command_killed_at_limit_with_its_children(tmp_path, backend):
    hub = make_hub(tmp_path, {"a.txt": "x"})
    [res] = run_checks(backend, str(hub), main_of(hub), "", ["sleep 60 & sleep 60"], 1, tmp_path / "deps")
    assert res.timed_out and not res.ok and res.duration_s < 10


def test_output_keeps_only_the_tail(tmp_path, backend):
    hub = make_hub(tmp_path, {"a.txt": "x"})
    [res] = run_checks(backend, str(hub), main_of(hub), "", ["python3 -c \"print('x'*100000); print('THE END')\""], 30,
                       tmp_path / "deps")
    assert res.ok and len(res.output) <= 20_000 and "THE END" in res.output
