"""FEATURES.json in Postgres: sync keeps status, progress by category, status moves that never undo done."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from agentswarm.db.models import Feature, Task
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.features import (
    FeatureFileError,
    all_features_done,
    mark_features_done,
    mark_features_failed,
    mark_features_in_progress,
    progress_by_category,
    sync_features,
)
from tests.support.runs import features_doc, start


def _status(url) -> dict[str, str]:
    with session_scope(url) as s:
        return dict(s.execute(select(Feature.id, Feature.status)).all())


def test_sync_inserts_new_features_and_keeps_the_status_of_known_ones(db, tmp_path):
    path = tmp_path / "FEATURES.json"
    path.write_text(json.dumps(features_doc()))
    with session_scope(db) as s:
        assert sync_features(s, path) == 5
        assert sync_features(s, path) == 5  # twice is harmless
        mark_features_done(s, ["core-001"])
    doc = features_doc()
    doc["features"][0]["title"] = "Vector maths"
    doc["features"].append({"id": "net-001", "category": "net", "title": "Sockets", "priority": 4})
    path.write_text(json.dumps(doc))
    with session_scope(db) as s:
        assert sync_features(s, path) == 6
        core = s.get(Feature, "core-001")
        assert (core.title, core.status) == ("Vector maths", "done")
        assert s.get(Feature, "net-001").status == "pending"
        assert progress_by_category(s) == {"core": {"done": 1}, "net": {"pending": 1}, "ui": {"pending": 2},
                                           "world": {"pending": 2}}


@pytest.mark.parametrize("doc", [{"features": "x"}, {"features": [{"title": "no id"}]}, 42])
def test_bad_feature_files_raise_one_clear_error(db, doc):
    with pytest.raises(FeatureFileError), session_scope(db) as s:
        sync_features(s, doc)


def test_status_moves_and_done_is_final(loaded, make_settings):
    with session_scope(loaded) as s:
        assert mark_features_in_progress(s, ["ui-001", "ui-002"]) == ["ui-001", "ui-002"]
        assert mark_features_done(s, ["ui-001"]) == ["ui-001"]
        assert mark_features_failed(s, ["ui-001", "ui-002"]) == ["ui-002"]
        assert mark_features_in_progress(s, ["ui-001"]) == []
    assert _status(loaded)["ui-001"] == "done" and _status(loaded)["ui-002"] == "failed"


def test_failed_waits_while_another_task_for_the_feature_is_open(loaded, make_settings):
    run_id = start(make_settings())
    with session_scope(loaded) as s:
        s.add(Task(run_id=run_id, title="t", description="d", branch="b", feature_ids=["world-001"]))
        s.flush()
        mark_features_in_progress(s, ["world-001"])
        assert mark_features_failed(s, ["world-001"]) == []
    assert _status(loaded)["world-001"] == "in_progress"


def test_all_features_done(db):
    with session_scope(db) as s:
        assert not all_features_done(s)  # no features: nothing to finish
        sync_features(s, features_doc())
        mark_features_done(s, [f["id"] for f in features_doc()["features"][:-1]])
        assert not all_features_done(s)
        mark_features_done(s, ["ui-002"])
        assert all_features_done(s)
