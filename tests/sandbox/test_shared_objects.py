"""A local sandbox's repository borrows the hub's objects: the sandbox reads them and writes none of the hub."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentswarm.git.hub import create_hub
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig


def _snapshot(hub: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(hub)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in hub.rglob("*") if p.is_file()}


@pytest.mark.bwrap
def test_the_hubs_objects_are_read_only_to_the_sandbox_that_borrows_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "src").mkdir(parents=True)
    (src / "src" / "index.ts").write_text("export const answer = 41;\n")
    hub = (tmp_path / "hub.git").resolve()
    base = create_hub(hub, src)
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    backend.prepare_repo(sb, str(hub))
    before = _snapshot(hub)
    objects = f"{hub}/objects"
    script = f"""
cd repo && git checkout -q -B swarm/t1 {base} && echo checked-out
echo more >> src/index.ts && git add -A && git -c user.name=a -c user.email=b commit -qm x && echo committed
touch {objects}/planted 2>/dev/null && echo HUB-WRITTEN
for f in $(find {objects} -type f); do (: > "$f") 2>/dev/null && echo HUB-TRUNCATED; rm -f "$f" 2>/dev/null; done
rm -rf {objects}/info 2>/dev/null; mv {objects} {hub}/gone 2>/dev/null && echo HUB-MOVED
git repack -a -d -q; git prune; git gc -q --prune=now; echo housekept
ls -A {hub}
cat {hub}/config 2>&1 | head -1
ls {hub}/hooks 2>&1 | head -1
"""
    res = backend.exec(sb, ["sh", "-c", script], timeout_s=60)
    lines = res.stdout.splitlines()
    assert lines[:2] == ["checked-out", "committed"], (res.stdout, res.stderr)
    assert "HUB-WRITTEN" not in lines and "HUB-TRUNCATED" not in lines and "HUB-MOVED" not in lines
    assert lines[2:4] == ["housekept", "objects"]  # of the hub only its objects are there, and they stay
    assert "No such file" in lines[4] and "No such file" in lines[5]  # no config, no hooks
    assert _snapshot(hub) == before
    fsck = subprocess.run(["git", f"--git-dir={hub}", "fsck", "--no-dangling"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    backend.terminate(sb)


@pytest.mark.bwrap
def test_the_runners_commit_writes_only_new_objects_not_copies_of_the_hubs(tmp_path: Path) -> None:
    """git cannot freshen the hub's read-only objects, so every file it re-adds is written again as a private
    copy; right after a checkout every file looks changed to `add --all`. The runner stages what changed."""
    src = tmp_path / "src"
    (src / "src").mkdir(parents=True)
    for i in range(30):
        (src / "src" / f"m{i}.ts").write_text(f"export const m{i} = {i};\n" * 50)
    hub = (tmp_path / "hub.git").resolve()
    base = create_hub(hub, src)
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={})
    backend.prepare_repo(sb, str(hub))
    program = ("import pathlib; from agentswarm.agent.gitwork import Git\n"
               "g = Git('repo'); g.reset_config('hub'); g.checkout_branch('swarm/t1', " + repr(base) + ")\n"
               "pathlib.Path('repo/src/m3.ts').write_text('changed\\n'); pathlib.Path('repo/new.ts').write_text('new\\n')\n"
               "head = g.commit_all('work'); print(head)\n"
               "print(len(g.out('rev-list', '--objects', '" + base + "..' + head).split('\\n')))\n"
               "print(sum(1 for p in pathlib.Path('repo/.git/objects').glob('??/*')))\n")
    res = backend.exec(sb, ["python", "-c", program], timeout_s=60)
    assert res.exit_code == 0, res.stderr
    head, new, written = res.stdout.split()
    assert int(new) == 5 and int(written) == int(new)  # two blobs, two trees, a commit: nothing copied
    assert subprocess.run(["git", f"--git-dir={hub}", "cat-file", "-e", head], capture_output=True).returncode != 0
    backend.terminate(sb)
