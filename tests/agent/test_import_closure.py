"""The runner runs in a slim image: it may import only the standard library, requests and its own modules,
and the built-in agent's path not even requests (its import cost is paid on every attempt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.agent.conftest import ROOT


def test_runner_imports_only_stdlib_requests_and_its_own_modules() -> None:
    code = (
        "import sys, json; before = set(sys.modules); import agentswarm.agent.runner, agentswarm.agent.builtin, "
        "agentswarm.agent.external; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
                         capture_output=True, text=True, env=env, check=True).stdout
    loaded = json.loads(out)
    # cython_runtime is the interpreter-level module Cython-compiled wheels (charset_normalizer) register.
    allowed_third_party = ("requests", "urllib3", "charset_normalizer", "idna", "certifi", "cython_runtime")
    allowed_own = ("agentswarm.agent", "agentswarm.llm", "agentswarm.prompts", "agentswarm.scrubbing")
    stdlib = set(sys.stdlib_module_names)
    bad = [m for m in loaded if m.split(".")[0] not in stdlib and not m.startswith("_cython_")
           and m.split(".")[0] not in allowed_third_party
           and m != "agentswarm" and not any(m == a or m.startswith(a + ".") for a in allowed_own)]
    assert bad == [], f"the runner imports modules a slim sandbox image lacks: {bad}"
    assert "agentswarm.agent.runner" in loaded


def test_the_runner_and_the_builtin_agent_do_not_import_requests() -> None:
    """The model is reached on loopback (the Bridge) through http.client; requests loads only if a client
    is made for a real endpoint, so importing the sandbox side must not pull it (or urllib3) in."""
    code = ("import sys, json; import agentswarm.agent.runner, agentswarm.agent.builtin; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3'))))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(out) == []
