"""VoxelCraft's FEATURES.json: its schema, the loader's rules, and agreement with SPEC.md and AGENTS.md."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from agentswarm.lifecycle.feature_file import (
    CATEGORIES,
    FeatureFileError,
    category_counts,
    load_features,
    topological_order,
    validate_document,
)

TARGET = Path(__file__).resolve().parents[2] / "target-repo"
SEED_COUNTS = {"engine": 30, "world": 45, "player": 25, "blocks": 20, "physics": 15, "ui": 25, "input": 10,
               "lighting": 15, "audio": 5, "performance": 10}


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads((TARGET / "FEATURES.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((TARGET / "FEATURES.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def features() -> list[dict]:
    return load_features(TARGET / "FEATURES.json")


def spec_files() -> set[str]:
    """Source files listed in SPEC.md's file structure block."""
    text = (TARGET / "SPEC.md").read_text(encoding="utf-8")
    block = text.split("## 3. File structure", 1)[1].split("```", 2)[1]
    files, folder = set(), None
    for line in block.splitlines():
        if not line.strip():
            continue
        if line.startswith(" "):
            assert folder, f"file line before any folder in SPEC.md: {line!r}"
            files.update(folder + name for name in line.split())
        else:
            folder = line.split()[0]
            assert folder.endswith("/"), f"folder line must end in '/': {line!r}"
    return files


# --- the file itself --------------------------------------------------------------------------------


def test_file_matches_its_schema(document, validator):
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_two_hundred_features_with_the_seed_category_counts(features):
    assert len(features) == 200
    assert category_counts(features) == SEED_COUNTS
    assert set(SEED_COUNTS) == set(CATEGORIES)


def test_ids_are_unique_and_numbered_from_001_within_each_category(features):
    ids = [f["id"] for f in features]
    assert len(set(ids)) == len(ids)
    for category, count in SEED_COUNTS.items():
        numbers = sorted(int(f["id"].rsplit("-", 1)[1]) for f in features if f["category"] == category)
        assert numbers == list(range(1, count + 1)), category


def test_dependencies_are_known_earlier_and_acyclic(features):
    position = {f["id"]: i for i, f in enumerate(features)}
    for f in features:
        for dep in f["dependencies"]:
            assert dep in position, f"{f['id']} depends on unknown {dep}"
            assert position[dep] < position[f["id"]], f"{f['id']} depends on later feature {dep}"
    order = topological_order(features)
    assert sorted(order) == sorted(position)
    placed = {fid: i for i, fid in enumerate(order)}
    assert all(placed[d] < placed[f["id"]] for f in features for d in f["dependencies"])


def test_foundations_come_first(features):
    by_id = {f["id"]: f for f in features}
    for f in features:
        for dep in f["dependencies"]:
            assert by_id[dep]["priority"] <= f["priority"], f"{f['id']} is more urgent than its dependency {dep}"
    assert any(f["priority"] == 1 and not f["dependencies"] for f in features)


def test_files_acceptance_and_status(features):
    for f in features:
        assert f["status"] == "pending", f["id"]
        assert f["files"] and all(p.startswith("src/") and ".." not in p for p in f["files"]), f["id"]
        sources = [p for p in f["files"] if not p.endswith(".test.ts")]
        tests = [p for p in f["files"] if p.endswith(".test.ts")]
        assert len(sources) <= 3 and tests, f"{f['id']}: one to three sources plus a test file"
        assert 2 <= len(f["acceptance"]) <= 4 and all(a.strip() for a in f["acceptance"]), f["id"]
        named = [a for a in f["acceptance"] if any(t in a for t in tests)]
        assert named, f"{f['id']}: no acceptance criterion names one of its test files {tests}"


def test_titles_and_descriptions_are_specific(features):
    titles = [f["title"] for f in features]
    assert len(set(titles)) == len(titles), "duplicate titles"
    descriptions = [f["description"] for f in features]
    assert len(set(descriptions)) == len(descriptions), "duplicate descriptions"
    assert all(len(d) >= 80 for d in descriptions)


# --- agreement between FEATURES.json, SPEC.md and AGENTS.md -----------------------------------------


def test_spec_file_structure_lists_exactly_the_feature_sources(features):
    listed = spec_files()
    existing = {p.relative_to(TARGET).as_posix() for p in (TARGET / "src").rglob("*.ts")
                if not p.name.endswith(".test.ts")}
    planned = {p for f in features for p in f["files"] if not p.endswith(".test.ts")}
    assert planned - listed == set(), "feature files missing from SPEC.md §3"
    assert listed - planned - existing == set(), "SPEC.md §3 lists files that no feature creates"
    folders = {p.rsplit("/", 1)[0] for p in listed}
    stray_tests = {p for f in features for p in f["files"]
                   if p.endswith(".test.ts") and p.rsplit("/", 1)[0] not in folders}
    assert not stray_tests, "tests must sit beside sources in SPEC.md folders"


def test_agents_md_names_every_source_folder():
    agents = (TARGET / "AGENTS.md").read_text(encoding="utf-8")
    folders = {p.rsplit("/", 1)[0] + "/" for p in spec_files()} - {"src/"}
    missing = sorted(f for f in folders if f"`{f}`" not in agents)
    assert not missing, f"AGENTS.md does not describe {missing}"


