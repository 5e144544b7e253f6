"""The Modal worker image; `modal run infra/sandbox_image.py` prints the tool versions found in it.

The definition itself is `agentswarm.sandbox.modal_image.worker_image`, shared with the Modal backend.
"""

from __future__ import annotations

import os

import modal

from agentswarm.sandbox.modal_image import tool_versions, worker_image

app = modal.App(os.environ.get("MODAL_APP_NAME", "agentswarm") + "-image")
image = worker_image(modal, python_version=os.environ.get("SANDBOX_PYTHON", "3.11"))


@app.function(image=image, timeout=300)
def versions() -> dict[str, str]:
    """The version of every tool the worker needs, as found inside the image."""
    return tool_versions()


@app.local_entrypoint()
def main() -> None:
    """Build the image (if needed) and print what it holds; exit 1 if a tool is missing."""
    found = versions.remote()
    width = max(map(len, found))
    for tool, version in found.items():
        print(f"{tool:<{width}}  {version}")
    if any(v.startswith("missing") for v in found.values()):
        raise SystemExit(1)
