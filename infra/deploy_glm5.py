"""GLM-5 behind SGLang's OpenAI-compatible server on Modal GPUs: the swarm's self-hosted model.

    modal deploy infra/deploy_glm5.py            # serve (scales to zero when idle)
    modal run infra/deploy_glm5.py --prompt "hi" # one chat through the deployed endpoint

The endpoint URL is printed by `modal deploy` (https://<workspace>--<app>-serve.modal.run);
put it in `.env` as LLM_BASE_URL and check it with `agentswarm llm-check`. Every knob is an
environment variable read at deploy time, so another model or GPU needs no code change.
Cost: set LLM_GPU_PRICE_PER_HOUR in `.env` to the GPUs' hourly price so the swarm's dollar
budget counts the endpoint's time. `python infra/glm5_client.py` prints the deployed app's
LLM_ENDPOINTS entry (URL, model, concurrency, GPUs and price).

Speculative decoding (the seed plan's EAGLE option): GLM_SPECULATIVE=eagle drafts with the
model's own multi-token-prediction layers through SGLang's EAGLE path (no draft model to
download); GLM_SPEC_DRAFT_MODEL=<repo> drafts with a separate EAGLE-3 model instead. It lowers
the latency of each request, which a few agents at a time feel; with a hundred agents the GPUs
are busy anyway and drafting can cost throughput, so it is off unless set. Its knobs:
GLM_SPEC_STEPS (3), GLM_SPEC_TOPK (1), GLM_SPEC_DRAFT_TOKENS (4), the SGLang cookbook's values.
"""

from __future__ import annotations

import json
import os
import subprocess

import modal

APP_NAME = os.environ.get("GLM_APP_NAME", "agentswarm-glm5")
IMAGE = os.environ.get("GLM_SGLANG_IMAGE", "lmsysorg/sglang:glm5-blackwell")  # the seed's image
MODEL = os.environ.get("GLM_MODEL_PATH", "zai-org/GLM-5-FP8")
SERVED_NAME = os.environ.get("GLM_SERVED_NAME", "glm-5")
GPU = os.environ.get("GLM_GPU", "B200:8")
TP = os.environ.get("GLM_TP", GPU.rsplit(":", 1)[-1] if ":" in GPU else "1")
# The parsers SGLang needs for this model's tool calls and reasoning; check SGLang's docs for
# the model you serve. An empty value leaves the flag out.
TOOL_PARSER = os.environ.get("GLM_TOOL_CALL_PARSER", "glm45")
REASONING_PARSER = os.environ.get("GLM_REASONING_PARSER", "glm45")
EXTRA_ARGS = os.environ.get("GLM_EXTRA_ARGS", "")
PORT = 30000
SPECULATIVE = os.environ.get("GLM_SPECULATIVE", "off").strip().lower()  # off | eagle (the model's MTP layers)
SPEC_STEPS = os.environ.get("GLM_SPEC_STEPS", "3")
SPEC_TOPK = os.environ.get("GLM_SPEC_TOPK", "1")
SPEC_DRAFT_TOKENS = os.environ.get("GLM_SPEC_DRAFT_TOKENS", "4")
SPEC_DRAFT_MODEL = os.environ.get("GLM_SPEC_DRAFT_MODEL", "").strip()  # a separate EAGLE-3 draft model, if any
MAX_INPUTS = int(os.environ.get("GLM_MAX_INPUTS", "256"))  # requests one container takes at once
STARTUP_TIMEOUT_S = int(os.environ.get("GLM_STARTUP_TIMEOUT_S", str(60 * 60)))  # loading weights is slow
IDLE_S = int(os.environ.get("GLM_SCALEDOWN_WINDOW_S", "900"))
MAX_CONTAINERS = int(os.environ.get("GLM_MAX_CONTAINERS", "1"))

