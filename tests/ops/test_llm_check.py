import os
import subprocess
import sys

from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.llm import LLMClient
from agentswarm.ops.llm_check import check_endpoint


def test_a_tool_calling_endpoint_passes():
    script = ["ready", {"content": None, "tool_calls": [{"name": "finish", "arguments": {"status": "complete",
                                                                                          "summary": "ok"}}]}]
    with FakeLLMServer(script=script) as llm:
        report = check_endpoint(LLMClient(llm.url, model="fake-glm"), "fake-glm")
    assert report.ok, report.lines


def test_an_endpoint_without_tool_calls_is_told_what_to_fix():
    with FakeLLMServer(script=["ready", "I would call finish now."]) as llm:
        report = check_endpoint(LLMClient(llm.url, model="fake-glm"), "fake-glm")
    assert not report.ok and "tool-call-parser" in report.lines[-1].detail


def test_cli_reports_a_dead_endpoint_in_one_line_per_probe():
    env = {**os.environ, "LLM_BASE_URL": "http://127.0.0.1:9", "LLM_MAX_RETRIES": "0"}
    r = subprocess.run([sys.executable, "-m", "agentswarm.ops.cli", "llm-check"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "FAIL models" in r.stdout and "Traceback" not in r.stderr
