"""Load and check a target repository's FEATURES.json (standard library only).

The rules mirror target-repo/FEATURES.schema.json plus what a schema cannot say: unique
ids, dependencies on known features, no dependency cycles. Every error names the feature
and the rule it breaks.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agentswarm.errors import SwarmError

CATEGORIES = ("engine", "world", "player", "blocks", "physics", "ui", "input", "lighting", "audio", "performance")
STATUSES = ("pending", "in_progress", "done", "failed")
REQUIRED_KEYS = ("id", "category", "title", "description", "priority", "status", "files", "dependencies",
                 "acceptance")
MAX_FILES = 4
ACCEPTANCE_RANGE = (2, 4)

_ID_RE = re.compile(r"^([a-z]+)-(\d{3})$")
_PATH_RE = re.compile(r"^src/([A-Za-z0-9_-]+/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\.[a-z]+$")


class FeatureFileError(SwarmError, ValueError):
    """FEATURES.json is unreadable or breaks one of its structural rules."""


def load_features(path: str | Path) -> list[dict[str, Any]]:
    """Read FEATURES.json at `path`, check every rule, and return its features in file order."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeatureFileError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatureFileError(f"{path}: not valid JSON: {exc}") from None
    return validate_document(doc, source=str(path))


def validate_document(doc: Any, source: str = "FEATURES.json") -> list[dict[str, Any]]:
    """Check a parsed FEATURES.json document and return its features."""
    if not isinstance(doc, dict):
        raise FeatureFileError(f"{source}: the top level must be an object")
    unknown = sorted(set(doc) - {"project", "version", "features"})
    if unknown:
        raise FeatureFileError(f"{source}: unknown top-level key(s) {unknown}")
    if not isinstance(doc.get("project"), str) or not doc["project"]:
        raise FeatureFileError(f"{source}: 'project' must be a non-empty string")
    if doc.get("version") != 1:
        raise FeatureFileError(f"{source}: 'version' must be 1, got {doc.get('version')!r}")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise FeatureFileError(f"{source}: 'features' must be a non-empty list")
    seen: set[str] = set()
    for index, feature in enumerate(features):
        _check_feature(feature, index, source)
        if feature["id"] in seen:
            raise FeatureFileError(f"{source}: feature '{feature['id']}': duplicate id")
        seen.add(feature["id"])
    for feature in features:
        for dep in feature["dependencies"]:
            if dep not in seen:
                raise FeatureFileError(
                    f"{source}: feature '{feature['id']}': dependency '{dep}' is not a known feature id")
    topological_order(features)  # raises on a cycle
    return features


def category_counts(features: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Number of features per category, every known category present (zero when empty)."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for feature in features:
        counts[feature["category"]] = counts.get(feature["category"], 0) + 1
    return counts


def topological_order(features: list[dict[str, Any]]) -> list[str]:
    """Feature ids with every dependency before its dependents; ties go to (priority, file order)."""
    position = {f["id"]: i for i, f in enumerate(features)}
    by_id = {f["id"]: f for f in features}
    missing = [(f["id"], d) for f in features for d in f["dependencies"] if d not in by_id]
    if missing:
        fid, dep = missing[0]
        raise FeatureFileError(f"feature '{fid}': dependency '{dep}' is not a known feature id")
    waiting = {f["id"]: len(set(f["dependencies"])) for f in features}
    dependents: dict[str, list[str]] = {f["id"]: [] for f in features}
    for f in features:
        for dep in set(f["dependencies"]):
            dependents[dep].append(f["id"])
    ready = [(by_id[i]["priority"], position[i], i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, _, fid = heapq.heappop(ready)
        order.append(fid)
        for child in dependents[fid]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (by_id[child]["priority"], position[child], child))
    if len(order) < len(features):
        cycle = _find_cycle(by_id, {i for i, n in waiting.items() if n > 0})
        raise FeatureFileError(f"feature '{cycle[0]}': dependency cycle {' -> '.join(cycle)}")
    return order


def _find_cycle(by_id: dict[str, dict[str, Any]], stuck: set[str]) -> list[str]:
    # Every stuck feature has a stuck dependency, so walking them must revisit a node.
    start = min(stuck)
    path, index = [start], {start: 0}
    while True:
        nxt = min(d for d in by_id[path[-1]]["dependencies"] if d in stuck)
        if nxt in index:
            return path[index[nxt]:] + [nxt]
        index[nxt] = len(path)
        path.append(nxt)


def _check_feature(feature: Any, index: int, source: str) -> None:
    if not isinstance(feature, dict):
        raise FeatureFileError(f"{source}: features[{index}] must be an object")
    fid = feature.get("id")
    name = f"feature '{fid}'" if isinstance(fid, str) else f"features[{index}]"

    def fail(rule: str) -> FeatureFileError:
        return FeatureFileError(f"{source}: {name}: {rule}")

    missing = [k for k in REQUIRED_KEYS if k not in feature]
    if missing:
        raise fail(f"missing key(s) {missing}")
    unknown = sorted(set(feature) - set(REQUIRED_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {unknown}")
    match = _ID_RE.match(fid) if isinstance(fid, str) else None
    if not match:
        raise fail("id must look like '<category>-NNN' (three digits)")
    category = feature["category"]
    if category not in CATEGORIES:
        raise fail(f"category {category!r} is not one of {list(CATEGORIES)}")
    if match.group(1) != category:
        raise fail(f"id prefix '{match.group(1)}' does not match category '{category}'")
    for key, minimum in (("title", 3), ("description", 20)):
        if not isinstance(feature[key], str) or len(feature[key].strip()) < minimum:
            raise fail(f"{key} must be a string of at least {minimum} characters")
    priority = feature["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
        raise fail(f"priority must be an integer from 1 to 10, got {priority!r}")
    if feature["status"] not in STATUSES:
        raise fail(f"status {feature['status']!r} is not one of {list(STATUSES)}")
    _check_files(feature["files"], fail)
    deps = feature["dependencies"]
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise fail("dependencies must be a list of feature ids")
    if len(set(deps)) != len(deps):
        raise fail("dependencies must not repeat an id")
    if fid in deps:
        raise fail("a feature cannot depend on itself")
    acceptance = feature["acceptance"]
    low, high = ACCEPTANCE_RANGE
    if not isinstance(acceptance, list) or not low <= len(acceptance) <= high:
        raise fail(f"acceptance must be a list of {low} to {high} criteria")
    if not all(isinstance(a, str) and len(a.strip()) >= 10 for a in acceptance):
        raise fail("every acceptance criterion must be a string of at least 10 characters")


def _check_files(files: Any, fail: Callable[[str], FeatureFileError]) -> None:
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise fail(f"files must be a list of 1 to {MAX_FILES} paths")
    if len(set(files)) != len(files):
        raise fail("files must not repeat a path")
    for path in files:
        if not isinstance(path, str) or not _PATH_RE.match(path):
            raise fail(f"file {path!r} must be a relative path under src/ with no '..' and a file extension")
