"""External agent drivers: run any agent CLI on the task, with the LLM settings in its environment.

TaskSpec.agent selects one: "mini-swe-agent", "pi", or "cmd:<shell command template>". The runner then
harvests the commits and changes the agent left, exactly as for the built-in agent. While a preset's CLI
runs, its own record (Pi's event stream, mini-swe-agent's trajectory) is turned into the built-in agent's
transcript steps as it grows (agent/external_steps), so the live view shows its steps as they happen.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentswarm.agent.base import AgentContext, AgentOutcome, RunnerInterrupt, load_agents_md
from agentswarm.agent.builtin import presubmit_failure
from agentswarm.agent.contract import LLMCallRecord, TaskSpec
from agentswarm.agent.external_steps import MiniSteps, PiSteps, StepSource, StepWatch
from agentswarm.agent.install import mini_bin, pi_bin, tools_dir
from agentswarm.agent.llmproxy import LLMProxy
from agentswarm.agent.shell import HeadTail, clean_env, run_capped

OUTPUT_CAP = 64 * 1024


@dataclass
class Launch:
    """What a driver prepared for one run: where the prompt is, the LLM endpoint, the scratch directory."""

    ctx: AgentContext
    prompt_file: Path
    task_file: Path
    scratch: Path
    base_url: str  # with /v1
    status_file: Path


@dataclass
class Preset:
    """A ready driver for one agent CLI: how to start it, extra environment, how to read its ending and its steps."""

    name: str
    argv: Callable[[Launch], list[str]]
    env: Callable[[Launch], dict[str, str]] = lambda _launch: {}
    outcome: Callable[[Launch, int | None, str], AgentOutcome | None] = lambda _l, _c, _o: None
    steps: Callable[[Launch], StepSource] | None = None  # made before each start of the CLI


def render_external_prompt(spec: TaskSpec, agents_md: str) -> str:
    """The task as one prompt for an agent CLI that brings its own tools."""
    task = {k: v for k, v in spec.to_dict().items()
            if k in ("id", "title", "description", "scope", "acceptance", "kind", "context") and v}
    return (
        "You are a coding agent in AgentSwarm, working on one task in the git repository in the current directory.\n\n"
        f"<task>\n{json.dumps(task, indent=2, ensure_ascii=False)}\n</task>\n\n"
        "Rules:\n"
        f"- Change only the files in the scope: {', '.join(spec.scope) or '(none given: as few as you can)'}.\n"
        "- Meet every acceptance criterion and run the checks that prove it.\n"
        "- Do not push, switch branches or rewrite history; committing is optional: the runner commits what you leave.\n"
        "- Nobody will answer questions: decide and act.\n\n"
        f"The repository's own instructions (AGENTS.md):\n\n{agents_md}\n"
    )


class ExternalAgent:
    """Runs an agent CLI (a preset or a shell template) in the repository, with a time limit."""

    def __init__(self, preset: Preset) -> None:
        self.preset = preset

    def run(self, ctx: AgentContext) -> AgentOutcome:
        """Start the CLI behind an LLM proxy, wait for it (or the deadline) and report; a "complete" whose
        branch fails presubmit starts it again with the failure in its prompt (up to the spec's rounds)."""
        scratch = Path(tempfile.mkdtemp(prefix=f"agent-{self.preset.name}-", dir=ctx.work_dir))
        prompt = render_external_prompt(ctx.spec, load_agents_md(ctx.repo))
        prompt_file, task_file, status_file = scratch / "prompt.md", scratch / "task.json", scratch / "status.json"
        prompt_file.write_text(prompt)
        task_file.write_text(json.dumps(ctx.spec.to_dict(), indent=2))
        ctx.transcript.add("user", content=prompt, agent=self.preset.name)

        def record(call: LLMCallRecord) -> None:
            ctx.llm_calls.append(call)
            ctx.transcript.add("llm_call", prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                               latency_ms=call.latency_ms, ok=call.ok, error=call.error)

        with LLMProxy(ctx.spec.llm.base_url, ctx.api_key, on_call=record, timeout_s=ctx.spec.llm.timeout_s) as proxy:
            launch = Launch(ctx, prompt_file, task_file, scratch, proxy.base_url, status_file)
            outcome = self._once(launch, proxy.token)
            rounds = ctx.presubmit.spec.max_rounds if ctx.presubmit else 0  # an unchanged tree is not re-counted
            while outcome.status == "complete" and rounds > 0 and (failed := presubmit_failure(ctx)):
                rounds -= 1
                prompt_file.write_text(prompt + presubmit_section(failed))
                status_file.unlink(missing_ok=True)
                ctx.transcript.add("user", content=failed, agent=self.preset.name, presubmit_feedback=True)
                outcome = self._once(launch, proxy.token)
        return outcome

    def _once(self, launch: Launch, token: str) -> AgentOutcome:
        """One start of the CLI on the current prompt file, and what its ending says."""
        ctx = launch.ctx
        env = clean_env({
            "OPENAI_API_BASE": launch.base_url, "OPENAI_BASE_URL": launch.base_url, "OPENAI_API_KEY": token,
            "OPENAI_MODEL": ctx.spec.llm.model, "AGENTSWARM_MODEL": ctx.spec.llm.model,
            "AGENTSWARM_PROMPT_FILE": str(launch.prompt_file), "AGENTSWARM_TASK_FILE": str(launch.task_file),
            "AGENTSWARM_STATUS_FILE": str(launch.status_file), "AGENTSWARM_MAX_STEPS": str(ctx.spec.limits.max_steps),
            "AGENTSWARM_TIMEOUT_S": str(int(ctx.remaining_s())), "GIT_TERMINAL_PROMPT": "0", "CI": "1",
        } | self.preset.env(launch))
        argv = self.preset.argv(launch)
        ctx.transcript.add("note", event="external_start", agent=self.preset.name, argv=argv[:1])
        buf = HeadTail(OUTPUT_CAP)
        watch = StepWatch(self.preset.steps(launch) if self.preset.steps else None, ctx.transcript, self.preset.name)
        try:
            res = run_capped(argv, cwd=str(ctx.repo), timeout_s=ctx.remaining_s(), env=env, buf=buf, watch=watch)
        except RunnerInterrupt as stop:
            watch.finish()
            ctx.transcript.add("tool", name=self.preset.name, interrupted=str(stop), result=buf.text())
            raise
        watch.finish()
        ctx.transcript.add("tool", name=self.preset.name, exit_code=res.exit_code, timed_out=res.timed_out,
                           duration_s=res.duration_s, result=res.output)
        if res.timed_out:
            return AgentOutcome("failed", error=f"{self.preset.name} did not end within its time limit",
                                steps=len(ctx.llm_calls))
        told = _status_file(launch.status_file)
        if told is not None:
            return told
        said = self.preset.outcome(launch, res.exit_code, res.output)
        if said is not None:
            return said
        if res.exit_code != 0:
            return AgentOutcome("failed", error=f"{self.preset.name} exited {res.exit_code}: {res.output[-1500:]}",
                                steps=len(ctx.llm_calls))
        return AgentOutcome("complete", summary=res.output.strip()[-2000:], steps=len(ctx.llm_calls))


def presubmit_section(feedback: str) -> str:
    """What the prompt gains when the agent's branch failed the gate's checks: the failure, and what to do."""
    return ("\n<presubmit_failure>\n" + feedback + "\n</presubmit_failure>\n\n"
            "You already worked on this task, and your changes are in the repository, but the branch fails the "
            "gate's checks shown above. Fix the cause (do not weaken types or delete tests), then stop.\n")


def _status_file(path: Path) -> AgentOutcome | None:
    """An agent may write {"status", "summary"} to $AGENTSWARM_STATUS_FILE to say blocked or failed."""
    try:
        data = json.loads(path.read_text())
        return AgentOutcome(str(data["status"]), summary=str(data.get("summary", ""))[:4000])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- presets -------------------------------------------------------------------------------------


def cmd_preset(template: str) -> Preset:
    """`cmd:<template>`: a shell command; {prompt_file} {task_file} {model} {base_url} {repo} {max_steps}
    {timeout_s} {status_file} are replaced (shell-quoted), and the same values are in the environment."""
    if not template.strip():
        raise ValueError("agent 'cmd:' needs a shell command template after the colon")

    def argv(launch: Launch) -> list[str]:
        values = {"prompt_file": launch.prompt_file, "task_file": launch.task_file, "model": launch.ctx.spec.llm.model,
                  "base_url": launch.base_url, "repo": launch.ctx.repo, "status_file": launch.status_file,
                  "max_steps": launch.ctx.spec.limits.max_steps, "timeout_s": int(launch.ctx.remaining_s())}
        # Only the known names are replaced, so a template may hold other braces (JSON, ${VAR}).
        pattern = re.compile(r"\{(" + "|".join(values) + r")\}")
        command = pattern.sub(lambda m: shlex.quote(str(values[m.group(1)])), template)
        return ["/bin/sh", "-c", command]

    return Preset("cmd", argv)


def _find(env_name: str, program: str, cached: Path, hint: str) -> str:
    for candidate in (os.environ.get(env_name), str(cached), shutil.which(program)):
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError(f"{program} is not installed (looked in ${env_name}, {cached}, PATH): {hint}")


def find_mini() -> str:
    """The `mini` executable: $AGENTSWARM_MINI_BIN, the tools cache, or the PATH."""
    return _find("AGENTSWARM_MINI_BIN", "mini", mini_bin(tools_dir()), "`agentswarm agents install`")


def find_pi() -> str:
    """The `pi` executable: $AGENTSWARM_PI_BIN, the tools cache, or the PATH."""
    return _find("AGENTSWARM_PI_BIN", "pi", pi_bin(tools_dir()), "`agentswarm agents install`")


def _mini_argv(launch: Launch) -> list[str]:
    spec = launch.ctx.spec
    # JSON is YAML; mini reads config files by their .yaml suffix. The task goes here, not on argv.
    config = {
        "run": {"task": launch.prompt_file.read_text()},
        "agent": {"step_limit": spec.limits.max_steps, "cost_limit": 0,
                  "wall_time_limit_seconds": max(1, int(launch.ctx.remaining_s()))},
        "model": {"model_name": f"openai/{spec.llm.model}", "cost_tracking": "ignore_errors",
                  "model_kwargs": {"api_base": launch.base_url, "temperature": spec.llm.temperature,
                                   "max_tokens": spec.llm.max_tokens}},
        "environment": {"cwd": str(launch.ctx.repo), "timeout": 120},
    }
    cfg = launch.scratch / "agentswarm-mini.yaml"
    cfg.write_text(json.dumps(config, indent=2))
    return [find_mini(), "--agent-class", "default", "--exit-immediately", "-c", "mini.yaml", "-c", str(cfg),
            "-o", str(launch.scratch / "trajectory.json")]


def _mini_env(launch: Launch) -> dict[str, str]:
    return {"MSWEA_CONFIGURED": "true", "MSWEA_SILENT_STARTUP": "1", "MSWEA_COST_TRACKING": "ignore_errors",
            "MSWEA_GLOBAL_CONFIG_DIR": str(launch.scratch / "mini-config"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_COLOR": "1", "TERM": "dumb"}


def _mini_steps(launch: Launch) -> StepSource:
    """The trajectory's steps; a trajectory left by an earlier start is removed first (it is not this one's)."""
    path = launch.scratch / "trajectory.json"
    path.unlink(missing_ok=True)
    return MiniSteps(path)


def _mini_outcome(launch: Launch, code: int | None, output: str) -> AgentOutcome | None:
    try:
        info = json.loads((launch.scratch / "trajectory.json").read_text())["info"]
    except (OSError, ValueError, KeyError):
        return None
    exit_status = info.get("exit_status", "")
    if exit_status == "Submitted":
        return AgentOutcome("complete", summary=(info.get("submission") or "mini-swe-agent submitted").strip()[:4000])
    return AgentOutcome("failed", error=f"mini-swe-agent ended with {exit_status or 'no exit status'} (exit {code})")


def _pi_env(launch: Launch) -> dict[str, str]:
    agent_dir = launch.scratch / "pi-agent"
    agent_dir.mkdir(exist_ok=True)
    spec = launch.ctx.spec
    models = {"providers": {"agentswarm": {
        "baseUrl": launch.base_url, "api": "openai-completions", "apiKey": "OPENAI_API_KEY",
        "models": [{"id": spec.llm.model, "maxTokens": spec.llm.max_tokens}]}}}
    (agent_dir / "models.json").write_text(json.dumps(models, indent=2))
    return {"PI_CODING_AGENT_DIR": str(agent_dir), "NO_COLOR": "1", "TERM": "dumb"}


def _pi_argv(launch: Launch) -> list[str]:
    # Offline and without discovery: no update check, extensions, skills or themes from the sandbox's home.
    return [find_pi(), "--print", "--mode", "json", "--no-session", "--offline", "--no-extensions", "--no-skills",
            "--no-prompt-templates", "--no-themes", "--no-context-files", "--tools", "read,bash,edit,write",
            "--provider", "agentswarm", "--model", launch.ctx.spec.llm.model,
            f"@{launch.prompt_file}", "Do the task described above, then stop."]


def _pi_outcome(launch: Launch, code: int | None, output: str) -> AgentOutcome | None:
    """From Pi's JSON event stream (--mode json): its last assistant message is the summary, or the error."""
    for line in reversed(output.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        messages = event.get("messages") if isinstance(event, dict) else None
        last = next((m for m in reversed(messages or []) if isinstance(m, dict) and m.get("role") == "assistant"),
                    None)
        if last is None:
            continue
        if last.get("stopReason") in ("error", "aborted"):
            return AgentOutcome("failed", error=f"pi stopped: {str(last.get('errorMessage') or last['stopReason'])[:1500]}",
                                steps=len(launch.ctx.llm_calls))
        text = "\n".join(str(p.get("text", "")) for p in last.get("content") or []
                         if isinstance(p, dict) and p.get("type") == "text").strip()
        if code == 0:
            return AgentOutcome("complete", summary=(text or "pi finished")[:4000], steps=len(launch.ctx.llm_calls))
        return None
    return None


PRESETS: dict[str, Preset] = {
    "mini-swe-agent": Preset("mini-swe-agent", _mini_argv, _mini_env, _mini_outcome, _mini_steps),
    "pi": Preset("pi", _pi_argv, _pi_env, _pi_outcome, lambda _launch: PiSteps()),
}


def external_agent(name: str) -> ExternalAgent:
    """The driver for TaskSpec.agent: a preset name or cmd:<template>; ValueError for anything else."""
    if name.startswith("cmd:"):
        return ExternalAgent(cmd_preset(name[4:]))
    if name in PRESETS:
        return ExternalAgent(PRESETS[name])
    raise ValueError(f"unknown agent {name!r}: use builtin, {', '.join(PRESETS)}, or cmd:<shell command template>")
