"""Starting a local sandbox's command cheaply: its resource limits set by one small program, bytecode ready.

A command runs behind what sets the sandbox's rlimits and then execs it: util-linux's `prlimit` (a C
program, like `setpriv`, read-only under /usr in every sandbox) or, where it is missing, a Python
launcher, which costs a second interpreter start for the runner. Either rather than preexec_fn, which
may deadlock in a process with many threads (the work worker runs a hundred). A sandbox cannot raise
a hard limit, so a limit above the orchestrator's own hard limit (which sandboxes inherit) is lowered to it.

Sandboxes see the package read-only: the bytecode of what the runner imports is written here, once
per process, so that no sandbox compiles it again on every start.
"""

from __future__ import annotations

import compileall
import functools
import json
import os
import resource
import shutil
from pathlib import Path

import agentswarm

PRLIMIT_FLAGS = {"RLIMIT_CPU": "--cpu", "RLIMIT_DATA": "--data", "RLIMIT_FSIZE": "--fsize",
                 "RLIMIT_NPROC": "--nproc", "RLIMIT_NOFILE": "--nofile", "RLIMIT_CORE": "--core"}
_SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/")  # read-only in every sandbox, at the same path
LAUNCHER = (
    "import json,os,resource,sys\n"
    "for n,v in json.loads(sys.argv[1]).items():\n"
    "    r=getattr(resource,n); s,h=resource.getrlimit(r)\n"
    "    v=v if h==resource.RLIM_INFINITY else min(v,h)\n"
    "    resource.setrlimit(r,(v,v))\n"
    "try:\n"
    "    os.execvp(sys.argv[2],sys.argv[2:])\n"
    "except OSError as e:\n"
    "    print(f'sandbox: cannot run {sys.argv[2]!r}: {e}',file=sys.stderr); sys.exit(127)\n"
)


@functools.cache
def prlimit() -> str | None:
    """util-linux's prlimit, when it is where every sandbox sees it (under /usr, read-only); else None."""
    found = shutil.which("prlimit", path=f"{os.defpath}:/usr/bin:/bin")
    return found if found and os.path.realpath(found).startswith(_SYSTEM_PREFIXES) else None


def capped(name: str, value: int) -> int:
    """A limit no higher than this process's hard limit."""
    _soft, hard = resource.getrlimit(getattr(resource, name))
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def limited(argv: list[str], limits: dict[str, int], python: str) -> list[str]:
    """argv behind what sets these limits (soft and hard) and then execs it; exit 127 if argv cannot start."""
    tool = prlimit()
    if tool is None:
        return [python, "-I", "-S", "-c", LAUNCHER, json.dumps(limits), *argv]
    flags = [f"{PRLIMIT_FLAGS[name]}={capped(name, v)}:{capped(name, v)}" for name, v in limits.items()]
    return [tool, *flags, "--", *argv]


@functools.cache
def compile_package() -> bool:
    """Write the package's missing or stale bytecode (once per process); False if it could not be written."""
    try:
        return bool(compileall.compile_dir(str(Path(agentswarm.__file__).resolve().parent), quiet=2))
    except OSError:
        return False  # a read-only install: each sandbox compiles what it imports, as before
