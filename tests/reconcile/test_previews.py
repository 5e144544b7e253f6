"""The preview store: a sandbox's dist/ is copied out only when it is plain files under plain names within the caps;
kept previews are replaced whole and pruned to the newest few."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentswarm.reconcile.previews import (
    MAX_DEPTH,
    PreviewRefused,
    keep_preview,
    list_previews,
    preview_files,
    stage_dist,
)

MB = 1 << 20


def workdir(tmp_path: Path, files: dict[str, bytes] | None = None) -> Path:
    work = tmp_path / "work"
    dist = work / "repo" / "dist"
    dist.mkdir(parents=True)
    for rel, data in (files or {"index.html": b"<!doctype html>", "assets/a.js": b"1"}).items():
        (dist / rel).parent.mkdir(parents=True, exist_ok=True)
        (dist / rel).write_bytes(data)
    return work


def refused(work: Path, root: Path, **caps) -> str:
    with pytest.raises(PreviewRefused) as exc:
        stage_dist(work, "repo/dist", root, max_bytes=caps.pop("max_bytes", MB), **caps)
    assert not [p for p in root.iterdir()], "a refused copy leaves nothing behind"
    return str(exc.value)


def test_a_build_is_copied_and_kept_with_its_manifest(tmp_path):
    root = tmp_path / "previews"
    staged = stage_dist(workdir(tmp_path), "repo/dist", root, max_bytes=MB)
    sha = "1" * 40
    manifest = keep_preview(root, sha, staged, keep=3)
    assert manifest["sha"] == sha and manifest["files"] == 2 and manifest["bytes"] == len(b"<!doctype html>") + 1
    dist = preview_files(root, sha)
    assert dist is not None and (dist / "assets" / "a.js").read_bytes() == b"1"
    assert not staged.exists() and [m["sha"] for m in list_previews(root, None)] == [sha]


def test_a_link_anywhere_refuses_the_build(tmp_path):
    work = workdir(tmp_path)
    dist = work / "repo" / "dist"
    (dist / "assets" / "passwd").symlink_to("/etc/passwd")
    root = tmp_path / "previews"
    assert "assets/passwd is a symbolic link" in refused(work, root)
    (dist / "assets" / "passwd").unlink()
    (dist / "etc").symlink_to("/etc", target_is_directory=True)
    assert "dist/etc is a symbolic link" in refused(work, root)
    (dist / "etc").unlink()
    os.mkfifo(dist / "pipe")  # would block a reader that does not open it non-blocking
    assert "pipe is not a regular file" in refused(work, root)


def test_dist_itself_a_link_out_is_refused(tmp_path):
    work = tmp_path / "work"
    (work / "repo").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.html").write_text("secret")
    (work / "repo" / "dist").symlink_to(outside)
    assert "not a directory of the checkout" in refused(work, tmp_path / "previews")
    with pytest.raises(ValueError):
        stage_dist(work, "repo/../..", tmp_path / "previews", max_bytes=MB)


@pytest.mark.parametrize("name", ["..x", ".env", "a b.js", "x\\y.js", "ümlaut.js", "a\nb"])
def test_odd_names_are_refused(tmp_path, name):
    work = workdir(tmp_path)
    (work / "repo" / "dist" / name).write_bytes(b"x")
    assert "not a plain file name" in refused(work, tmp_path / "previews")


def test_caps_on_bytes_files_and_depth(tmp_path):
    work = workdir(tmp_path)
    dist = work / "repo" / "dist"
    with open(dist / "huge.bin", "wb") as f:  # sparse: 3 GB that take no disk
        f.truncate(3 << 30)
    root = tmp_path / "previews"
    started = time.monotonic()
    assert "larger than a preview may be" in refused(work, root, max_bytes=2 * MB)
    assert time.monotonic() - started < 5  # stops at the cap, does not read the rest
    (dist / "huge.bin").unlink()
    for i in range(6):
        (dist / f"f{i}.js").write_bytes(b"x")
    assert "more files than" in refused(work, root, max_files=5)
    deep = dist.joinpath(*["d"] * (MAX_DEPTH + 2))
    deep.mkdir(parents=True)
    assert "nested deeper than" in refused(work, root)


def test_a_preview_is_replaced_whole_and_only_the_newest_are_kept(tmp_path):
    root = tmp_path / "previews"
    shas = [f"{i:x}" * 40 for i in range(1, 5)]
    for sha in shas:
        keep_preview(root, sha, stage_dist(workdir(tmp_path / sha), "repo/dist", root, max_bytes=MB), keep=2)
    assert [m["sha"] for m in list_previews(root, None)] == shas[:1:-1]
    assert preview_files(root, shas[0]) is None and sorted(p.name for p in root.iterdir()) == sorted(shas[2:])
    again = stage_dist(workdir(tmp_path / "again", {"index.html": b"new"}), "repo/dist", root, max_bytes=MB)
    keep_preview(root, shas[2], again, keep=2)
    dist = preview_files(root, shas[2])
    assert dist is not None and (dist / "index.html").read_bytes() == b"new" and not (dist / "assets").exists()
    assert list_previews(root, 1)[0]["sha"] == shas[2]
    with pytest.raises(ValueError):
        keep_preview(root, "../x", again, keep=2)
    assert preview_files(root, "../../etc") is None
