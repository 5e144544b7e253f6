"""The sandbox path's cost per attempt: CPU of the whole process tree, git processes and Python starts.

Runs `--attempts` real attempts of the work stage one after another (`work_on` with the local
backend, bubblewrap isolation, the LLM gate, the built-in agent, the simulator as the model in a
process of its own, GATE off so no presubmit) on a hub made from target-repo/ with `--branches`
swarm branches already in it, and prints one JSON line: CPU-seconds per attempt of the whole process
tree (sandboxes, runners, git, this process; the model's process is not counted) from a cpuacct
cgroup when the machine lets the bench make one (root, cgroup v1), else from getrusage (which misses
what bubblewrap's PID namespace reaps itself, most of a sandbox); this process's own share; wall time
per attempt; and, from a second pass under `strace -f -e trace=execve`, git processes and Python
starts per attempt.

    .venv/bin/python bench/sandbox_path.py [--attempts 20] [--branches 200]
    .venv/bin/python bench/sandbox_path.py --against <sha> [--rounds 2]   # the other revision too, alternated

With `--against`, the other revision is checked out into a temporary worktree and this same script
runs on it (PYTHONPATH pointing there, so its sandboxes, runner and git helpers are measured).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# beside this script (not `bench.`: with --against, PYTHONPATH is the other checkout)
from cgroup_cpu import CpuGroup

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARK = "agentswarm-bench-mark"


def _fresh_db(name: str) -> str:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop_db(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def _own() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _cpu() -> float:
    """This process and every child it has reaped (bubblewrap's inner processes are not all among them)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _mark(what: str) -> None:
    """An execve the strace pass can find: where the attempts begin and end."""
    subprocess.run(["/bin/true", MARK, what], check=False)


def _model(port: int, tmp: Path) -> subprocess.Popen:
    """The simulator behind the fake LLM, in a process of its own so its CPU is not the sandbox path's."""
    log = open(tmp / "model.log", "wb")  # noqa: SIM115 - kept open for the process's life
    proc = subprocess.Popen([sys.executable, "-m", "agentswarm.demo.fake_llm", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SIM_FAULTS": ""})
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the fake LLM did not start")


def _preload(hub: Path, base: str, branches: int) -> None:
    """`branches` swarm branches in the hub, each one commit on main (what a running swarm's hub holds)."""
    from agentswarm.git.repo import open_repo

    repo = open_repo(hub)
    tree = repo.out("rev-parse", f"{base}^{{tree}}")
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    lines = []
    for i in range(branches):
        sha = repo.run("commit-tree", tree, "-p", base, "-m", f"preloaded {i}", env=env).stdout.decode().strip()
        lines.append(f"create refs/heads/swarm/preload-{i:04d} {sha}\n")
    repo.run("update-ref", "--stdin", input="".join(lines).encode())


def run_attempts(attempts: int, branches: int, tmp: Path) -> dict:
    """Set up a run and time `attempts` attempts of the work stage, one after another."""
    from agentswarm.ops.swarm import free_port

    db_name = f"agentswarm_bench_sandbox_{os.getpid()}"
    url = _fresh_db(db_name)
    port = free_port()
    model = _model(port, tmp)
    group = CpuGroup()  # made after the model started: the model's CPU stays outside it
    os.environ.update(DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/14", GATE="off", SIM_FAULTS="")
    try:
        from agentswarm.config import load_settings
        from agentswarm.db.migrate import upgrade
        from agentswarm.db.models import Task
        from agentswarm.db.session import session_scope
        from agentswarm.git.hub import create_hub, main_sha
        from agentswarm.lifecycle.runs import start_run
        from agentswarm.work.stage import work_on

        upgrade(url)
        hub = tmp / "hub.git"
        base = create_hub(hub, ROOT / "target-repo")
        _preload(hub, base, branches)
        settings = load_settings(database_url=url, hub_path=hub, sandbox_root=tmp / "sandboxes",
                                 llm_base_url=f"http://127.0.0.1:{port}", llm_api_key="sk-bench",
                                 worker_timeout=120, heartbeat_interval_s=5.0, max_workers=4)
        with session_scope(url) as s:
            run_id = start_run(s, settings).id
        ids = []
        with session_scope(url) as s:
            for i in range(attempts):
                t = Task(run_id=run_id, title=f"write src/gen/m{i}.ts", description=f"Create src/gen/m{i}.ts.",
                         scope=[f"src/gen/m{i}.ts"], branch="x", base_sha=main_sha(hub), kind="manual")
                s.add(t)
                s.flush()
                t.branch = f"swarm/{t.id}"
                ids.append(t.id)
        work_on(ids[0], settings)  # warm-up: imports, connections, bwrap's first start
        cpu, wall, outcomes = [], [], []
        tree0, own0 = group.usage_s(), _own()
        _mark("begin")
        for tid in ids[1:]:
            c0, w0 = _cpu(), time.monotonic()
            outcomes.append(work_on(tid, settings))
            cpu.append(_cpu() - c0)
            wall.append(time.monotonic() - w0)
        _mark("end")
        tree1, own1 = group.usage_s(), _own()
        with session_scope(url) as s:
            states = [s.get(Task, tid).status.value for tid in ids[1:]]  # type: ignore[union-attr]
    finally:
        model.terminate()
        model.wait()
        from agentswarm.db.session import get_engine

        get_engine(url).dispose()
        _drop_db(db_name)
        group.release()
    n = len(cpu)
    tree = round((tree1 - tree0) / n, 4) if tree0 is not None and tree1 is not None else None
    return {"attempts": n, "complete": states.count("complete"), "outcomes": sorted(set(outcomes)),
            "cpu_s_per_attempt": tree if tree is not None else round(statistics.mean(cpu), 4),
            "cpu_measured_by": "cgroup" if tree is not None else "rusage",
            "cpu_s_orchestrator_process": round((own1 - own0) / n, 4), "cpu_s_rusage": round(statistics.mean(cpu), 4),
            "wall_s_per_attempt": round(statistics.mean(wall), 3), "wall_s_p50": round(statistics.median(wall), 3)}


def count_processes(trace: Path, attempts: int) -> dict:
    """git processes and Python starts per attempt, from an strace -f execve trace between the marks."""
    inside, git, python, other = False, 0, 0, {}  # type: ignore[var-annotated]
    for line in trace.read_text(errors="replace").splitlines():
        if "execve(" not in line or "= -1" in line or "resumed>" in line and "execve(" not in line:
            continue
        if MARK in line:
            inside = "begin" in line
            continue
        if not inside:
            continue
        prog = os.path.basename(line.split('execve("', 1)[1].split('"', 1)[0])
        if prog == "git" or prog.startswith("git-"):
            git += 1
        elif prog.startswith("python"):
            python += 1
        else:
            other[prog] = other.get(prog, 0) + 1
    n = max(1, attempts)
    return {"git_per_attempt": round(git / n, 2), "python_starts_per_attempt": round(python / n, 2),
            "other_execs_per_attempt": {k: round(v / n, 2) for k, v in sorted(other.items())}}


def measure(checkout: Path, attempts: int, branches: int) -> dict:
    """One timed pass and one counting pass (under strace) of `checkout`'s code; its figures."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    me = [sys.executable, str(Path(__file__).resolve()), "--one", "--attempts", str(attempts),
          "--branches", str(branches)]
    timed = subprocess.run(me, cwd=checkout, env=env, capture_output=True, text=True)
    if timed.returncode != 0:
        raise SystemExit(f"the timed pass failed:\n{timed.stderr[-3000:]}")
    figures = json.loads(timed.stdout.strip().splitlines()[-1])
    if shutil.which("strace"):
        with tempfile.TemporaryDirectory(prefix="agentswarm-bench-trace-") as tmp:
            trace = Path(tmp) / "trace"
            counted = min(attempts, 6)
            proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", str(trace),
                                   *me[:3], "--attempts", str(counted), "--branches", str(branches)],
                                  cwd=checkout, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"the counting pass failed:\n{proc.stderr[-3000:]}")
            figures.update(count_processes(trace, counted - 1))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attempts", type=int, default=20, help="attempts per pass (the first is a warm-up, not counted)")
    p.add_argument("--branches", type=int, default=200, help="swarm branches in the hub before the first attempt")
    p.add_argument("--against", help="another revision to measure the same way, alternated with this checkout")
    p.add_argument("--rounds", type=int, default=1, help="passes of each side with --against")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one pass in this process
    args = p.parse_args(argv)
    if args.one:
        work = Path(tempfile.mkdtemp(prefix="agentswarm-bench-sandbox-"))
        try:
            print(json.dumps(run_attempts(args.attempts, args.branches, work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out: dict = {"bench": "sandbox_path", "attempts": args.attempts - 1, "branches": args.branches,
                 "cores": os.cpu_count(), "after": {"rev": head, "runs": []}}
    if not args.against:
        out["after"]["runs"].append(measure(ROOT, args.attempts, args.branches))
        print(json.dumps(out))
        return 0
    with tempfile.TemporaryDirectory(prefix="agentswarm-bench-against-") as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), args.against], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            out["before"] = {"rev": args.against, "runs": []}
            for r in range(args.rounds):
                order = [("before", other), ("after", ROOT)]
                for side, checkout in order if r % 2 == 0 else order[::-1]:
                    out[side]["runs"].append(measure(checkout, args.attempts, args.branches))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, capture_output=True)
    for side in ("before", "after"):
        runs = out[side]["runs"]
        for key in ("cpu_s_per_attempt", "cpu_s_orchestrator_process", "wall_s_per_attempt"):
            out[side][key] = round(statistics.median(r[key] for r in runs), 4)
        for key in ("git_per_attempt", "python_starts_per_attempt"):
            out[side][key] = runs[0].get(key)
    out["cpu_change"] = round(out["after"]["cpu_s_per_attempt"] / out["before"]["cpu_s_per_attempt"] - 1, 4)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
