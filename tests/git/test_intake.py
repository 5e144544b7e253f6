"""Work in and out of a sandbox as bundles: what the hub accepts from an untrusted one, and what it refuses."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from agentswarm.agent.gitwork import Git as RunnerGit
from agentswarm.agent.gitwork import GitError as RunnerGitError
from agentswarm.git.hub import create_hub
from agentswarm.git.intake import (
    bundle_heads,
    bundle_of_branches,
    clone_for_sandbox,
    import_bundle,
    measure,
    take_in,
)
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
    clone = tmp_path / "clone"
    clone_for_sandbox(path, clone)
    alternates = (clone / ".git" / "objects" / "info" / "alternates").read_text()
    assert alternates == f"{path.resolve() / 'objects'}\n"
    # objects borrowed, never copied or hard-linked; what `clone --shared --no-checkout` leaves, as git reads it
    assert [p.name for p in (clone / ".git" / "objects").rglob("*") if p.is_file()] == ["alternates"]
    assert git(clone / ".git", "rev-parse", "HEAD", "main", "origin/main", "origin/HEAD").split() == [root] * 4
    assert git(clone / ".git", "rev-parse", "origin/swarm/open") == git(path, "rev-parse", "swarm/open")
    assert git(clone / ".git", "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(clone / ".git", "config", "branch.main.remote") == "origin"
    assert git(clone / ".git", "fsck", "--connectivity-only", "--no-dangling") == ""
    assert not (clone / ".git" / "index").exists() and sorted(p.name for p in clone.iterdir()) == [".git"]


def test_a_failed_read_of_the_hub_is_retried_within_the_attempt(hub, tmp_path):
    path, root = hub
    packed = path / "packed-refs"
    good = packed.read_bytes() if packed.exists() else b""
    packed.write_bytes(b"this is not a packed-refs file\n")  # what a torn read would look like: git refuses it
    threading.Timer(0.15, packed.write_bytes, args=(good,)).start()
    clone_for_sandbox(path, tmp_path / "clone")
    assert git(tmp_path / "clone" / ".git", "rev-parse", "origin/main") == root
    packed.write_bytes(b"still not a packed-refs file\n")
    with pytest.raises(GitError, match="cannot prepare"):  # a hub that stays unreadable fails, after the retries
        clone_for_sandbox(path, tmp_path / "clone2")
    packed.write_bytes(good)


def test_take_in_is_import_and_measure_in_one_and_reads_v3_bundles(hub, tmp_path):
    path, root = hub
    head = branch(path, "swarm/t3", root, {"a.txt": "one\n"}, {"b.txt": None, "d.txt": "new\n"})[-1]
    bundle = tmp_path / "v3.bundle"
    git(path, "bundle", "create", "--version=3", str(bundle), "refs/heads/swarm/t3", f"^{root}")
    assert bundle_heads(bundle) == [(head, "refs/heads/swarm/t3")]
    git(path, "update-ref", "-d", "refs/heads/swarm/t3")
    found = take_in(path, bundle, "swarm/t3", root)
    assert found == measure(path, root, head) and found.head_sha == head and len(found.commits) == 2
    assert found.files_changed == ["a.txt", "b.txt", "d.txt"]
    orphan = git(path, "commit-tree", git(path, "mktree", input=b""), "-m", "orphan")
    git(path, "update-ref", "refs/heads/swarm/o", orphan)
    with pytest.raises(GitError, match="does not descend"):  # no common history at all
        take_in(path, _bundle(path, tmp_path, "o", "refs/heads/swarm/o"), "swarm/o", root)


def test_preparing_from_a_hub_that_is_not_there_is_a_git_error(tmp_path):
    with pytest.raises(GitError, match="cannot prepare"):
        clone_for_sandbox(tmp_path / "nowhere.git", tmp_path / "clone")


def _work_clone(hub: Path, dest: Path) -> Path:
    """A writer's own clone of the hub (through upload-pack), with an identity."""
    subprocess.run(["git", "clone", "-q", "--no-local", str(hub), str(dest)], check=True, capture_output=True)
    for key, value in (("user.name", "Writer"), ("user.email", "writer@x")):
        subprocess.run(["git", "-C", str(dest), "config", key, value], check=True)
    return dest


