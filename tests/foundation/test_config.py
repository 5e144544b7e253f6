import os
import subprocess
import sys

import pytest

from agentswarm.config import Settings, load_settings, normalize_base_url
from agentswarm.errors import ConfigError


def test_defaults_follow_the_seed(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    s = load_settings()
    assert (s.max_workers, s.worker_timeout, s.merge_strategy.value) == (4, 1800, "fast-forward")
    assert (s.llm_max_tokens, s.llm_temperature, s.llm_model) == (8192, 0.7, "glm-5")
    assert str(s.target_repo_path) == "target-repo" and s.sandbox_backend.value == "local"
    assert s.visibility_timeout_s > 2 * s.worker_timeout


@pytest.mark.parametrize("raw,expected", [
    ("http://h:8000/v1", "http://h:8000"), ("http://h:8000/v1/", "http://h:8000"),
    ("https://api.runpod.ai/v2/x/openai/", "https://api.runpod.ai/v2/x/openai"), (" http://h ", "http://h"),
])
def test_base_url_normalised(raw, expected, monkeypatch):
    assert normalize_base_url(raw) == expected
    monkeypatch.setenv("LLM_BASE_URL", raw)
    assert load_settings().llm_base_url == expected


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_WORKERS=17\nMERGE_STRATEGY=rebase\n")
    s = load_settings()
    assert s.max_workers == 17 and s.merge_strategy.value == "rebase"


@pytest.mark.parametrize("var,value,needle", [
    ("MERGE_STRATEGY", "squash", "MERGE_STRATEGY: must be one of fast-forward, rebase, merge-commit"),
    ("MAX_WORKERS", "lots", "MAX_WORKERS: input should be a valid integer"),
    ("SANDBOX_BACKEND", "docker", "SANDBOX_BACKEND: must be one of local, modal"),
    ("LLM_TEMPERATURE", "9", "LLM_TEMPERATURE"),
])
def test_bad_value_raises_one_line(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_secrets_not_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "hunter2" not in str(err.value) and "DATABASE_URL" in str(err.value)


def _cli(env_extra, *args):
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "agentswarm.ops.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env_extra,needle", [
    ({"MERGE_STRATEGY": "yolo"}, "MERGE_STRATEGY: must be one of"),
    ({"MAX_WORKERS": "four"}, "MAX_WORKERS:"),
    ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, "DATABASE_URL: cannot reach Postgres"),
])
def test_start_up_stops_with_one_clear_line(env_extra, needle):
    r = _cli(env_extra, "check", "--no-services")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr + r.stdout


def test_celery_import_with_bad_setting_prints_one_line():
    env = {**os.environ, "MERGE_STRATEGY": "yolo"}
    r = subprocess.run([sys.executable, "-c", "import agentswarm.queue.app"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "MERGE_STRATEGY" in r.stderr


FLOAT_SETTINGS = sorted(name for name, f in Settings.model_fields.items() if f.annotation in (float, float | None))


def test_every_float_setting_is_covered():
    assert {"llm_timeout_s", "run_max_dollars", "sandbox_cpu", "stale_heartbeat_s",
            "gate_batch_wait_busy_s"} <= set(FLOAT_SETTINGS)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_inf_and_nan_are_refused_for_every_float_setting(monkeypatch, name, value):
    monkeypatch.setenv(name.upper(), value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"{name.upper()}:") and "\n" not in message


@pytest.mark.parametrize("env_extra,needle", [
    ({"RECONCILE_COMMANDS": "npm test"}, "RECONCILE_COMMANDS: must be a JSON list of strings"),
    ({"RUN_MAX_DOLLARS": "inf"}, "RUN_MAX_DOLLARS: input should be a finite number"),
    ({"LLM_TIMEOUT_S": "nan"}, "LLM_TIMEOUT_S:"),
])
def test_undecodable_and_infinite_values_stop_the_cli_with_one_line(env_extra, needle):
    r = _cli(env_extra, "check", "--no-services")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr + r.stdout


def test_a_json_list_of_commands_is_still_read(monkeypatch):
    monkeypatch.setenv("RECONCILE_COMMANDS", '["npm test", "npx tsc --noEmit"]')
    assert load_settings().reconcile_commands == ["npm test", "npx tsc --noEmit"]


MISSING_DB = {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/agentswarm_nosuchdb_for_tests"}


@pytest.mark.parametrize("args", [
    ["status"], ["status", "--json"], ["features"], ["run", "start"], ["run", "stop"],
    ["add-task", "do something"], ["cancel-task", "abc"], ["db", "upgrade"], ["db", "current"],
])
def test_a_missing_database_is_one_line_in_every_verb(args):
    r = _cli(MISSING_DB, *args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert lines[0].startswith("agentswarm: DATABASE_URL:") and "agentswarm_nosuchdb_for_tests" in lines[0]


@pytest.mark.parametrize("var,value", [
    ("HUB_SERVE_ADDR", "8471"), ("HUB_SERVE_ADDR", "127.0.0.1:"), ("HUB_SERVE_ADDR", "127.0.0.1:99999"),
    ("HUB_SERVE_ADDR", ":8471"), ("GATE_HUB_URL", "ftp://hub/hub.git"), ("GATE_HUB_URL", "hub:8471"),
    ("GATE_HUB_URL", "http://gate:s3cret-pass@hub:8471/hub.git"),
])
def test_served_hub_settings_are_checked(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert var in str(err.value) and "s3cret-pass" not in str(err.value)


def test_served_hub_tokens_are_secrets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUB_SERVE_ADDR", "[::1]:8471")
    monkeypatch.setenv("HUB_SERVE_TOKEN", "serve-token-0123456789")
    monkeypatch.setenv("GATE_HUB_URL", " http://10.0.0.5:8471/hub.git ")
    monkeypatch.setenv("GATE_HUB_TOKEN", "gate-token-0123456789")
    s = load_settings()
    assert s.hub_serve_addr == "[::1]:8471" and s.gate_hub_url == "http://10.0.0.5:8471/hub.git"
    assert {"serve-token-0123456789", "gate-token-0123456789"} <= set(s.secrets())
    assert "token-0123456789" not in repr(s)
