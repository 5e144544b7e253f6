"""`agentswarm doctor`'s agent step: the chosen external agent is installed and answers inside a sandbox."""

from __future__ import annotations

import shutil

import pytest

from agentswarm.agent.install import install_agent, tools_dir
from agentswarm.config import load_settings
from agentswarm.ops.doctor import agent, sandboxes
from tests.ops.test_doctor import run_steps

pytestmark = [pytest.mark.bwrap, pytest.mark.integration]


def _steps(tmp_path, **overrides):
    settings = load_settings(sandbox_root=tmp_path / "sandboxes", **overrides)
    return run_steps(settings, sandboxes.check_backend, agent.check_agent)


def test_an_agent_missing_from_the_tools_cache_fails_with_the_install_command(tmp_path):
    ladder, lines = _steps(tmp_path, agent="pi", agent_tools_dir=tmp_path / "empty-tools")
    assert lines[-1].startswith("✗ agent") and "not installed" in lines[-1] and "make agents" in lines[-1], lines
    assert not ladder.passed


def test_the_builtin_agent_needs_nothing(tmp_path):
    ladder, lines = _steps(tmp_path, agent="builtin")
    assert ladder.passed and "nothing to install" in lines[-1]


@pytest.mark.parametrize("name", ["mini-swe-agent", "pi"])
def test_an_installed_agent_reports_its_version_from_inside_a_sandbox(tmp_path, name):
    if name == "pi" and not shutil.which("npm"):
        pytest.skip("npm is not on PATH")
    try:
        install_agent(name, tools_dir())
    except Exception as exc:  # no registry access here: say so rather than pass
        pytest.skip(f"{name} could not be installed: {exc}")
    ladder, lines = _steps(tmp_path, agent=name)
    assert ladder.passed, lines
    assert "answers inside a sandbox" in lines[-1] and ("2.4.6" if name == "mini-swe-agent" else "0.73.1") in lines[-1]
