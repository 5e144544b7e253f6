"""Reverting a landing without a work tree: the same tree `git revert` makes, conflicts named, nothing moved."""

from __future__ import annotations

from agentswarm.git.landing import Landing, landed_range, revert_onto
from tests.git.hubkit import commit, edit, git, lines, new_hub, read


def test_revert_of_a_stretch_of_main_undoes_exactly_it_on_top_of_later_work(tmp_path):
    hub, root = new_hub(tmp_path / "hub.git", {"a.txt": lines(20), "b.txt": "b\n"})
    c1 = commit(hub, root, {"a.txt": edit(lines(20), 2, "task line"), "new.txt": "added\n"})
    c2 = commit(hub, c1, {"b.txt": "b changed\n"})
    later = commit(hub, c2, {"a.txt": edit(edit(lines(20), 2, "task line"), 15, "later line"), "c.txt": "c\n"})
    assert landed_range(hub, [c1, c2]) == (root, c2)
    out = revert_onto(hub, later, root, c2, "Revert the task\n\nReverted-Task: t1")
    assert out.status is Landing.MERGED and out.tip
    assert git(hub, "rev-parse", f"{out.tip}^") == later  # one new commit on top: nothing rewritten
    assert read(hub, out.tip, "a.txt") == edit(lines(20), 15, "later line")  # the task's line gone, later kept
    assert read(hub, out.tip, "new.txt") is None and read(hub, out.tip, "b.txt") == "b\n"
    assert read(hub, out.tip, "c.txt") == "c\n"
    assert "Reverted-Task: t1" in git(hub, "log", "-1", "--format=%B", out.tip)
    assert git(hub, "rev-parse", "refs/heads/main") == root  # no ref moved


def test_a_revert_that_conflicts_with_later_work_names_the_files(tmp_path):
    hub, root = new_hub(tmp_path / "hub.git", {"a.txt": lines(5)})
    c1 = commit(hub, root, {"a.txt": edit(lines(5), 2, "task")})
    later = commit(hub, c1, {"a.txt": edit(lines(5), 2, "rewritten by a later task")})
    out = revert_onto(hub, later, root, c1, "Revert")
    assert out.status is Landing.CONFLICT and out.conflict_files == ["a.txt"] and out.tip is None


def test_nothing_left_to_revert_and_a_merge_commit_landing(tmp_path):
    hub, root = new_hub(tmp_path / "hub.git", {"a.txt": "a\n"})
    c1 = commit(hub, root, {"x.txt": "x\n"})
    undone = commit(hub, c1, {"x.txt": None})
    assert revert_onto(hub, undone, root, c1, "Revert").status is Landing.ALREADY_MERGED
    side = commit(hub, root, {"y.txt": "y\n"})
    merge = git(hub, "commit-tree", git(hub, "rev-parse", f"{side}^{{tree}}"), "-p", root, "-p", side, "-m", "merge",
                env={"GIT_AUTHOR_NAME": "q", "GIT_AUTHOR_EMAIL": "q@q", "GIT_COMMITTER_NAME": "q",
                     "GIT_COMMITTER_EMAIL": "q@q"})
    assert landed_range(hub, [side, merge]) == (root, merge)  # the branch commit is not on main's first parents
    assert landed_range(hub, [root]) is None  # reaches the root: nothing to revert to
