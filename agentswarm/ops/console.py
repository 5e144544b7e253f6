"""The swarm's terminal: every process's log file, followed and printed line by line behind its name.

supervisord writes each process's output to a file of its own; the console follows those files
(re-opening one that supervisord rotated) so one terminal shows them all, as a Procfile runner did.
For the files named `quiet` only warnings and errors are printed (with the traceback or lines that
follow them); their every line stays in the file. `make swarm` tells its story beside them
(ops/narrator.py); SWARM_CONSOLE=all prints every line as before.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path
from typing import TextIO

COLORS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94, 91)
CHUNK = 1 << 16
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")  # supervisord's own, said again by ours
# Where a log record starts: Celery's `[date time: LEVEL/process]`, supervisord's and the stdlib's
# `date time,ms LEVEL`, tornado's (Flower) `[L yymmdd`, and a JSON line (LOG_FORMAT=json).
RECORD = re.compile(r"^(\[\d{4}-\d\d-\d\d |\d{4}-\d\d-\d\d \d\d:|\[[DIWEC] \d{6} |\{\")")
LOUD = re.compile(r"^\[\d{4}-[^\]]*: (WARNING|ERROR|CRITICAL)/|^\d{4}-\d\d-\d\d [\d:,]+ (WARN|WARNING|ERROR|CRIT|CRITICAL) "
                  r"|^\[[WEC] \d{6} |\"level\": \"(WARNING|ERROR|CRITICAL)\"")

# Warnings that say nothing is wrong: Flower asks the workers before they are up.
ROUTINE = re.compile(r"Inspect method \w+ failed")


class Loud:
    """Which lines of one quiet file to print: records at WARNING or above, and the lines that follow them
    (a traceback) up to the next record."""

    def __init__(self) -> None:
        self.showing = False

    def __call__(self, line: str) -> bool:
        if RECORD.match(line):
            self.showing = bool(LOUD.search(line)) and not ROUTINE.search(line)
        elif line.startswith("Traceback (most recent call last)"):
            self.showing = True
        return self.showing


class Follow:
    """One file followed from its start: whole lines as they are written, across rotations."""

    def __init__(self, path: Path):
        self.path = path
        self._fh: io.BufferedReader | None = None
        self._inode = -1
        self._partial = b""

    def _open(self) -> bool:
        try:
            fh = open(self.path, "rb")  # kept open between reads
        except OSError:
            return False
        self._fh, self._inode = fh, os.fstat(fh.fileno()).st_ino
        return True

    def _read_all(self) -> bytes:
        data = b""
        while self._fh is not None and (chunk := self._fh.read(CHUNK)):
            data += chunk
        return data

    def lines(self) -> list[str]:
        """Complete lines written since the last call."""
        if self._fh is None and not self._open():
            return []
        data = self._read_all()
        try:
            rotated = os.stat(self.path).st_ino != self._inode
        except OSError:
            rotated = False  # renamed away and not yet re-created: keep reading the old file
        if rotated:
            self.close()
            if self._open():
                data += self._read_all()
        *whole, self._partial = (self._partial + data).split(b"\n")
        return [ln.decode("utf-8", "replace").rstrip("\r") for ln in whole]

    def rest(self) -> list[str]:
        """What is left after the last newline (the process ended mid-line)."""
        out = [self._partial.decode("utf-8", "replace")] if self._partial.strip() else []
        self._partial = b""
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class Console:
    """Prints each followed file's new lines as `HH:MM:SS name | line`."""

    def __init__(self, files: dict[str, Path], out: TextIO | None = None, quiet: frozenset[str] = frozenset()):
        self.out = out or sys.stdout
        self.follows = {name: Follow(path) for name, path in files.items()}
        self.shown = {name: Loud() for name in quiet}
        self.width = max(map(len, files), default=0)
        color = self.out.isatty() and not os.environ.get("NO_COLOR")
        self.labels = {name: (f"\x1b[{COLORS[i % len(COLORS)]}m{name:<{self.width}}\x1b[0m" if color
                              else f"{name:<{self.width}}") for i, name in enumerate(files)}

    def say(self, name: str, line: str) -> None:
        """Print one line under a name (the console's own lines too)."""
        label = self.labels.get(name, f"{name:<{self.width}}")
        self.out.write(f"{time.strftime('%H:%M:%S')} {label} | {line}\n")

    def pump(self, final: bool = False) -> None:
        """Print what every file gained; at the end, the unterminated last lines as well."""
        for name, follow in self.follows.items():
            lines = follow.lines() + (follow.rest() if final else [])
            shown = self.shown.get(name)
            for line in lines:
                if shown is None or shown(line):
                    self.say(name, STAMP.sub("", line, count=1))
        self.out.flush()

    def close(self) -> None:
        for follow in self.follows.values():
            follow.close()
