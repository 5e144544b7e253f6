"""The package's import graph, read with `ast`: no circle among agentswarm modules, function-local imports included.

A circle means two modules cannot be read (or loaded) without each other; stages send messages
by name (`queue.send`) precisely so that none forms through the Celery entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "agentswarm"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every agentswarm module `path` imports, anywhere in the file (functions and TYPE_CHECKING too)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the submodule mod; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` loads a, a.b and a.b.c
                target = target.rpartition(".")[0]
            if target and target != me and target != "agentswarm":
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) for name, path in files.items()}


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_no_import_circle_in_the_package():
    circles = find_circles(import_graph())
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_checker_sees_function_local_and_from_package_imports(tmp_path):
    graph = {"agentswarm.a": {"agentswarm.b"}, "agentswarm.b": {"agentswarm.c"}, "agentswarm.c": {"agentswarm.a"},
             "agentswarm.d": {"agentswarm.a"}}
    assert find_circles(graph) == [["agentswarm.a", "agentswarm.b", "agentswarm.c"]]
    real = import_graph()
    # function-local: the Celery entry points import their stages inside the task functions
    assert "agentswarm.work.stage" in real["agentswarm.tasks"]
    # `from agentswarm.ops import steering` names the module steering
    assert "agentswarm.control.steering" in real["agentswarm.dashboard.actions"]


def test_nothing_imports_the_celery_entry_points():
    importers = sorted(m for m, deps in import_graph().items() if "agentswarm.tasks" in deps)
    assert importers == [], f"{importers} import agentswarm.tasks: send by name (agentswarm.queue.send)"


STAGES = ("planning", "work", "merge", "reconcile", "lifecycle", "queue", "db", "git", "sandbox", "agent", "llm")
ABOVE_THE_STAGES = ("agentswarm.control", "agentswarm.ops", "agentswarm.dashboard", "agentswarm.tasks")


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_stage_imports_the_surfaces_above_it():
    """The stages are below the CLI, the dashboard, the read views and the Celery entry points: an import
    of one of those from a stage runs back up the house (and soon into a circle)."""
    bad = sorted(f"{m} -> {d}" for m, deps in import_graph().items()
                 if any(_inside(m, f"agentswarm.{s}") for s in STAGES)
                 for d in deps if any(_inside(d, top) for top in ABOVE_THE_STAGES))
    assert bad == [], bad


def test_no_stage_imports_the_demo():
    """The simulator and the fake model are demo mode's, started as a process of their own; production code
    reaches them only by URL (and the chaos failpoints stand on the ground floor, agentswarm/chaos.py)."""
    bad = sorted(f"{m} -> {d}" for m, deps in import_graph().items()
                 if any(_inside(m, f"agentswarm.{s}") for s in (*STAGES, "monitor", "config"))
                 for d in deps if _inside(d, "agentswarm.demo"))
    assert bad == [], bad
