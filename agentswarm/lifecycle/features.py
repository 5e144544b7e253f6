"""The features table: FEATURES.json loaded into Postgres, and feature status kept there.

Status moves pending -> in_progress (a task was planned) -> done (a task's branch landed) or
failed (a task gave up). `done` is never taken back by a later failure or plan. A feature whose
dependency failed for good (agentswarm/planning/blocked.py) is `blocked`, naming that feature in
`blocked_by` and why in `status_reason`; any other status move clears both.

A feature that becomes done (its dependents may be ready now) or unblocked requests a planning pass
after the commit (queue/plan_requests.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from agentswarm.db.models import Feature, FeatureStatus, Task
from agentswarm.db.states import OPEN
from agentswarm.lifecycle.feature_file import FeatureFileError
from agentswarm.queue.plan_requests import request_plan_after_commit

_SPEC_FIELDS = ("category", "title", "description", "priority", "files", "dependencies", "acceptance")


def _read(source: Path | str | dict | list) -> list[dict[str, Any]]:
    if isinstance(source, str | Path):
        try:
            doc = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FeatureFileError(f"{source}: cannot read features ({exc})") from None
    else:
        doc = source
    items = doc.get("features") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise FeatureFileError("FEATURES.json must hold a 'features' array")
    return items


def _row(item: Any, n: int) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
        raise FeatureFileError(f"feature #{n} has no string 'id'")

    def strs(key: str) -> list[str]:
        value = item.get(key) or []
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    priority = item.get("priority", 5)
    return {
        "id": item["id"].strip()[:64], "category": str(item.get("category") or "general")[:32],
        "title": str(item.get("title") or item["id"]), "description": str(item.get("description") or ""),
        "priority": min(10, max(1, int(priority))) if isinstance(priority, int | float) else 5,
        "files": strs("files"), "dependencies": strs("dependencies"), "acceptance": strs("acceptance"),
    }


def sync_features(session: Session, source: Path | str | dict | list) -> int:
    """Insert new features and refresh the spec fields of known ones, keeping their status; returns the count."""
    rows = [_row(item, n) for n, item in enumerate(_read(source))]
    existing = {f.id: f for f in session.scalars(select(Feature).where(Feature.id.in_([r["id"] for r in rows])))}
    for row in rows:
        feature = existing.get(row["id"])
        if feature is None:
            feature = Feature(status=FeatureStatus.pending, **row)
            session.add(feature)
            existing[row["id"]] = feature
        else:
            for key in _SPEC_FIELDS:
                if getattr(feature, key) != row[key]:
                    setattr(feature, key, row[key])
    session.flush()
    return len(existing)


def restart_features(session: Session) -> int:
    """Every feature back to pending (its work is not in the hub any more); how many had moved from it."""
    session.flush()
    result = cast(CursorResult, session.execute(  # an UPDATE: a CursorResult, which has rowcount
        update(Feature).where(Feature.status != FeatureStatus.pending)
        .values(status=FeatureStatus.pending, blocked_by=None, status_reason=None)
        .execution_options(synchronize_session=False)))
    session.expire_all()
    return int(result.rowcount or 0)


def progress_by_category(session: Session) -> dict[str, dict[str, int]]:
    """{category: {status: count}} over all features."""
    out: dict[str, dict[str, int]] = {}
    rows = session.execute(select(Feature.category, Feature.status, func.count())
                           .group_by(Feature.category, Feature.status)).all()
    for category, status, n in rows:
        out.setdefault(category, {})[status] = n
    return dict(sorted(out.items()))


def _open_task_for(session: Session, feature_id: str) -> bool:
    return session.execute(select(func.count()).select_from(Task).where(
        Task.status.in_(OPEN), Task.feature_ids.contains([feature_id]))).scalar_one() > 0


def set_feature_status(session: Session, feature_ids: Iterable[str], status: str) -> list[str]:
    """Move features to `status`; done is final, and failed waits while another task for it is open."""
    target = FeatureStatus(status)
    ids = [f for f in dict.fromkeys(feature_ids) if f]
    if not ids:
        return []
    session.flush()
    changed = []
    for fid in ids:
        if target == FeatureStatus.failed and _open_task_for(session, fid):
            continue
        result = cast(CursorResult, session.execute(  # an UPDATE: a CursorResult, which has rowcount
            update(Feature).where(Feature.id == fid, Feature.status != FeatureStatus.done,
                                  Feature.status != target)
            .values(status=target, blocked_by=None, status_reason=None)
            .execution_options(synchronize_session=False)))
        if result.rowcount:
            changed.append(fid)
    _expire(session, changed)
    if changed and target == FeatureStatus.done:
        request_plan_after_commit(session)  # the features waiting on these may be ready now
    return changed


def _expire(session: Session, ids: Iterable[str]) -> None:
    ids = set(ids)
    for feature in session.identity_map.values():
        if isinstance(feature, Feature) and feature.id in ids:
            session.expire(feature)


def mark_features_in_progress(session: Session, feature_ids: Iterable[str]) -> list[str]:
    """A task was planned for these features."""
    return set_feature_status(session, feature_ids, FeatureStatus.in_progress)


def mark_features_done(session: Session, feature_ids: Iterable[str]) -> list[str]:
    """A task for these features landed on main."""
    return set_feature_status(session, feature_ids, FeatureStatus.done)


def mark_features_failed(session: Session, feature_ids: Iterable[str]) -> list[str]:
    """A task for these features gave up (ignored while another task for one is still open)."""
    return set_feature_status(session, feature_ids, FeatureStatus.failed)


def reopen_features(session: Session, feature_ids: Iterable[str]) -> list[str]:
    """The task that made these features done was reverted off main: they are in progress again.

    The one way back from done: landing is what done means, and a revert undoes the landing.
    """
    ids = [f for f in dict.fromkeys(feature_ids) if f]
    if not ids:
        return []
    session.flush()
    changed = list(session.scalars(update(Feature).where(Feature.id.in_(ids), Feature.status == FeatureStatus.done)
                                   .values(status=FeatureStatus.in_progress).returning(Feature.id)
                                   .execution_options(synchronize_session=False)))
    _expire(session, changed)
    return changed


def note_failed_for_good(session: Session, feature_id: str, reason: str) -> bool:
    """The feature failed for good: failed, with the reason; True if it was not noted so already."""
    session.flush()
    changed = list(session.scalars(update(Feature).where(
        Feature.id == feature_id, Feature.status != FeatureStatus.done,
        (Feature.status != FeatureStatus.failed) | Feature.status_reason.is_(None))
        .values(status=FeatureStatus.failed, blocked_by=None, status_reason=reason)
        .returning(Feature.id).execution_options(synchronize_session=False)))
    _expire(session, changed)
    return bool(changed)


def block_feature(session: Session, feature_id: str, root: str, reason: str) -> bool:
    """The feature waits on `root`, which failed for good; True if it was not blocked before."""
    session.flush()
    was = session.scalar(select(Feature.status).where(Feature.id == feature_id).with_for_update())
    if was is None or was == FeatureStatus.done:
        return False
    session.execute(update(Feature).where(Feature.id == feature_id)
                    .where((Feature.status != FeatureStatus.blocked) | Feature.blocked_by.is_distinct_from(root)
                           | Feature.status_reason.is_distinct_from(reason))
                    .values(status=FeatureStatus.blocked, blocked_by=root, status_reason=reason)
                    .execution_options(synchronize_session=False))
    _expire(session, [feature_id])
    return was != FeatureStatus.blocked


def clear_blocked(session: Session, keep: Iterable[str], keep_failed: Iterable[str]) -> list[str]:
    """Blocked features not in `keep` are pending again (returned); a failed one not in `keep_failed` loses
    its failed-for-good reason (it may be tried again)."""
    session.flush()
    unblocked = list(session.scalars(update(Feature).where(
        Feature.status == FeatureStatus.blocked, Feature.id.not_in(list(keep)))
        .values(status=FeatureStatus.pending, blocked_by=None, status_reason=None)
        .returning(Feature.id).execution_options(synchronize_session=False)))
    cleared = list(session.scalars(update(Feature).where(
        Feature.status == FeatureStatus.failed, Feature.status_reason.is_not(None),
        Feature.id.not_in(list(keep_failed))).values(status_reason=None)
        .returning(Feature.id).execution_options(synchronize_session=False)))
    _expire(session, unblocked + cleared)
    if unblocked:
        request_plan_after_commit(session)
    return sorted(unblocked)


def all_features_done(session: Session) -> bool:
    """True when there is at least one feature and every feature is done."""
    total, done = session.execute(select(
        func.count(Feature.id), func.count(Feature.id).filter(Feature.status == FeatureStatus.done))).one()
    return total > 0 and total == done
