"""land_branch on real bare hubs: the three strategies, conflicts, no-ops, lost races, bad input."""

from __future__ import annotations

import subprocess

import pytest

from agentswarm.git import landing, refs
from agentswarm.git import repo as gitrepo
from agentswarm.git.landing import (
    MergeStrategy,
    branch_changes,
    delete_branch,
    land_branch,
    list_conflicting_files,
)
from agentswarm.git.repo import GitVersionError
from tests.git.hubkit import branch, commit, edit, git, lines, new_hub, read, rev_list, set_ref

ALL = list(MergeStrategy)
BASE = {"a.txt": lines(20, "a"), "b.txt": lines(20, "b"), "c.txt": lines(20, "c")}


@pytest.fixture
def hub(tmp_path):
    return new_hub(tmp_path / "hub.git", BASE)


def main_of(hub) -> str:
    return git(hub, "rev-parse", "refs/heads/main")


def advance_main(hub, files, message="main moves") -> str:
    """Another branch lands first (test setup)."""
    sha = commit(hub, main_of(hub), files, message=message)
    set_ref(hub, "main", sha)
    return sha


def test_fast_forward_moves_main_to_the_branch_when_main_is_its_base(hub):
    path, root = hub
    shas = branch(path, "swarm/t1", root, {"a.txt": edit(BASE["a.txt"], 1, "A1")}, {"new.txt": "n\n"})
    r = land_branch(path, "swarm/t1", MergeStrategy.FAST_FORWARD)
    assert (r.status, r.main_before, r.main_after, r.commits_landed) == ("merged", root, shas[-1], shas)
    assert main_of(path) == shas[-1] and r.error is None and r.duration_ms > 0


@pytest.mark.parametrize("strategy", [MergeStrategy.FAST_FORWARD, MergeStrategy.REBASE])
def test_diverged_branch_is_rebased_linearly_keeping_authors_messages_and_every_commit(hub, strategy):
    path, root = hub
    other = advance_main(path, {"c.txt": edit(BASE["c.txt"], 9, "C9")})
    a1 = edit(BASE["a.txt"], 3, "first")
    c1 = commit(path, root, {"a.txt": a1}, "feat: one\n\nwhy it matters\n", ("Ada", "ada@x"), "1600000000 +0200")
    # the 2nd commit rewrites the line the 1st wrote: merging it against the fork point would conflict
    c2 = commit(path, c1, {"a.txt": edit(a1, 3, "second")}, "feat: two\n", ("Bob", "bob@x"), "1600000500 -0700")
    c3 = commit(path, c2, {"b.txt": None}, "chore: drop b\n", ("Cy", "cy@x"), "1600000900 +0000")
    set_ref(path, "swarm/t2", c3)
    r = land_branch(path, "swarm/t2", strategy)
    assert r.status == "merged", r.error
    assert r.main_before == other and len(r.commits_landed) == 3
    assert rev_list(path, "--reverse", f"{other}..main") == r.commits_landed == [*r.commits_landed]
    assert rev_list(path, "--merges", "main") == []
    fmt = "%an|%ae|%ad|%B|%cn"
    got = [git(path, "log", "-1", f"--format={fmt}", "--date=raw", c) for c in r.commits_landed]
    want = [git(path, "log", "-1", f"--format={fmt}", "--date=raw", c) for c in (c1, c2, c3)]
    # the same authors, dates and messages, each with the task's trailer added by the queue
    assert [g.rsplit("|", 1)[0] for g in got] == [
        w.rsplit("|", 1)[0].rstrip("\n") + "\n\nSwarm-Task: t2\n" for w in want]
    assert {g.rsplit("|", 1)[1] for g in got} == {landing.DEFAULT_COMMITTER[0]}
    assert read(path, "main", "a.txt") == edit(a1, 3, "second")
    assert read(path, "main", "c.txt") == edit(BASE["c.txt"], 9, "C9") and read(path, "main", "b.txt") is None


def test_rebase_fast_forwards_a_linear_branch_on_main_and_never_makes_merge_commits(hub):
    path, root = hub
    shas = branch(path, "swarm/t3", root, {"a.txt": "x\n"})
    r = land_branch(path, "swarm/t3", "rebase")
    assert r.status == "merged" and main_of(path) == shas[0]
    side = commit(path, root, {"b.txt": "side\n"})
    merge = git(path, "commit-tree", git(path, "rev-parse", f"{side}^{{tree}}"), "-p", shas[0], "-p", side,
                "-m", "agent merged something")
    set_ref(path, "swarm/t4", commit(path, merge, {"c.txt": "after merge\n"}))
    r = land_branch(path, "swarm/t4", "rebase")
    assert r.status == "merged" and rev_list(path, "--merges", "main") == []  # the agent's merge is flattened
    assert read(path, "main", "c.txt") == "after merge\n"


