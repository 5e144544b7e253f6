"""Work in and out of a sandbox as bundles: what the hub accepts from an untrusted one, and what it refuses."""

from __future__ import annotations

import pytest

from agentswarm.git.intake import bundle_of_branches, clone_for_sandbox, import_bundle, measure
from agentswarm.git.repo import GitError
from tests.git.hubkit import branch, git, lines, new_hub


@pytest.fixture
def hub(tmp_path):
    return new_hub(tmp_path / "hub.git", {"a.txt": lines(5), "b.txt": lines(5)})


def _bundle(hub, tmp_path, name: str, *revs: str):
    path = tmp_path / f"{name}.bundle"
    git(hub, "bundle", "create", str(path), *revs)
    return path


def test_a_branch_comes_in_and_is_measured_from_the_hub(hub, tmp_path):
    path, root = hub
    head = branch(path, "swarm/t1", root, {"a.txt": "changed\n"}, {"c.txt": "new\n"})[-1]
    bundle = _bundle(path, tmp_path, "ok", "refs/heads/swarm/t1", f"^{root}")
    git(path, "update-ref", "-d", "refs/heads/swarm/t1")  # as if it only ever existed in the sandbox
    assert import_bundle(path, bundle, "swarm/t1", root) == head
    m = measure(path, root, head)
    assert len(m.commits) == 2 and m.files_changed == ["a.txt", "c.txt"] and m.head_sha == head


def test_bundles_that_carry_other_refs_or_other_history_are_refused(hub, tmp_path):
    path, root = hub
    mine = branch(path, "swarm/mine", root, {"a.txt": "mine\n"})[-1]
    branch(path, "swarm/other", root, {"b.txt": "other\n"})
    unrelated = git(path, "commit-tree", git(path, "mktree", input=b""), "-m", "orphan")
    git(path, "update-ref", "refs/heads/swarm/orphan", unrelated)
    cases = {
        "two refs": (_bundle(path, tmp_path, "two", "refs/heads/swarm/mine", "refs/heads/swarm/other", f"^{root}"),
                     "exactly refs/heads/swarm/mine"),
        "someone else's branch": (_bundle(path, tmp_path, "else", "refs/heads/swarm/other", f"^{root}"),
                                  "exactly refs/heads/swarm/mine"),
        "unrelated history": (_bundle(path, tmp_path, "orphan", "refs/heads/swarm/orphan"), "exactly"),
    }
    for _what, (bundle, message) in cases.items():
        with pytest.raises(GitError, match=message):
            import_bundle(path, bundle, "swarm/mine", root)
    assert git(path, "rev-parse", "refs/heads/swarm/mine") == mine  # nothing moved
    (tmp_path / "junk.bundle").write_bytes(b"# v2 git bundle\nnot really\n")
    with pytest.raises(GitError, match="does not apply"):
        import_bundle(path, tmp_path / "junk.bundle", "swarm/mine", root)


def test_a_bundle_must_descend_from_the_tasks_base(hub, tmp_path):
    path, root = hub
    later = branch(path, "swarm/base2", root, {"b.txt": "later base\n"})[-1]
    branch(path, "swarm/x", root, {"a.txt": "from the old base\n"})
    bundle = _bundle(path, tmp_path, "x", "refs/heads/swarm/x", f"^{root}")
    with pytest.raises(GitError, match="does not descend"):
        import_bundle(path, bundle, "swarm/x", later)


def test_the_hub_goes_out_as_a_bundle_and_as_a_shared_clone(hub, tmp_path):
    path, root = hub
    branch(path, "swarm/open", root, {"a.txt": "open\n"})
    out = bundle_of_branches(path, tmp_path / "repo.bundle")
    heads = git(path, "bundle", "list-heads", str(out))
    assert "refs/heads/main" in heads and "refs/heads/swarm/open" in heads
    clone_for_sandbox(path, tmp_path / "clone")
    alternates = (tmp_path / "clone" / ".git" / "objects" / "info" / "alternates").read_text()
    assert str(path) in alternates  # objects borrowed, never copied or hard-linked


def test_preparing_from_a_hub_that_is_not_there_is_a_git_error(tmp_path):
    with pytest.raises(GitError, match="cannot prepare"):
        clone_for_sandbox(tmp_path / "nowhere.git", tmp_path / "clone")
