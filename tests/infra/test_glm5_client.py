"""infra/glm5_client.py prints the LLM_ENDPOINTS entry of the deployed GLM-5 app (offline: --url, or a fake of
Modal's lookup whose calls bind to the installed SDK)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import modal

ROOT = Path(__file__).resolve().parents[2]
URL = "https://ws--agentswarm-glm5-serve.modal.run"


def client(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "infra/glm5_client.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def entry_of(stdout: str) -> dict:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("LLM_ENDPOINTS="))
    [entry] = json.loads(line.split("=", 1)[1].strip("'"))
    return entry


def test_the_entry_carries_what_the_deployment_was_made_with():
    r = client("--url", URL + "/", "--gpu-price", "6.25", GLM_MAX_CONTAINERS="2")
    assert r.returncode == 0, r.stderr
    entry = entry_of(r.stdout)
    assert entry == {"name": "glm5-modal", "base_url": URL, "model": "glm-5", "max_concurrency": 512,
                     "cold_start_s": 3600.0, "warm_for_s": 900.0, "gpu_price_per_hour": 6.25, "gpus": 8}
    assert "agentswarm doctor" in r.stderr


def test_the_entry_is_one_the_swarm_reads():
    from agentswarm.llm.endpoints import parse_json

    r = client("--url", URL, "--key-env", "GLM5_KEY", "--role", "worker", "--name", "glm5")
    [ep] = parse_json(json.dumps([entry_of(r.stdout)]))
    assert (ep.name, ep.base_url, ep.key_env, ep.roles, ep.max_concurrency) == ("glm5", URL, "GLM5_KEY", ("worker",), 256)


def test_toml_for_an_endpoints_file():
    r = client("--url", URL, "--toml")
    data = tomllib.loads(r.stdout)
    assert data["endpoints"][0]["base_url"] == URL and data["endpoints"][0]["model"] == "glm-5"


def test_the_url_comes_from_modal_with_calls_the_installed_sdk_takes():
    sys.path.insert(0, str(ROOT / "infra"))
    try:
        import glm5_client
    finally:
        sys.path.remove(str(ROOT / "infra"))
    calls = []

    class Function:
        @staticmethod
        def from_name(app_name, name, *, version=None, environment_name=None, client=None):
            calls.append((app_name, name))
            return types.SimpleNamespace(get_web_url=lambda: URL)

    deploy = glm5_client.load_deployment()
    assert glm5_client.deployed_url(deploy, types.SimpleNamespace(Function=Function)) == URL
    assert calls == [("agentswarm-glm5", "serve")]
    inspect.signature(modal.Function.from_name).bind("agentswarm-glm5", "serve")
    assert "self" in inspect.signature(modal.Function.get_web_url).parameters
    assert isinstance(deploy.serve, modal.Function)  # `serve` is the deployed function the lookup names
