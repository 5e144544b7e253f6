import subprocess
from pathlib import Path

from agentswarm.reconcile.checks import checkout_main, run_checks, run_command


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_hub(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    git("init", "-q", "-b", "main", cwd=src)
    git("add", ".", cwd=src)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=src)
    hub = tmp_path / "hub.git"
    git("clone", "-q", "--bare", str(src), str(hub), cwd=tmp_path)
    return hub


def test_checkout_follows_main_and_cleans(tmp_path):
    hub = make_hub(tmp_path, {"a.txt": "one\n", "package-lock.json": "{}"})
    work = tmp_path / "work"
    sha1 = checkout_main(str(hub), work)
    (work / "junk.txt").write_text("left over")
    (work / "node_modules").mkdir()
    (work / "node_modules" / "keep").write_text("x")
    clone = tmp_path / "clone"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    (clone / "a.txt").write_text("two\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    sha2 = checkout_main(str(hub), work)
    assert sha2 != sha1 and (work / "a.txt").read_text() == "two\n"
    assert not (work / "junk.txt").exists() and (work / "node_modules" / "keep").exists()


def test_checks_report_failures_and_install_once(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "package-lock.json").write_text("v1")
    install = "mkdir -p node_modules && echo installed >> ../installs.log"
    results = run_checks(work, install, ["true", "echo 'src/x.ts(1,2): error TS2304: nope' && false"], 30)
    assert [r.ok for r in results] == [True, True, False]
    assert "TS2304" in results[-1].output
    results = run_checks(work, install, ["true"], 30)
    assert len(results) == 1  # lock file unchanged: no second install
    (work / "package-lock.json").write_text("v2")
    run_checks(work, install, [], 30)
    assert (tmp_path / "installs.log").read_text().count("installed") == 2


def test_command_killed_at_limit_with_its_children(tmp_path):
    res = run_command("sleep 60 & sleep 60", tmp_path, 1)
    assert res.timed_out and not res.ok and res.duration_s < 10


def test_output_keeps_only_the_tail(tmp_path):
    res = run_command("python3 -c \"print('x'*100000); print('THE END')\"", tmp_path, 30)
    assert res.ok and len(res.output) <= 20_000 and "THE END" in res.output


def test_secrets_not_passed_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_API_KEY", "sk-secret-123")
    res = run_command("env", tmp_path, 30)
    assert "sk-secret-123" not in res.output and "DATABASE_URL" not in res.output