def speculative_args() -> list[str]:
    """SGLang's speculative-decoding flags for GLM_SPECULATIVE (none when off); ValueError names a bad knob."""
    if SPECULATIVE in ("", "off", "none", "0", "false"):
        return []
    if SPECULATIVE not in ("eagle", "mtp"):
        raise ValueError(f"GLM_SPECULATIVE must be off or eagle, got {SPECULATIVE!r}")
    for name, value in (("GLM_SPEC_STEPS", SPEC_STEPS), ("GLM_SPEC_TOPK", SPEC_TOPK),
                        ("GLM_SPEC_DRAFT_TOKENS", SPEC_DRAFT_TOKENS)):
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    args = ["--speculative-algorithm", "EAGLE3" if SPEC_DRAFT_MODEL else "EAGLE",
            "--speculative-num-steps", SPEC_STEPS, "--speculative-eagle-topk", SPEC_TOPK,
            "--speculative-num-draft-tokens", SPEC_DRAFT_TOKENS]
    return args + (["--speculative-draft-model-path", SPEC_DRAFT_MODEL] if SPEC_DRAFT_MODEL else [])


SPEC_ARGS = speculative_args()  # here, so a bad knob fails `modal deploy` rather than the GPU container


def server_command() -> list[str]:
    """The SGLang launch command for the configured model."""
    cmd = ["python", "-m", "sglang.launch_server", "--model-path", MODEL, "--served-model-name", SERVED_NAME,
           "--host", "0.0.0.0", "--port", str(PORT), "--tp", TP, "--trust-remote-code"]
    if TOOL_PARSER:
        cmd += ["--tool-call-parser", TOOL_PARSER]
    if REASONING_PARSER:
        cmd += ["--reasoning-parser", REASONING_PARSER]
    return cmd + SPEC_ARGS + EXTRA_ARGS.split()


def launch_command() -> list[str]:
    """In the container: the command computed at deploy time (the container does not see the deploying
    shell's GLM_* variables, so the knobs travel in the image's environment); elsewhere: server_command()."""
    baked = os.environ.get(LAUNCH_ENV)
    return json.loads(baked) if baked else server_command()


LAUNCH_ENV = "GLM_LAUNCH_COMMAND"
app = modal.App(APP_NAME)
hf_cache = modal.Volume.from_name("agentswarm-hf-cache", create_if_missing=True)
image = modal.Image.from_registry(IMAGE).env({"HF_HUB_ENABLE_HF_TRANSFER": "1", "HF_HOME": "/cache/hf",
                                             LAUNCH_ENV: json.dumps(server_command())})
secrets = [modal.Secret.from_name(name) for name in os.environ.get("GLM_SECRETS", "huggingface").split(",") if name]


@app.function(image=image, gpu=GPU, volumes={"/cache": hf_cache}, secrets=secrets, timeout=24 * 3600,
              scaledown_window=IDLE_S, max_containers=MAX_CONTAINERS, startup_timeout=STARTUP_TIMEOUT_S)
@modal.concurrent(max_inputs=MAX_INPUTS)
@modal.web_server(port=PORT, startup_timeout=STARTUP_TIMEOUT_S)
def serve() -> None:
    """Start SGLang; Modal routes the web endpoint to its port once it answers."""
    subprocess.Popen(launch_command())


@app.local_entrypoint()
def main(prompt: str = "Say hello and name the model you are.") -> None:
    """Send one chat through the deployed endpoint and print the answer."""
    from agentswarm.llm import LLMClient

    url = serve.get_web_url()
    client = LLMClient(url, os.environ.get("LLM_API_KEY") or None, SERVED_NAME, timeout_s=STARTUP_TIMEOUT_S)
    reply = client.chat([{"role": "user", "content": prompt}], max_tokens=256)
    print(f"LLM_BASE_URL={url}")
    print(f"{reply.latency_s:.1f}s, {reply.usage.prompt_tokens}+{reply.usage.completion_tokens} tokens")
    print(reply.content)
