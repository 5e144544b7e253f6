"""LLM_ENDPOINTS and LLM_ENDPOINTS_FILE: parsed into endpoints, or refused with one line naming the field."""

from __future__ import annotations

import json

import pytest

from agentswarm.config import load_settings
from agentswarm.errors import ConfigError
from agentswarm.llm.endpoints import EndpointError, for_role, load_endpoints, parse_json

TWO = [
    {"name": "gpu", "base_url": "http://127.0.0.1:9001/v1/", "key_env": "GPU_KEY", "model": "glm-5",
     "max_concurrency": 2, "gpu_price_per_hour": 4.0, "gpus": 8, "roles": ["worker"]},
    {"name": "api", "base_url": "https://api.example.com", "key_env": "API_KEY", "model": "gpt-x",
     "price_in_per_mtok": 1.5, "price_out_per_mtok": 6},
]


def test_json_list_is_read_in_order():
    gpu, api = load_endpoints(load_settings(llm_endpoints=json.dumps(TWO)))
    assert (gpu.name, gpu.base_url, gpu.key_env, gpu.max_concurrency, gpu.roles) == (
        "gpu", "http://127.0.0.1:9001", "GPU_KEY", 2, ("worker",))
    assert gpu.gpu_priced and gpu.prices == {"gpu_price_per_hour": 4.0, "gpus": 8.0}
    assert api.roles == ("planner", "worker", "reconciler") and not api.gpu_priced
    assert api.prices == {"price_in_per_mtok": 1.5, "price_out_per_mtok": 6}
    assert [e.name for e in for_role([gpu, api], "worker")] == ["gpu", "api"]
    assert [e.name for e in for_role([gpu, api], "planner")] == ["api"]
    assert [e.name for e in for_role([gpu, api], "subplanner")] == ["api"]  # subplanners go where planners go


def test_toml_file(tmp_path):
    f = tmp_path / "endpoints.toml"
    f.write_text('[[endpoints]]\nname = "a"\nbase_url = "http://127.0.0.1:1"\nmax_concurrency = 3\n'
                 'roles = ["planner", "reconciler"]\n\n[[endpoints]]\nname = "b"\nbase_url = "http://127.0.0.1:2"\n'
                 'cold_start_s = 600\n')
    a, b = load_endpoints(load_settings(llm_endpoints_file=f, llm_model="m1"))
    assert (a.name, a.max_concurrency, a.roles, a.model) == ("a", 3, ("planner", "reconciler"), "m1")
    assert (b.name, b.cold_start_s) == ("b", 600)


def test_llm_base_url_is_a_one_endpoint_list():
    s = load_settings(llm_base_url="http://127.0.0.1:5/v1", llm_model="m", llm_price_in_per_mtok=2.0)
    [ep] = load_endpoints(s)
    assert (ep.name, ep.base_url, ep.key_env, ep.model, ep.price_in_per_mtok) == (
        "default", "http://127.0.0.1:5", "LLM_API_KEY", "m", 2.0)
    assert not s.demo_mode
    assert load_endpoints(load_settings(llm_base_url="")) == []
    assert not load_settings(llm_endpoints=json.dumps(TWO)).demo_mode


@pytest.mark.parametrize(("change", "says"), [
    ({"max_concurrency": 0}, "LLM_ENDPOINTS[0] ('gpu').max_concurrency: must be > 0 (got 0)"),
    ({"max_concurrency": "2"}, "LLM_ENDPOINTS[0] ('gpu').max_concurrency: must be an integer (got '2')"),
    ({"price_in_per_mtok": -1}, "LLM_ENDPOINTS[0] ('gpu').price_in_per_mtok: must be >= 0 (got -1)"),
    ({"gpus": True}, "LLM_ENDPOINTS[0] ('gpu').gpus: must be an integer (got True)"),
    ({"roles": ["planner", "cook"]}, "LLM_ENDPOINTS[0] ('gpu').roles: a non-empty list of planner, worker, "
                                     "reconciler (got ['planner', 'cook'])"),
    ({"base_url": "ftp://x"}, "LLM_ENDPOINTS[0] ('gpu').base_url: LLM base URL must start with http://"),
    ({"key_env": "sk-abc123"}, "LLM_ENDPOINTS[0] ('gpu').key_env: the NAME of an environment variable"),
    ({"concurrency": 2}, "LLM_ENDPOINTS[0] ('gpu').concurrency: unknown key; known: name, base_url"),
    ({"name": "a b"}, "LLM_ENDPOINTS[0] ('a b').name: letters, digits"),
])
def test_bad_values_are_one_line_naming_the_field(change, says):
    bad = [{**TWO[0], **change}, TWO[1]]
    with pytest.raises(ConfigError) as err:
        load_settings(llm_endpoints=json.dumps(bad))
    text = str(err.value)
    assert says in text and "\n" not in text


def test_other_shapes_refused():
    for text, says in [("{", "LLM_ENDPOINTS: not valid JSON"), ("[]", "must be a non-empty list"),
                       ('[{"base_url": "http://a"}]', "LLM_ENDPOINTS[0].name: missing"),
                       (json.dumps([TWO[0], TWO[0]]), "'gpu' appears twice"),
                       ('{"endpoint": []}', "LLM_ENDPOINTS.endpoint: unknown key")]:
        with pytest.raises(EndpointError, match=None) as err:
            parse_json(text)
        assert says in str(err.value), (text, str(err.value))


def test_bad_toml_file_names_it(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text('[[endpoints]]\nname = "a"\nbase_url = "http://x"\nmax_concurrency = -1\n')
    with pytest.raises(ConfigError, match=r"LLM_ENDPOINTS_FILE e.toml\[0\] \('a'\).max_concurrency: must be > 0"):
        load_settings(llm_endpoints_file=f)
    f.write_text("[[endpoints]\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(llm_endpoints_file=f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(llm_endpoints_file=tmp_path / "missing.toml")


def test_a_key_put_in_the_list_is_refused_and_not_echoed():
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(ConfigError) as err:
        load_settings(llm_endpoints=json.dumps([{**TWO[0], "api_key": secret}]))
    assert "api_key: unknown key" in str(err.value) and secret not in str(err.value)


def test_key_is_read_from_its_variable_at_call_time(monkeypatch):
    [gpu, _] = load_endpoints(load_settings(llm_endpoints=json.dumps(TWO)))
    monkeypatch.delenv("GPU_KEY", raising=False)
    assert gpu.key() is None
    monkeypatch.setenv("GPU_KEY", "k-1")
    assert gpu.key() == "k-1"
    assert "k-1" not in repr(gpu) and "k-1" not in json.dumps(gpu.public())
