"""docs/configuration.md is generated from Settings and must not drift; every setting says what it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentswarm import config_doc
from agentswarm.config import Settings


def test_the_configuration_page_matches_the_settings():
    on_disk = config_doc.DOC.read_text() if config_doc.DOC.exists() else ""
    assert on_disk == config_doc.render(), (
        f"docs/configuration.md is out of date with agentswarm/config.py: run {config_doc.REGENERATE}")


def test_every_setting_has_a_description():
    missing = config_doc.fields_without_description()
    assert not missing, f"give these settings a description= in agentswarm/config.py: {', '.join(missing)}"


def test_every_setting_is_on_the_page_once_in_a_group():
    grouped = [name for _, names in config_doc.field_groups() for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields)
    page = config_doc.render()
    for name, info in Settings.model_fields.items():
        assert page.count(f"| `{config_doc.variable(name, info)}` |") == 1, name


def test_an_alias_is_the_variable_shown():
    assert config_doc.variable("dashboard_hosts", Settings.model_fields["dashboard_hosts"]) == "AGENTSWARM_DASHBOARD_HOSTS"


@pytest.mark.parametrize("default,shown", [
    (Path("./var/hub.git"), "`./var/hub.git`"),
    (Path("target-repo"), "`./target-repo`"),
    (config_doc.ROOT / "var" / "deps", "`./var/deps`"),
    (Path.home() / ".cache" / "x", "`~/.cache/x`"),
])
def test_paths_render_the_same_on_every_machine(default, shown):
    info = Settings.model_fields["hub_path"].__class__(default=default, description="d")
    assert config_doc.default_of(info) == shown


def test_a_computed_default_is_not_printed():
    info = Settings.model_fields["hub_path"].__class__(default_factory=lambda: 7, description="cores")
    assert config_doc.default_of(info) == "*(computed at start)*"


def test_check_mode_says_how_to_regenerate(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config_doc, "DOC", tmp_path / "configuration.md")
    monkeypatch.setattr(config_doc, "ROOT", tmp_path)
    (tmp_path / "configuration.md").write_text("# stale\n")
    assert config_doc.main(["--check"]) == 1
    assert "make docs" in capsys.readouterr().out
    assert config_doc.main([]) == 0 and config_doc.main(["--check"]) == 0
