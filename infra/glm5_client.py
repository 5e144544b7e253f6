"""Print the LLM_ENDPOINTS entry of the deployed GLM-5 app (infra/deploy_glm5.py), ready for `.env`.

    python infra/glm5_client.py                      # looks the app up on Modal: its URL
    python infra/glm5_client.py --url https://...    # no Modal call: an entry for a URL you have
    python infra/glm5_client.py --toml               # as an [[endpoints]] table for LLM_ENDPOINTS_FILE

The entry carries what the deployment was made with (the same GLM_* variables `modal deploy` read):
the served model name, how many requests it takes at once (GLM_MAX_INPUTS x GLM_MAX_CONTAINERS),
its GPUs and their price (GLM_GPU_PRICE_PER_HOUR, per GPU), how long a cold start may take and how
long it stays warm. A key is never printed: `--key-env` names the variable that holds it.
Check the endpoint afterwards with `agentswarm doctor` (or `agentswarm llm-check`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

DEPLOY = Path(__file__).with_name("deploy_glm5.py")


def load_deployment() -> ModuleType:
    """infra/deploy_glm5.py as a module (defines its Modal app offline; reads the GLM_* variables)."""
    spec = importlib.util.spec_from_file_location("deploy_glm5", DEPLOY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpu_count(gpu: str) -> int:
    """B200:8 -> 8; H100 -> 1."""
    _, _, count = gpu.partition(":")
    return int(count) if count.isdigit() and int(count) > 0 else 1


def deployed_url(deploy: ModuleType, modal: Any = None) -> str:
    """The web URL of the deployed `serve` function (a Modal call: needs a token)."""
    if modal is None:
        import modal
    url = modal.Function.from_name(deploy.APP_NAME, "serve").get_web_url()
    if not url:
        raise SystemExit(f"{deploy.APP_NAME}: `serve` has no web URL; deploy it: modal deploy infra/deploy_glm5.py")
    return str(url)


def endpoint_entry(deploy: ModuleType, url: str, *, name: str, key_env: str, price_per_gpu_hour: float,
                   roles: list[str] | None = None) -> dict[str, Any]:
    """One LLM_ENDPOINTS entry for the deployment at `url`."""
    entry: dict[str, Any] = {
        "name": name, "base_url": url.rstrip("/"), "model": deploy.SERVED_NAME,
        "max_concurrency": deploy.MAX_INPUTS * deploy.MAX_CONTAINERS,
        "cold_start_s": float(deploy.STARTUP_TIMEOUT_S), "warm_for_s": float(deploy.IDLE_S),
    }
    if key_env:
        entry["key_env"] = key_env
    if price_per_gpu_hour > 0:
        entry.update(gpu_price_per_hour=price_per_gpu_hour, gpus=gpu_count(deploy.GPU))
    if roles:
        entry["roles"] = roles
    return entry


def check_entry(entry: dict[str, Any]) -> None:
    """Refuse an entry the swarm would refuse (EndpointError, a ValueError, names the field)."""
    from agentswarm.llm.endpoints import parse_endpoints

    parse_endpoints([entry])


def as_toml(entry: dict[str, Any]) -> str:
    """The entry as an [[endpoints]] table."""
    lines = ["[[endpoints]]"]
    for key, value in entry.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, modal: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python infra/glm5_client.py", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="the endpoint's URL (default: ask Modal for the deployed app's)")
    parser.add_argument("--name", default="glm5-modal", help="the endpoint's name in LLM_ENDPOINTS")
    parser.add_argument("--key-env", default="", help="the variable holding its key, if it needs one")
    parser.add_argument("--gpu-price", type=float, default=float(os.environ.get("GLM_GPU_PRICE_PER_HOUR", "0") or 0),
                        help="dollars per GPU-hour (default GLM_GPU_PRICE_PER_HOUR)")
    parser.add_argument("--role", action="append", dest="roles", help="planner, worker, reconciler (repeatable)")
    parser.add_argument("--toml", action="store_true", help="print a [[endpoints]] table instead of JSON")
    args = parser.parse_args(argv)
    deploy = load_deployment()
    url = args.url or deployed_url(deploy, modal)
    entry = endpoint_entry(deploy, url, name=args.name, key_env=args.key_env, price_per_gpu_hour=args.gpu_price,
                           roles=args.roles)
    try:
        check_entry(entry)
    except ValueError as exc:
        print(f"glm5_client: {exc}", file=sys.stderr)
        return 2
    if args.toml:
        print(as_toml(entry), end="")
    else:
        print(f"LLM_ENDPOINTS='{json.dumps([entry])}'")
    print(f"# then: agentswarm doctor   (a cold start may take up to {deploy.STARTUP_TIMEOUT_S}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