def _commit_files(work: Path, tag: str, n: int) -> None:
    for i in range(n):
        (work / f"{tag}-{i}.txt").write_text(os.urandom(1500).hex())
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", tag], check=True)


@pytest.mark.slow  # 20-40 s of racing threads: `make test-slow`
def test_repositories_are_prepared_and_cloned_while_many_pushes_and_imports_land_in_the_hub(tmp_path):
    """The hub's objects change under every clone: pushes (each in a tmp_objdir-incoming quarantine) and
    bundle imports (each a new pack). No sandbox repository and no runner clone may fail because of it."""
    src = tmp_path / "src"
    (src / "src").mkdir(parents=True)
    for i in range(150):  # enough objects that a copying clone is still copying when a push lands
        (src / "src" / f"m{i}.ts").write_text(f"export const m{i} = {i};\n" * 40)
    hub = tmp_path / "hub.git"
    base = create_hub(hub, src)
    stop, errors, done = threading.Event(), [], []

    def pusher(k: int) -> None:
        work = _work_clone(hub, tmp_path / f"push{k}")
        for j in itertools.count():
            if stop.is_set():
                return
            _commit_files(work, f"p{k}-{j}", 25)
            push = subprocess.run(["git", "-C", str(work), "push", "-q", "origin", f"HEAD:refs/heads/swarm/p{k}-{j}"],
                                  capture_output=True, text=True)
            if push.returncode:
                errors.append(f"push: {push.stderr.strip()}")

    def importer(k: int) -> None:
        work = _work_clone(hub, tmp_path / f"imp{k}")
        for j in itertools.count():
            if stop.is_set():
                return
            subprocess.run(["git", "-C", str(work), "checkout", "-q", "-B", f"swarm/i{k}-{j}", base], check=True)
            _commit_files(work, f"i{k}-{j}", 10)
            bundle = tmp_path / f"i{k}-{j}.bundle"
            subprocess.run(["git", "-C", str(work), "bundle", "create", "-q", str(bundle), f"refs/heads/swarm/i{k}-{j}",
                            f"^{base}"], check=True)
            try:
                import_bundle(hub, bundle, f"swarm/i{k}-{j}", base)
            except GitError as exc:
                errors.append(f"import: {exc}")

    def preparer(k: int) -> None:
        for j in range(6):
            shared, cloned = tmp_path / f"sb{k}-{j}", tmp_path / f"run{k}-{j}" / "repo"
            try:
                clone_for_sandbox(hub, shared)  # the orchestrator's, for a local sandbox
                RunnerGit(shared).checkout_branch("swarm/x", base)
                runner = RunnerGit(cloned, timeout_s=120)
                runner.clone(str(hub))  # the runner's own, for a sandbox given the hub's path
                done.append(runner.out("rev-parse", "origin/main"))
            except (GitError, RunnerGitError, AssertionError) as exc:
                errors.append(f"clone: {exc}")
            shutil.rmtree(shared, ignore_errors=True)
            shutil.rmtree(cloned.parent, ignore_errors=True)

    writers = [threading.Thread(target=pusher, args=(k,)) for k in range(4)]
    writers += [threading.Thread(target=importer, args=(k,)) for k in range(2)]
    readers = [threading.Thread(target=preparer, args=(k,)) for k in range(6)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join(timeout=240)
    stop.set()
    for t in writers:
        t.join(timeout=60)
    pushed = git(hub, "for-each-ref", "--format=%(refname)", "refs/heads/swarm/").split()
    assert errors == [], errors[:5]
    assert len(done) == 36 and set(done) == {base}
    assert len(pushed) >= 12  # the writers really wrote while the clones ran
