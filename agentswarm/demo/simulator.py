"""The swarm simulator: a stateless stand-in for the model that answers each AgentSwarm role plausibly.

It reads the role from the first line of the system message and its inputs from the tagged sections
the prompts define (<features>, <in_flight>, <task>, <build_output>, <open_fixes>), so its answers
follow the same contracts a real model is asked for. Deterministic: the same request, the same reply.
Given fault rates (SIM_FAULTS, see sim_faults), the worker also breaks some branches the way models do.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentswarm.demo.sim_external import is_external_worker, work_external
from agentswarm.demo.sim_faults import FIXED_TRAILER, PAIR_TRAILER, PRESUBMIT_FAILED, TRAILER, worker_fault
from agentswarm.demo.sim_files import (
    ENTRY_PATHS,
    entry_add_command,
    fault_snippet,
    fault_target,
    file_content,
    pair_key,
    shared_add_command,
    shared_undo_command,
)

ROLES = {
    "# AgentSwarm root planner": "root-planner",
    "# AgentSwarm subplanner": "subplanner",
    "# AgentSwarm worker": "worker",
    "# AgentSwarm reconciler": "reconciler",
}
DONE_STATUSES = {"done", "complete", "completed", "passing", "merged"}
BUSY_STATUSES = {"in_progress", "in-progress", "in_flight", "running", "assigned"}
MAX_WORKER_WRITES = 4
MAX_WORKER_TURNS = 8
_TSC = re.compile(r"^\s*([\w./@-]+\.(?:tsx?|mts|cts|jsx?|mjs))(?:\((\d+),(\d+)\)|:(\d+):(\d+))\s*[:-]\s*error (TS\d+): (.+)$")
_VITEST = re.compile(r"^\s*(?:FAIL|×|✗)\s+([\w./@-]+\.(?:test|spec)\.(?:tsx?|jsx?|mjs))")


def role_of(body: dict) -> str | None:
    """The AgentSwarm role named by the first line of the system message, or None."""
    for m in body.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "system" and isinstance(m.get("content"), str):
            return ROLES.get(m["content"].strip().splitlines()[0].strip() if m["content"].strip() else "")
    return None


def tag(body: dict, name: str) -> str | None:
    """Text of the last <name>...</name> section, searching the newest message first."""
    open_t, close_t = f"<{name}>", f"</{name}>"
    for m in reversed(body.get("messages") or []):
        text = m.get("content") if isinstance(m, dict) else None
        if not isinstance(text, str):
            continue
        end = text.rfind(close_t)
        start = text.rfind(open_t, 0, end) if end >= 0 else -1
        if start >= 0:
            return text[start + len(open_t):end].strip()
    return None


def _json_tag(body: dict, name: str, default: Any) -> Any:
    text = tag(body, name)
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"simulator: <{name}> does not hold valid JSON ({exc.msg})") from None


def _limit(body: dict, noun: str, default: int) -> int:
    pattern = re.compile(rf"at most (\d+) {noun} in this answer")
    for m in body.get("messages") or []:
        found = pattern.search(m.get("content") or "") if isinstance(m, dict) and isinstance(m.get("content"), str) else None
        if found:
            return int(found.group(1))
    return default


def _answer(tasks: list[dict], thought: str) -> dict:
    return {"content": json.dumps(tasks, indent=2), "tool_calls": [], "reasoning": thought}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "feature"


def _deps(feature: dict) -> list[str]:
    for key in ("dependencies", "depends_on", "deps"):
        if isinstance(feature.get(key), list):
            return [str(d) for d in feature[key]]
    return []


def _clamp_priority(value: Any) -> int:
    try:
        return min(10, max(1, int(value)))
    except (TypeError, ValueError):
        return 5


def plan_root(body: dict) -> dict:
    """Root planner: one small task per ready feature, disjoint scopes, nothing already in flight."""
    raw = _json_tag(body, "features", [])
    features = raw.get("features", []) if isinstance(raw, dict) else raw
    if not isinstance(features, list):
        raise ValueError("simulator: <features> must hold a JSON array (or {'features': [...]})")
    in_flight = _json_tag(body, "in_flight", [])
    busy_ids = {str(f) for t in in_flight if isinstance(t, dict) for f in t.get("feature_ids") or []}
    busy_paths = {str(p) for t in in_flight if isinstance(t, dict) for p in t.get("scope") or []}
    status = {str(f.get("id")): str(f.get("status", "pending")).lower() for f in features if isinstance(f, dict)}
    max_tasks = _limit(body, "tasks", 5)
    ready = [
        f for f in features
        if isinstance(f, dict) and f.get("id") is not None
        and status[str(f["id"])] not in DONE_STATUSES | BUSY_STATUSES
        and str(f["id"]) not in busy_ids
        and all(status.get(d, "done") in DONE_STATUSES for d in _deps(f))
    ]
    ready.sort(key=lambda f: _clamp_priority(f.get("priority", 5)))
    tasks: list[dict] = []
    for f in ready:
        if len(tasks) >= max_tasks:
            break
        name = str(f.get("title") or f.get("name") or f["id"])
        scope = [str(p) for p in f.get("files") or []] or [f"src/{_slug(str(f.get('category', 'features')))}/{_slug(name)}.ts"]
        if busy_paths & set(scope):
            continue  # another agent is editing these files; a parallel task would only conflict
        busy_paths |= set(scope)
        acceptance = f.get("acceptance") or f.get("acceptance_criteria") or []
        acceptance = [acceptance] if isinstance(acceptance, str) else [str(a) for a in acceptance]
        tasks.append({
            "title": f"Implement {name}",
            "description": str(f.get("description") or f"Implement the feature '{name}' in {', '.join(scope)}."),
            "scope": scope,
            "acceptance": acceptance or [f"`npx tsc --noEmit` passes with {scope[0]} present"],
            "priority": _clamp_priority(f.get("priority", 5)),
            "feature_ids": [str(f["id"])],
            "kind": "feature",
        })
    thought = f"{len(ready)} features are ready and not in flight; planning {len(tasks)} (limit {max_tasks})."
    return _answer(tasks, thought)


def plan_sub(body: dict) -> dict:
    """Subplanner: leave tasks of <= 3 paths whole; split bigger scopes into disjoint children."""
    task = _json_tag(body, "task", None)
    if not isinstance(task, dict):
        raise ValueError("simulator: the subplanner request has no <task> JSON object")
    scope = [str(p) for p in task.get("scope") or []]
    depth = _json_tag(body, "depth", 0)
    max_depth = _json_tag(body, "max_depth", 3)
    if len(scope) <= 3 or (isinstance(depth, int) and isinstance(max_depth, int) and depth >= max_depth):
        return _answer([], f"Scope has {len(scope)} paths at depth {depth}: small enough to do in one go.")
    units: dict[str, list[str]] = {}
    for path in scope:  # a source file and its test travel together
        units.setdefault(re.sub(r"\.(test|spec)(?=\.\w+$)", "", path), []).append(path)
    n = min(_limit(body, "children", 4), len(units), (len(scope) + 2) // 3)
    if n < 2:
        return _answer([], f"Scope has {len(scope)} paths in {len(units)} unit(s): no independent split.")
    per = -(-len(units) // n)
    unit_list = list(units.values())
    groups = [[p for u in unit_list[i:i + per] for p in u] for i in range(0, len(unit_list), per)]
    n = len(groups)
    title = str(task.get("title") or task.get("description", "task"))[:80]
    children = [
        {
            "title": f"{title} (part {i + 1}/{n})",
            "description": f"Part {i + 1} of '{title}': {task.get('description', '')} Only touch {', '.join(g)}.",
            "scope": g,
            "acceptance": [f"{p} exists and `npx tsc --noEmit` reports no errors in it" for p in g],
            "priority": _clamp_priority(task.get("priority", 5)),
            "feature_ids": [str(f) for f in task.get("feature_ids") or []],
            "kind": task.get("kind") if task.get("kind") in ("feature", "fix") else "feature",
        }
        for i, g in enumerate(groups)
    ]
    return _answer(children, f"Scope has {len(scope)} paths; splitting into {n} disjoint children.")


def reconcile(body: dict) -> dict:
    """Reconciler: one high-priority fix task per distinct failing file, skipping files already being fixed."""
    output = tag(body, "build_output") or ""
    open_fixes = _json_tag(body, "open_fixes", [])
    covered = {str(p) for t in open_fixes if isinstance(t, dict) for p in t.get("scope") or []}
    errors: dict[str, list[str]] = {}
    tests: set[str] = set()
    for line in output.splitlines():
        m = _TSC.match(line)
        if m:
            errors.setdefault(m.group(1), []).append(line.strip())
            continue
        m = _VITEST.match(line)
        if m:
            errors.setdefault(m.group(1), []).append(line.strip())
            tests.add(m.group(1))
    max_tasks = _limit(body, "tasks", 5)
    fixes: list[dict] = []
    for path, lines in errors.items():
        if path in covered or len(fixes) >= max_tasks:
            continue
        is_test = path in tests
        codes = sorted({c for c in re.findall(r"error (TS\d+)", "\n".join(lines))})
        fixes.append({
            "title": f"Fix failing tests in {path}" if is_test and not codes else f"Fix {', '.join(codes)} in {path}",
            "description": "The build on main fails here:\n" + "\n".join(lines[:5])
            + "\nFix the cause in this file without weakening types or deleting tests.",
            "scope": [path],
            "acceptance": [f"`npx vitest run {path}` passes" if is_test else f"`npx tsc --noEmit` reports no errors in {path}"],
            "priority": 2 if is_test else 1,
            "feature_ids": [],
            "kind": "fix",
        })
    return _answer(fixes, f"{len(errors)} failing files, {len(covered & set(errors))} already being fixed.")


def _tool_error(text: str) -> str | None:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        data = None
    if isinstance(data, dict) and (data.get("error") or data.get("ok") is False):
        return str(data.get("error") or data)
    head = (text or "").lstrip().lower()
    return text.strip() if head.startswith(("error", "failed", "traceback")) else None


def _call(name: str, **arguments: Any) -> dict:
    return {"name": name, "arguments": arguments}


def _text_of(message: dict) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else json.dumps(content)


def _is_presubmit_failure(message: dict) -> bool:
    return message.get("role") == "tool" and _text_of(message).lstrip().startswith(PRESUBMIT_FAILED)


def _attempt(task: dict) -> int:
    value = task.get("attempt", 1)
    try:
        return max(1, int(value)) if not isinstance(value, bool) else 1
    except (TypeError, ValueError):
        return 1


def _write_calls(scope: list[str], title: str, task_id: str, fault: str | None, pair: str | None = None) -> list[dict]:
    target = fault_target(fault, scope) if fault else None
    calls = []
    for path in scope:
        if path in ENTRY_PATHS:
            calls.append(_call("run", command=entry_add_command(path, title), timeout_s=30))
            continue
        content = file_content(path, title, scope)
        if fault and path == target:
            content += fault_snippet(fault, path, title, task_id, pair)
        calls.append(_call("write_file", path=path, content=content))
    if fault == "shared":
        calls.append(_call("run", command=shared_add_command(task_id, title), timeout_s=30))
    return calls


def _presubmit_quote(text: str, lines: int = 6) -> str:
    head, _, output = text.strip().partition("\n\n")
    quoted = [ln.rstrip() for ln in output.splitlines() if ln.strip()][:lines]
    return "\n".join([head.splitlines()[0][:300], *quoted])[:1500]


_STATUS_LINE = re.compile(r"^[ MADRCUT?!]{2} \S")  # one line of `git status --short`


def work(body: dict, faults: dict[str, float] | None = None, fault_attempts: int = 0) -> dict:
    """Worker: write the scope, check git status, finish; decided from the message history alone.

    With `faults`, the attempt rolled for the task may write a fault into its files and says so in a
    `Sim-Fault: <kind>` trailer; told by the agent that presubmit failed, it rewrites the scope cleanly
    once (`Sim-Fixed: <kind>`), and gives up as "failed" if presubmit fails again.
    """
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    task = _json_tag(body, "task", None)
    if not isinstance(task, dict):
        return {"content": None, "tool_calls": [_call("finish", status="blocked", summary="No <task> JSON in the first user message.")]}
    title = str(task.get("title") or task.get("description") or "task")[:100]
    scope = [str(p) for p in task.get("scope") or []][:MAX_WORKER_WRITES]
    task_id = str(task.get("id") or title)
    fault = worker_fault(faults, task_id, _attempt(task), scope, fault_attempts)
    pair = pair_key(str(task.get("base_sha") or "") or None, task_id)
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not turns:
        if not scope:
            return {"content": None, "tool_calls": [_call("finish", status="blocked", summary=f"'{title}' names no files in its scope.")]}
        calls = _write_calls(scope, title, task_id, fault, pair)
        return {"content": f"Writing {len(scope)} file(s) for '{title}'.", "tool_calls": calls,
                "reasoning": f"The scope is {', '.join(scope)}; write each file, then check git status."}
    results = [m for m in messages[turns[-1] + 1:] if m.get("role") == "tool"]
    failure = next((r for r in results if _is_presubmit_failure(r)), None)
    if failure is not None:
        if any(_is_presubmit_failure(m) for m in messages[:turns[-1]]):
            summary = "Presubmit still fails after my fix:\n" + _presubmit_quote(_text_of(failure))
            return {"content": None, "tool_calls": [_call("finish", status="failed", summary=summary)]}
        calls = _write_calls(scope, title, task_id, None)
        if fault == "shared":
            calls.append(_call("run", command=shared_undo_command(), timeout_s=30))
        return {"content": f"Presubmit failed; rewriting {len(scope)} file(s) for '{title}'.", "tool_calls": calls,
                "reasoning": "The checks failed on my branch: write the scope again without the mistake, then finish."}
    for r in results:
        err = _tool_error(_text_of(r))
        if err:
            return {"content": None, "tool_calls": [_call("finish", status="failed", summary=f"A tool failed: {err[:400]}")]}
    last_names = [(tc.get("function") or {}).get("name") for tc in messages[turns[-1]].get("tool_calls") or []]
    if "write_file" in last_names and len(turns) < MAX_WORKER_TURNS:
        return {"content": None, "tool_calls": [_call("run", command="git status --short", timeout_s=30)]}
    status = (results[-1].get("content") or "") if results else ""
    changed = [line for line in status.splitlines() if _STATUS_LINE.match(line)]
    summary = f"Implemented '{title}': wrote {', '.join(scope) or 'nothing'}."
    if changed:
        summary += f" {len(changed)} file{'s' if len(changed) > 1 else ''} changed."
    if fault:
        fixed = any(_is_presubmit_failure(m) for m in messages)
        summary += f"\n\n{FIXED_TRAILER if fixed else TRAILER}: {fault}"
        if fault == "semantic":
            summary += f"\n{PAIR_TRAILER}: {pair}"
    return {"content": None, "tool_calls": [_call("finish", status="complete", summary=summary)]}


def simulate(body: dict, faults: dict[str, float] | None = None, fault_attempts: int = 0) -> dict:
    """Decide the reply to one chat request from the request alone (and the worker's fault rates, if any)."""
    role = role_of(body)
    if role == "root-planner":
        return plan_root(body)
    if role == "subplanner":
        return plan_sub(body)
    if role == "worker":
        return work(body, faults, fault_attempts)
    if role == "reconciler":
        return reconcile(body)
    if is_external_worker(body):  # mini-swe-agent or Pi: their own system prompt, our <task>
        return work_external(body, faults, fault_attempts)
    return {"content": "fake LLM simulator: the system message does not start with an AgentSwarm role line "
                       f"({', '.join(ROLES)}), so there is nothing to simulate.", "tool_calls": []}
