"""The worker runner: `python -m agentswarm.agent.runner task.json result.json [--workdir DIR]`.

Checks out `swarm/<task-id>` at the task's base commit, runs the agent, commits what it left, pushes
only its own branch, and writes result.json (always, atomically) measured from git. Exit code:
0 complete, 1 failed, 2 blocked, 3 runner error. Standard library only (`requests` is imported only if the
agent's model is not on loopback: through the Bridge it is, and the LLM client then uses http.client).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from agentswarm.agent.base import Agent, AgentContext, AgentOutcome, DeadlineExceeded, Killed
from agentswarm.agent.bridge import Bridge
from agentswarm.agent.checks import CHECK_ENV, Presubmit, gate_slot
from agentswarm.agent.contract import (
    BUNDLE_NAME,
    GATE_SOCKET_ENV,
    GATE_TOKEN_ENV,
    REPO_BUNDLE_NAME,
    SCHEMA_VERSION,
    ContractError,
    GitMeasure,
    Handoff,
    TaskSpec,
    write_json_atomic,
)
from agentswarm.agent.gitwork import Git, GitError
from agentswarm.agent.registry import get_agent
from agentswarm.agent.shell import clean_env
from agentswarm.agent.transcript import Transcript
from agentswarm.scrubbing import scrub, scrub_data, secrets_from_env

log = logging.getLogger("agentswarm.runner")
EXIT_CODES = {"complete": 0, "failed": 1, "blocked": 2}
EXIT_RUNNER_ERROR = 3


class RunnerError(Exception):
    """The runner could not set the task up (bad task.json, clone or checkout failed)."""


def harvest_margin_s(timeout_s: float) -> float:
    """Time kept back from the agent for commit, push and the handoff."""
    return min(120.0, max(5.0, timeout_s * 0.1))


def without_prefix(title: str, prefix: str) -> str:
    """The title without a leading `prefix:` in any case (a fix task titled "Fix: ..." gets "fix: ..." once)."""
    rest = title
    while rest[:len(prefix) + 1].lower() == f"{prefix.lower()}:":
        rest = rest[len(prefix) + 1:].lstrip()
    return rest or title


def commit_message(spec: TaskSpec, outcome: AgentOutcome) -> str:
    """The message of the runner's commit, derived from the task (not from the agent)."""
    lines = spec.description.strip().splitlines()
    title = (spec.title or (lines[0] if lines else "") or spec.id).strip()
    head = f"{spec.kind}: {without_prefix(title, spec.kind)}"
    head = head if len(head) <= 72 else head[:69] + "..."
    body = f"Task: {spec.id}\nRun: {spec.run_id}\nAgent: {spec.agent}\nAgent status: {outcome.status}"
    if outcome.summary:
        body += "\n\n" + outcome.summary.strip()[:2000]
    return f"{head}\n\n{body}\n\nSwarm-Task: {spec.id}\n"  # the trailer the merge queue keeps on what it lands


