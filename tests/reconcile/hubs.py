"""A small hub built with plain git for the reconciler's tests."""

import subprocess
from pathlib import Path


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_hub(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    return hub_from(src, tmp_path)


def hub_from(src: Path, tmp_path: Path, message: str = "init") -> Path:
    """tmp_path/hub.git: a bare hub whose main is one commit of the files in src."""
    git("init", "-q", "-b", "main", cwd=src)
    git("add", ".", cwd=src)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=src)
    hub = tmp_path / "hub.git"
    git("clone", "-q", "--bare", str(src), str(hub), cwd=tmp_path)
    return hub


def main_of(hub: Path) -> str:
    """The commit the hub's main points at."""
    return git("--git-dir", str(hub), "rev-parse", "main", cwd=hub.parent)


def push_commits(tmp_path: Path, hub: Path, contents: list[dict[str, str | None]]) -> list[str]:
    """One commit on main per dict (path -> text, None deletes), pushed; their shas, oldest first."""
    clone = tmp_path / "clone"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    shas = []
    for i, files in enumerate(contents):
        for path, text in files.items():
            if text is None:
                (clone / path).unlink()
            else:
                (clone / path).write_text(text)
        git("add", "-A", ".", cwd=clone)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{i}", "--allow-empty", cwd=clone)
        shas.append(git("rev-parse", "HEAD", cwd=clone))
    git("push", "-q", "origin", "main", cwd=clone)
    return shas
