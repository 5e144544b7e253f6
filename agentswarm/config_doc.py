"""docs/configuration.md, generated from `Settings`: every field's variable, type, default and description.

The page is a function of agentswarm/config.py alone, so a test can regenerate it and compare. Groups are
the section comments of the `Settings` class body (a line `    # Heading` at the class's indentation);
fields keep their order in the class. Defaults render the same on every machine: a default computed by a
factory is shown only when it is a list of strings, absolute paths are shown relative to the checkout or
to `~`, and unset optional fields say so (their description gives the rule that fills them in).

    python -m agentswarm.config_doc           # rewrite docs/configuration.md
    python -m agentswarm.config_doc --check   # exit 1 when the file is out of date
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agentswarm.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m agentswarm.config_doc  (or: make docs)"

_SECTION = re.compile(r"^    # (?P<title>\S.*)$")
_FIELD = re.compile(r"^    (?P<name>[a-z][a-z0-9_]*)\s*:")

HEADER = """# Configuration

<!-- Generated from agentswarm/config.py by `python -m agentswarm.config_doc` (`make docs`); do not edit.
     tests/foundation/test_config_doc.py fails when this file and the settings differ. -->

Every setting is an environment variable (or a line of a `.env` file in the working directory), read into
one typed `Settings` object (`agentswarm/config.py`). A bad value stops start-up with one line naming the
variable and what it accepts. Names are case-insensitive. Lists are JSON (`'["npm test"]'`). Secrets are
never logged, stored or put in a sandbox.
"""


# Variables read outside Settings, on purpose: the sandbox side has no pydantic, the dashboard's token is a
# secret the CLI may load from a file, and the rest belong to tests or to deploy-time scripts.
OUTSIDE_SETTINGS = (
    ("AGENTSWARM_DASHBOARD_TOKEN", "bearer token for the dashboard: steering when set; off loopback also every "
     "read, and required to start there (`agentswarm dashboard --token-file PATH` reads it from a file) *(secret)*"),
    ("AGENTSWARM_PROMPTS_DIR", "where the prompt files live (default: `prompts/` of the checkout; the Modal "
     "worker image sets it)"),
    ("AGENTSWARM_MINI_BIN", "the `mini` executable of mini-swe-agent (else `mini` on PATH, else the tools cache)"),
    ("AGENTSWARM_PI_BIN", "the `pi` executable of the Pi coding agent"),
    ("AGENTSWARM_TOOLS_DIR", "where external agents are installed (default `~/.cache/agentswarm/tools/`)"),
    ("AGENTSWARM_STATUS_FILE", "set by the runner for an external agent: where it may write `{\"status\", "
     "\"summary\"}`"),
    ("AGENTSWARM_CHAOS_AT / _DIR / _CMD", "tests only: the failpoint a chaos test arms, where it marks a strike, "
     "what it runs there"),
    ("AGENTSWARM_REQUIRE_SERVICES", "tests: `1` (or `CI=true`) makes a missing Redis, Postgres or bubblewrap fail "
     "the tests instead of skipping them"),
    ("AGENTSWARM_DASHBOARD_SHOT", "tests: `tests/e2e/test_preview.py` saves a screenshot of the dashboard there"),
    ("GLM_*", "read at deploy time by `infra/deploy_glm5.py` (model, image, GPUs, parsers, SGLang flags, "
     "`GLM_SPECULATIVE`); see that file"),
    ("MODAL_TOKEN_ID / MODAL_TOKEN_SECRET", "Modal's own credentials (else `~/.modal.toml`) *(secret)*"),
    ("NO_COLOR", "plain `make swarm` console output"),
)


def field_groups() -> list[tuple[str, list[str]]]:
    """(section title, field names) in the order of the class body; fields before any section are 'General'."""
    lines, _ = inspect.getsourcelines(Settings)
    groups: list[tuple[str, list[str]]] = [("General", [])]
    for line in lines:
        line = line.rstrip("\n")
        if section := _SECTION.match(line):
            groups.append((section["title"].split(":")[0].rstrip("."), []))
        elif (found := _FIELD.match(line)) and found["name"] in Settings.model_fields:
            groups[-1][1].append(found["name"])
    return [(title, names) for title, names in groups if names]


def variable(name: str, info: FieldInfo) -> str:
    """The environment variable that sets a field (its first alias, else its name), upper-cased."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0].upper()
    if isinstance(alias, str):
        return alias.upper()
    return name.upper()


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _type_name(args[0]) + " (optional)" if len(args) == 1 else " or ".join(map(_type_name, args))
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is list:
        return "JSON list of strings" if args == [str] else "JSON list"
    if origin is tuple:
        return "comma-separated list"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