class Runner:
    """One task from task.json to result.json; every exit path writes the handoff."""

    def __init__(self, task_path: str | Path, result_path: str | Path, workdir: str | Path | None = None,
                 *, agent: Agent | None = None) -> None:
        self.task_path = Path(task_path).resolve()
        self.result_path = Path(result_path).resolve()
        self.workdir = Path(workdir).resolve() if workdir else self.task_path.parent / "repo"
        self.agent = agent
        self.started = time.monotonic()
        self.secrets = secrets_from_env()
        self.task_id = self._peek_task_id()
        self.spec: TaskSpec | None = None
        self.ctx: AgentContext | None = None
        self.transcript = Transcript(self.result_path.parent / "transcript.jsonl", secrets=self.secrets)
        self._killed: Killed | None = None
        self.bridge: Bridge | None = None

    def _peek_task_id(self) -> str:
        try:
            return str(json.loads(self.task_path.read_text()).get("id") or "unknown")
        except (OSError, ValueError, AttributeError):
            return "unknown"

    # -- handoff -------------------------------------------------------------------------------

    def handoff(self, status: str, *, error: str | None = None, summary: str = "",
                measure: GitMeasure | None = None) -> Handoff:
        """Build the handoff from what is known now."""
        calls = list(self.ctx.llm_calls) if self.ctx else []
        text, cut = self.transcript.inline()
        # Scrubbed here, before the error is cut into a summary: a secret split by a cut could not be found.
        error = scrub(error, self.secrets) if error else error
        summary = scrub(summary, self.secrets) if summary else summary
        h = Handoff(task_id=self.task_id, status=status, summary=summary or (error or "")[:500], error=error,
                    tokens={"prompt": sum(c.prompt_tokens for c in calls),
                            "completion": sum(c.completion_tokens for c in calls)},
                    llm_calls=calls, duration_s=round(time.monotonic() - self.started, 3),
                    transcript=text, transcript_truncated=cut)
        if measure is not None:
            h.set_measure(measure)
        h.presubmit = self._presubmit_runs()
        return h

    def write(self, h: Handoff) -> None:
        """Write result.json atomically, with every secret scrubbed."""
        data = scrub_data(h.to_dict(), self.secrets)  # every string: transcript, summary, error, call errors
        write_json_atomic(str(self.result_path), json.loads(scrub(json.dumps(data), self.secrets)))

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._killed is not None:
            os._exit(EXIT_CODES["failed"])  # a second signal: the handoff is already written
        self._killed = Killed(name)
        self.transcript.add("note", event="signal", signal=name)
        # Written here, before unwinding, so that a kill during a slow cleanup still leaves a handoff.
        self.write(self.handoff("failed", error=f"killed by {name}"))
        raise self._killed

    def _on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        raise DeadlineExceeded("the task's time limit is near: agent stopped")

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> int:
        """Do the task and write result.json; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)
        try:
            h = self._run()
            code = EXIT_CODES[h.status]
        except Killed as k:
            h, code = self.handoff("failed", error=str(k)), EXIT_CODES["failed"]
        except (RunnerError, ContractError, GitError) as exc:
            h, code = self.handoff("failed", error=f"runner error: {exc}"), EXIT_RUNNER_ERROR
        except Exception as exc:  # the handoff must be written whatever went wrong
            self.transcript.add("note", event="runner_crash", traceback=traceback.format_exc())
            h, code = self.handoff("failed", error=f"runner error: {type(exc).__name__}: {exc}"), EXIT_RUNNER_ERROR
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        self.transcript.add("outcome", status=h.status, error=h.error, commits=len(h.commits))
        self.transcript.close()
        h.transcript, h.transcript_truncated = self.transcript.inline()
        self.write(h)
        return code

    def _run(self) -> Handoff:
        spec = self.spec = TaskSpec.load(str(self.task_path))
        self.task_id = spec.id
        branch = f"swarm/{spec.id}"
        if spec.branch and spec.branch != branch:
            raise RunnerError(f"task.branch must be {branch!r}, got {spec.branch!r}: a worker pushes only its own branch")
        deadline = self.started + spec.limits.timeout_s
        git = Git(self.workdir, token=os.environ.get("GIT_TOKEN") or None,
                  scratch=self.result_path.parent, timeout_s=max(10.0, min(300.0, spec.limits.timeout_s / 2)))
        if not (self.workdir / ".git").exists():
            given = self.result_path.parent / REPO_BUNDLE_NAME  # a remote sandbox gets the hub as a bundle
            git.clone(str(given) if spec.delivery == "bundle" and given.is_file() else spec.repo_url)
        git.reset_config(spec.repo_url)  # the committer, and nothing a prepared or cloned config carried
        base = git.checkout_branch(branch, spec.base_sha)
        self.transcript.add("note", event="checkout", branch=branch, base=base, agent=spec.agent)

        agent_deadline = deadline - harvest_margin_s(spec.limits.timeout_s)
        api_key = os.environ.get("LLM_API_KEY") or None
        gate = os.environ.get(GATE_SOCKET_ENV)
        if gate:  # no network here: the model is reached through the orchestrator's gate
            self.bridge = Bridge(gate).start()
            # Plain http on loopback: the built-in agent's LLMClient picks its http.client transport for it.
            spec.llm.base_url, api_key = self.bridge.url, os.environ.get(GATE_TOKEN_ENV) or None
            self.transcript.add("note", event="llm_gate", via="unix socket")
        presubmit = None
        if spec.presubmit:
            slot = functools.partial(gate_slot, gate, os.environ.get(GATE_TOKEN_ENV) or "",
                                     max(1.0, agent_deadline - time.monotonic())) if gate else None
            presubmit = Presubmit(self.workdir, base, spec.presubmit, env=clean_env(CHECK_ENV), slot=slot)
        self.ctx = AgentContext(spec=spec, repo=self.workdir, deadline=agent_deadline, transcript=self.transcript,
                                api_key=api_key, work_dir=self.result_path.parent, presubmit=presubmit)
        outcome = self._run_agent(self.ctx, agent_deadline)
        self.transcript.add("note", event="agent_done", status=outcome.status, error=outcome.error)
        return self._harvest(git, spec, base, branch, outcome)

    def _run_agent(self, ctx: AgentContext, agent_deadline: float) -> AgentOutcome:
        remaining = agent_deadline - time.monotonic()
        if remaining <= 0:
            return AgentOutcome("failed", error="no time left for the agent after the checkout")
        signal.setitimer(signal.ITIMER_REAL, remaining)
        try:
            agent = self.agent or get_agent(ctx.spec.agent)
            return agent.run(ctx)
        except DeadlineExceeded:
            return AgentOutcome("failed", error=f"timed out: the agent did not finish within "
                                f"{ctx.spec.limits.timeout_s}s (less {harvest_margin_s(ctx.spec.limits.timeout_s):g}s "
                                "kept for commit and push)")
        except Exception as exc:
            self.transcript.add("note", event="agent_crash", traceback=traceback.format_exc())
            return AgentOutcome("failed", error=f"agent crashed: {type(exc).__name__}: {exc}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _harvest(self, git: Git, spec: TaskSpec, base: str, branch: str, outcome: AgentOutcome) -> Handoff:
        git.reset_config(spec.repo_url)
        git.commit_all(commit_message(spec, outcome), read_head=False)
        commits, head = git.history(base)  # the new commit's sha too: no rev-parse
        if commits is None:
            return self.handoff("failed", summary=outcome.summary,
                                error=f"the agent rewrote history: base {base[:12]} is not an ancestor of HEAD {head[:12]}")
        # A bundle is measured by the orchestrator as it takes it in (work/drive.py), which replaces every
        # measured field of this handoff: its files and lines are not counted here twice.
        measure = git.measure(base, head, commits, numstat=spec.delivery != "bundle")
        status, error = outcome.status, outcome.error
        if status == "complete" and not measure.commits:
            status, error = "blocked", "the agent reported complete but left no changes on its branch"
        if status == "complete" and self.ctx is not None and self.ctx.presubmit is not None:
            check = self.ctx.presubmit.check()  # the committed tree: a tree the agent already checked is not rerun
            self.transcript.add("note", event="presubmit", ok=check.ok, unavailable=check.unavailable,
                                tree=check.tree, final=True)
            if not check.ok and not check.unavailable:
                status, error = "failed", check.feedback()
        if measure.commits and spec.delivery == "bundle":
            bundle = self.result_path.parent / BUNDLE_NAME
            git("bundle", "create", str(bundle), f"refs/heads/{branch}", f"^{base}")
            self.transcript.add("note", event="bundle", branch=branch, head=measure.head_sha)
        elif measure.commits:
            try:
                how = git.push_branch(branch)
                self.transcript.add("note", event="push", branch=branch, head=measure.head_sha, how=how)
            except GitError as exc:
                return self.handoff("failed", summary=outcome.summary, measure=measure, error=f"push failed: {exc}")
        return self.handoff(status, summary=outcome.summary, error=error, measure=measure)

    def _presubmit_runs(self) -> list[dict]:
        pre = self.ctx.presubmit if self.ctx else None
        return [r.to_dict() for r in pre.runs] if pre else []


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m agentswarm.agent.runner", description=__doc__.split("\n")[0])
    parser.add_argument("task", help="path to task.json")
    parser.add_argument("result", help="path to write result.json")
    parser.add_argument("--workdir", help="the repository checkout (default: repo/ beside task.json)")
    parser.add_argument("--version", action="version", version=f"agentswarm runner (task.json schema "
                        f"{SCHEMA_VERSION}, Python {sys.version.split()[0]})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s runner %(levelname)s %(message)s")
    runner = Runner(args.task, args.result, args.workdir)
    code = runner.run()
    log.info("task %s: exit %d", runner.task_id, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