def test_merge_commit_makes_exactly_one_merge_per_branch_even_when_fast_forward_is_possible(hub):
    path, root = hub
    first = branch(path, "swarm/m1", root, {"a.txt": edit(BASE["a.txt"], 0, "m1")})
    r1 = land_branch(path, "swarm/m1", "merge-commit", message="Land m1")
    assert r1.status == "merged" and r1.main_after != first[-1]
    assert git(path, "log", "-1", "--format=%P|%s|%an", "main") == f"{root} {first[-1]}|Land m1|AgentSwarm Merge Queue"
    second = branch(path, "swarm/m2", root, {"b.txt": edit(BASE["b.txt"], 0, "m2")}, {"c.txt": "m2\n"})
    r2 = land_branch(path, "swarm/m2", "merge-commit")
    assert r2.status == "merged" and r2.commits_landed == [*second, r2.main_after]
    assert git(path, "log", "-1", "--format=%s", "main") == "Merge branch 'swarm/m2'"
    assert len(rev_list(path, "--merges", "main")) == 2
    assert rev_list(path, "--first-parent", "main") == [r2.main_after, r1.main_after, root]


@pytest.mark.parametrize("strategy", ALL)
def test_conflict_names_the_files_and_leaves_main_alone(hub, strategy):
    path, root = hub
    advance_main(path, {"a.txt": edit(BASE["a.txt"], 5, "main"), "b.txt": None, "c.txt": "main c\n"})
    before = main_of(path)
    branch(path, "swarm/c1", root, {"a.txt": edit(BASE["a.txt"], 5, "branch"), "b.txt": "kept b\n"},
           {"c.txt": edit(BASE["c.txt"], 19, "tail")})
    assert list_conflicting_files(path, "swarm/c1") == ["a.txt", "b.txt", "c.txt"]
    r = land_branch(path, "swarm/c1", strategy)
    assert r.status == "conflict" and r.main_after is None and main_of(path) == before
    expected = ["a.txt", "b.txt"] if strategy is not MergeStrategy.MERGE_COMMIT else ["a.txt", "b.txt", "c.txt"]
    assert r.conflict_files == expected and r.main_before == before and "conflict" in r.error


@pytest.mark.parametrize("strategy", ALL)
def test_landing_twice_is_a_no_op(hub, strategy):
    path, root = hub
    advance_main(path, {"c.txt": "moved\n"})
    branch(path, "swarm/n1", root, {"a.txt": "n1\n"}, {"b.txt": "n1\n"})
    first = land_branch(path, "swarm/n1", strategy)
    assert first.status == "merged"
    again = land_branch(path, "swarm/n1", strategy)
    assert (again.status, again.main_before, again.main_after) == ("already_merged", first.main_after,
                                                                    first.main_after)
    assert main_of(path) == first.main_after and again.commits_landed == []


def test_a_branch_contained_in_main_or_whose_change_is_already_there_is_already_merged(hub):
    path, root = hub
    set_ref(path, "swarm/old", root)
    assert land_branch(path, "swarm/old", "fast-forward").status == "already_merged"
    advance_main(path, {"a.txt": "same change\n"})
    before = main_of(path)
    branch(path, "swarm/dup", root, {"a.txt": "same change\n"})  # e.g. re-landed after a crash
    for strategy in ALL:
        r = land_branch(path, "swarm/dup", strategy)
        assert r.status == "already_merged" and main_of(path) == before


def test_lost_race_is_retried_from_the_new_main(hub, monkeypatch):
    path, root = hub
    branch(path, "swarm/mine", root, {"a.txt": edit(BASE["a.txt"], 1, "mine")})
    branch(path, "swarm/theirs", root, {"b.txt": edit(BASE["b.txt"], 1, "theirs")})
    real_cas, calls = refs.update_ref_cas, []

    def cas_after_someone_else_lands(repo, ref, new, old):
        if not calls:  # another merger moves main between our read and our update
            calls.append(None)
            calls[0] = land_branch(path, "swarm/theirs", "rebase")
        return real_cas(repo, ref, new, old)

    monkeypatch.setattr(refs, "update_ref_cas", cas_after_someone_else_lands)
    r = land_branch(path, "swarm/mine", "rebase")
    assert calls[0].status == "merged" and r.status == "merged"
    assert r.main_before == calls[0].main_after and main_of(path) == r.main_after
    assert rev_list(path, "main") == [r.main_after, calls[0].main_after, root]
    assert read(path, "main", "a.txt") == edit(BASE["a.txt"], 1, "mine")
    assert read(path, "main", "b.txt") == edit(BASE["b.txt"], 1, "theirs")


def test_main_that_keeps_moving_gives_failed_after_bounded_retries(hub, monkeypatch):
    path, root = hub
    branch(path, "swarm/slow", root, {"a.txt": "slow\n"})
    real_cas, moves = refs.update_ref_cas, []

    def always_beaten(repo, ref, new, old):
        moves.append(advance_main(path, {f"other{len(moves)}.txt": "x\n"}))
        return real_cas(repo, ref, new, old)

    monkeypatch.setattr(refs, "update_ref_cas", always_beaten)
    r = land_branch(path, "swarm/slow", "merge-commit")
    assert r.status == "failed" and len(moves) == landing.MAX_CAS_ATTEMPTS
    assert "moved during each of" in r.error and r.main_after is None and r.main_before == root
    assert main_of(path) == moves[-1] and read(path, "main", "a.txt") == BASE["a.txt"]


