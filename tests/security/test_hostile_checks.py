"""A hostile check script (a package's test script, as an agent wrote it) run by the reconciler: contained."""

from __future__ import annotations

import pytest

from agentswarm.reconcile.checks import run_checks
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig
from tests.reconcile.hubs import main_of, make_hub
from tests.support.env import ROOT

pytestmark = pytest.mark.bwrap


@pytest.fixture
def backend(tmp_path) -> LocalSandboxBackend:
    return LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))



def test_a_check_script_reads_no_secret_reaches_no_service_and_cannot_touch_the_hub(tmp_path, backend, monkeypatch):
    """A package's test script, as an agent wrote it: every attempt fails, and the check still reports red."""
    monkeypatch.setenv("LLM_API_KEY", "sk-secret-123")
    monkeypatch.setenv("AGENTSWARM_DASHBOARD_TOKEN", "dash-token-456")
    (ROOT / ".env.check-probe").write_text("LLM_API_KEY=sk-secret-123\n")  # an operator's file in the project
    hub = make_hub(tmp_path, {"a.txt": "x"})
    try:
        probe = (f"env; for f in /proc/[0-9]*/environ; do tr '\\\\0' '\\\\n' < $f; done; cat {ROOT}/.env.check-probe; "
                 "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 5432), 2)\" && echo PG-OPEN; "
                 f"touch {hub}/objects/planted && echo HUB-WRITTEN; exit 1")
        [res] = run_checks(backend, str(hub), main_of(hub), "", [probe], 30, tmp_path / "deps")
    finally:
        (ROOT / ".env.check-probe").unlink()
    assert not res.ok
    for leaked in ("sk-secret-123", "dash-token-456", "DATABASE_URL", "REDIS_URL", "PG-OPEN", "HUB-WRITTEN"):
        assert leaked not in res.output, leaked
    assert not (hub / "objects" / "planted").exists()