def test_spec_mentions_only_real_feature_ids_and_has_its_sections(features):
    spec = (TARGET / "SPEC.md").read_text(encoding="utf-8")
    ids = {f["id"] for f in features}
    pattern = r"\b(?:" + "|".join(CATEGORIES) + r")-\d{3}\b"
    mentioned = set(re.findall(pattern, spec))
    assert mentioned and mentioned <= ids
    for heading in ("Architecture", "File structure", "Coordinate systems", "Block registry", "Chunk format",
                    "shader architecture", "Terrain pipeline", "Lighting", "Physics", "Input", "UI", "Audio",
                    "Performance", "Code conventions", "Milestones"):
        assert re.search(rf"^## \d+\. .*{heading}", spec, re.M), heading
    assert 450 <= len(spec.splitlines()) <= 700


# --- the loader's rules -----------------------------------------------------------------------------


def _mutated(document, change):
    doc = copy.deepcopy(document)
    change(doc["features"])
    return doc


def _set(index, key, value):
    return lambda fs: fs[index].__setitem__(key, value)


BAD = [
    ("duplicate id", lambda fs: fs[1].__setitem__("id", fs[0]["id"]), "duplicate id", False),
    ("unknown dependency", _set(3, "dependencies", ["engine-999"]), "'engine-999' is not a known", False),
    ("cycle", lambda fs: fs[0].__setitem__("dependencies", [fs[2]["id"]]) or fs[2].__setitem__(
        "dependencies", [fs[1]["id"]]) or fs[1].__setitem__("dependencies", [fs[0]["id"]]), "cycle", False),
    ("self dependency", lambda fs: fs[4].__setitem__("dependencies", [fs[4]["id"]]), "itself", False),
    ("unknown category", _set(0, "category", "network"), "category 'network'", True),
    ("id prefix", _set(0, "id", "world-999"), "does not match category", True),
    ("id format", _set(0, "id", "engine-1"), "three digits", True),
    ("priority zero", _set(0, "priority", 0), "priority", True),
    ("priority eleven", _set(0, "priority", 11), "priority", True),
    ("priority bool", _set(0, "priority", True), "priority", True),
    ("status", _set(0, "status", "started"), "status 'started'", True),
    ("file outside src", _set(0, "files", ["lib/a.ts"]), "under src/", True),
    ("parent segment", _set(0, "files", ["src/../secret.ts"]), "under src/", True),
    ("absolute path", _set(0, "files", ["/src/a.ts"]), "under src/", True),
    ("no files", _set(0, "files", []), "1 to 4 paths", True),
    ("no acceptance", _set(0, "acceptance", []), "acceptance", True),
    ("one criterion", _set(0, "acceptance", ["`npx tsc --noEmit` passes"]), "acceptance", True),
    ("blank criterion", _set(0, "acceptance", ["works", "   "]), "acceptance", True),
    ("missing key", lambda fs: fs[0].pop("acceptance"), "missing key", True),
    ("unknown key", _set(0, "owner", "me"), "unknown key", True),
]


@pytest.mark.parametrize(("change", "message", "schema_catches"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_loader_rejects_broken_features_naming_feature_and_rule(document, validator, tmp_path, change, message,
                                                                 schema_catches):
    doc = _mutated(document, change)
    path = tmp_path / "FEATURES.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(FeatureFileError) as info:
        load_features(path)
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)
    assert re.search(r"feature '[a-z]+-\d+'|features\[\d+\]", str(info.value)), str(info.value)
    assert validator.is_valid(doc) is not schema_catches


def test_cycle_error_names_the_cycle(document):
    doc = _mutated(document, lambda fs: fs[0].__setitem__("dependencies", [fs[1]["id"]]) or fs[1].__setitem__(
        "dependencies", [fs[0]["id"]]))
    with pytest.raises(FeatureFileError, match=r"engine-001 -> engine-002 -> engine-001|engine-002 -> engine-001"):
        validate_document(doc)


@pytest.mark.parametrize(("text", "message"), [("{", "not valid JSON"), ("[]", "top level"),
                                                ('{"project": "V", "version": 2, "features": []}', "'version'"),
                                                ('{"project": "V", "version": 1, "features": []}', "non-empty")])
def test_loader_rejects_bad_documents(tmp_path, text, message):
    path = tmp_path / "FEATURES.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FeatureFileError, match=message):
        load_features(path)


def test_loader_reports_a_missing_file(tmp_path):
    with pytest.raises(FeatureFileError, match="not found"):
        load_features(tmp_path / "nope.json")


def _feature(fid: str, priority: int, deps: list[str]) -> dict:
    return {"id": fid, "category": fid.split("-")[0], "title": fid, "description": "x" * 20, "priority": priority,
            "status": "pending", "files": ["src/a.ts"], "dependencies": deps, "acceptance": ["aaaaaaaaaa"] * 2}


def test_topological_order_breaks_ties_by_priority_then_file_order():
    fs = [_feature("ui-001", 5, []), _feature("engine-001", 1, []), _feature("engine-002", 1, ["ui-001"]),
          _feature("world-001", 3, [])]
    assert topological_order(fs) == ["engine-001", "world-001", "ui-001", "engine-002"]


def test_category_counts_reports_every_category():
    counts = category_counts([_feature("audio-001", 1, [])])
    assert counts["audio"] == 1 and counts["engine"] == 0 and set(counts) == set(CATEGORIES)