_BOUNDS = ((annotated_types.Gt, ">"), (annotated_types.Ge, "≥"), (annotated_types.Lt, "<"), (annotated_types.Le, "≤"))


def type_of(info: FieldInfo) -> str:
    """The field's type for a reader, with its bounds (`integer, > 0`)."""
    bounds = [f"{sign} {_number(getattr(meta, kind.__name__.lower()))}"
              for meta in info.metadata for kind, sign in _BOUNDS if isinstance(meta, kind)]
    return ", ".join([_type_name(info.annotation)] + bounds)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _stable_path(path: Path) -> str:
    if not path.is_absolute():
        return str(path) if str(path).startswith(("./", "../")) else f"./{path}"
    for base, shown in ((ROOT, "."), (Path.home(), "~")):
        if path.is_relative_to(base):
            return f"{shown}/{path.relative_to(base)}"
    return str(path)


def _value(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return _stable_path(value)
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value)) if value else "*(empty)*"
    if isinstance(value, (int, float)):
        return _number(value)
    return str(value)


def default_of(info: FieldInfo) -> str:
    """The default as a reader would set it; the same text on every machine."""
    if info.default_factory is not None:
        made = info.default_factory()  # type: ignore[call-arg]
        if isinstance(made, (list, tuple)) and all(isinstance(v, str) for v in made):
            return f"`{json.dumps(list(made))}`"
        return "*(computed at start)*"
    value = info.default
    if value is PydanticUndefined:
        return "*(required)*"
    if value is None:
        return "*(unset)*"
    if value == "" or value == ():
        return "*(empty)*"
    return f"`{_value(value)}`"


def _cell(text: str) -> str:
    """One table cell: one line, `|` escaped, and `<...>` outside code spans kept as text, not HTML."""
    spans = " ".join(text.split()).replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for i, part in enumerate(spans))


def render() -> str:
    """The whole page."""
    fields = Settings.model_fields
    out = [HEADER]
    out.append("Groups: " + " · ".join(f"[{title}](#{_anchor(title)})" for title, _ in field_groups()) + "\n")
    for title, names in field_groups():
        out.append(f"## {title}\n")
        out.append("| variable | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for name in names:
            info = fields[name]
            secret = " *(secret)*" if info.repr is False else ""
            out.append(f"| `{variable(name, info)}` | {_cell(type_of(info))} | {_cell(default_of(info))} | "
                       f"{_cell(info.description or '')}{secret} |")
        out.append("")
    out.append("## Read outside Settings\n")
    out.append("| variable | meaning |")
    out.append("| --- | --- |")
    out.extend(f"| `{name}` | {_cell(meaning)} |" for name, meaning in OUTSIDE_SETTINGS)
    out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        if DOC.exists() and DOC.read_text() == text:
            return 0
        print(f"{DOC.relative_to(ROOT)} is out of date with agentswarm/config.py; run: {REGENERATE}")
        return 1
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)} ({len(fields_without_description())} fields without a description)")
    return 0


def fields_without_description() -> list[str]:
    """Variables whose field has no description (the doc test requires none)."""
    return [variable(n, f) for n, f in Settings.model_fields.items() if not (f.description or "").strip()]


if __name__ == "__main__":
    raise SystemExit(main())
