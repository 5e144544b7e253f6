"""The reconciler's build and test commands (the checkout of main is tested in tests/git/test_checkout.py)."""

from agentswarm.reconcile.checks import run_checks, run_command


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
