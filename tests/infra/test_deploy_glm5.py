"""The GLM-5 deployment defines its Modal app with the installed SDK (offline) and builds the right command."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import importlib.util, json\n"
    "spec = importlib.util.spec_from_file_location('d', 'infra/deploy_glm5.py')\n"
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
    "print(json.dumps({'cmd': m.server_command(), 'app': m.app.name, 'gpu': m.GPU}))\n"
)


def _load(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_serve_glm5_with_tool_calls_on_eight_gpus():
    got = _load()
    cmd = got["cmd"]
    assert got["app"] == "agentswarm-glm5" and got["gpu"] == "B200:8"
    assert cmd[cmd.index("--tp") + 1] == "8" and cmd[cmd.index("--served-model-name") + 1] == "glm-5"
    assert "--tool-call-parser" in cmd and cmd[cmd.index("--port") + 1] == "30000"


def test_everything_is_an_environment_knob():
    got = _load(GLM_GPU="H200:4", GLM_MODEL_PATH="org/other", GLM_TOOL_CALL_PARSER="", GLM_EXTRA_ARGS="--mem-fraction-static 0.8")
    cmd = got["cmd"]
    assert cmd[cmd.index("--tp") + 1] == "4" and cmd[cmd.index("--model-path") + 1] == "org/other"
    assert "--tool-call-parser" not in cmd and cmd[-2:] == ["--mem-fraction-static", "0.8"]


def test_speculative_decoding_is_off_unless_set():
    assert not any(arg.startswith("--speculative") for arg in _load()["cmd"])


def test_speculative_decoding_with_the_models_own_layers():
    cmd = _load(GLM_SPECULATIVE="eagle")["cmd"]
    assert cmd[cmd.index("--speculative-algorithm") + 1] == "EAGLE"
    assert [cmd[cmd.index(f) + 1] for f in ("--speculative-num-steps", "--speculative-eagle-topk",
                                            "--speculative-num-draft-tokens")] == ["3", "1", "4"]
    assert "--speculative-draft-model-path" not in cmd


def test_speculative_decoding_with_a_draft_model_and_tuned_knobs():
    cmd = _load(GLM_SPECULATIVE="eagle", GLM_SPEC_DRAFT_MODEL="org/glm-eagle3", GLM_SPEC_STEPS="5",
                GLM_EXTRA_ARGS="--mem-fraction-static 0.7")["cmd"]
    assert cmd[cmd.index("--speculative-algorithm") + 1] == "EAGLE3"
    assert cmd[cmd.index("--speculative-draft-model-path") + 1] == "org/glm-eagle3"
    assert cmd[cmd.index("--speculative-num-steps") + 1] == "5" and cmd[-2:] == ["--mem-fraction-static", "0.7"]


def test_a_bad_speculative_knob_fails_at_deploy_time_naming_it():
    for env, name in (({"GLM_SPECULATIVE": "medusa"}, "GLM_SPECULATIVE"),
                      ({"GLM_SPECULATIVE": "eagle", "GLM_SPEC_TOPK": "0"}, "GLM_SPEC_TOPK")):
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and name in out.stderr


def test_the_container_runs_the_command_made_at_deploy_time():
    """The GPU container does not see the deploying shell's GLM_* variables: the command travels in the image."""
    deployed = _load(GLM_SPECULATIVE="eagle", GLM_GPU="H200:4")["cmd"]
    probe = PROBE.replace("'cmd': m.server_command()", "'cmd': m.launch_command()")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GLM_LAUNCH_COMMAND": json.dumps(deployed)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["cmd"] == deployed