def test_stale_read_of_main_cannot_move_main_backwards(hub, monkeypatch):
    path, root = hub
    newer = advance_main(path, {"c.txt": "newer\n"})
    branch(path, "swarm/s", root, {"a.txt": "s\n"})
    real, stale = refs.rev_parse_many, [True]

    def reader(repo, revs):
        out = real(repo, revs)
        if stale.pop() if stale else False:
            out["refs/heads/main"] = root  # a value read before `newer` landed
        return out

    monkeypatch.setattr(refs, "rev_parse_many", reader)
    r = land_branch(path, "swarm/s", "fast-forward")
    assert r.status == "merged" and r.main_before == newer
    assert refs.is_ancestor(path, newer, main_of(path)) and read(path, "main", "c.txt") == "newer\n"


def test_bad_input_fails_with_a_clear_error(tmp_path, hub):
    path, _ = hub
    r = land_branch(path, "swarm/missing", "rebase")
    assert r.status == "failed" and "unknown branch 'swarm/missing'" in r.error and r.main_before
    for bad in ("-x", "swarm/a..b", "swarm/with space", ""):
        r = land_branch(path, bad, "rebase")
        assert r.status == "failed" and "branch name" in r.error
    outer = tmp_path / "outer"
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    (outer / "sub").mkdir()  # inside a repository, but not one itself: must not fall through
    r = land_branch(outer / "sub", "swarm/x", "rebase")
    assert r.status == "failed" and "is not a git repository" in r.error
    assert "no such directory" in land_branch(tmp_path / "nope", "swarm/x", "rebase").error
    empty = gitrepo.init_bare(tmp_path / "empty.git")
    assert "refs/heads/main does not exist" in land_branch(empty, "swarm/x", "rebase").error
    with pytest.raises(ValueError, match="unknown merge strategy 'squash'"):
        land_branch(path, "swarm/x", "squash")


def test_old_git_is_refused_once_with_a_clear_message(hub, monkeypatch):
    path, _ = hub
    gitrepo.require_git.cache_clear()
    monkeypatch.setattr(gitrepo, "git_version", lambda: (2, 37, 1))
    try:
        with pytest.raises(GitVersionError, match=r"git 2\.37\.1 is too old.*>= 2\.38"):
            land_branch(path, "swarm/x", "rebase")
    finally:
        gitrepo.require_git.cache_clear()


def test_delete_branch_is_compare_and_swap(hub):
    path, root = hub
    tip = branch(path, "swarm/d", root, {"a.txt": "d\n"})[-1]
    assert delete_branch(path, "swarm/d", expected_sha=root) is False
    assert refs.rev_parse(path, "refs/heads/swarm/d") == tip
    assert delete_branch(path, "swarm/d", expected_sha=tip) is True
    assert refs.rev_parse(path, "refs/heads/swarm/d") is None
    assert delete_branch(path, "swarm/d") is False


def test_branch_changes_gives_what_a_conflict_task_needs(hub):
    path, root = hub
    advance_main(path, {"a.txt": edit(BASE["a.txt"], 2, "main")})
    shas = branch(path, "swarm/k", root, {"a.txt": edit(BASE["a.txt"], 2, "k"), "new/x.py": "x\n"}, {"b.txt": None})
    info = branch_changes(path, "swarm/k")
    assert (info.merge_base, info.head, info.commits) == (root, shas[-1], shas)
    assert info.files == ["a.txt", "b.txt", "new/x.py"] and info.conflict_files == ["a.txt"]
    assert refs.list_branches(path) == {"refs/heads/swarm/k": shas[-1]}
    assert refs.changed_files(path, root, shas[0]) == ["a.txt", "new/x.py"]


@pytest.mark.parametrize("strategy", ALL)
def test_a_pinned_head_lands_exactly_that_commit_whatever_the_branch_points_at_now(hub, strategy):
    path, root = hub
    recorded = branch(path, "swarm/p1", root, {"a.txt": edit(BASE["a.txt"], 2, "mine")})[-1]
    # Someone (another agent) force-pushes the branch after the handoff recorded its head.
    set_ref(path, "swarm/p1", commit(path, root, {"b.txt": "hijacked\n"}, message="not the task's work"))
    r = land_branch(path, "swarm/p1", strategy, head=recorded)
    assert r.status == "merged", r.error
    assert read(path, "main", "a.txt") == edit(BASE["a.txt"], 2, "mine")
    assert read(path, "main", "b.txt") == BASE["b.txt"]  # the hijacked tip never reached main


def test_a_pinned_head_must_be_a_commit_of_the_hub(hub):
    path, root = hub
    branch(path, "swarm/p2", root, {"a.txt": "x\n"})
    missing = land_branch(path, "swarm/p2", "rebase", head="0123456789abcdef0123456789abcdef01234567")
    assert missing.status == "failed" and "is not in" in missing.error and main_of(path) == root
    for bad in ("--all", "main", "HEAD~1", ""):
        r = land_branch(path, "swarm/p2", "rebase", head=bad)
        assert r.status == "failed" and "not a commit id" in r.error, bad
    assert main_of(path) == root
