"""A hostile branch cannot plant anything for the gate's next run (issue 26, hole 1).

The hostile branch's test passes and lands; while it runs it leaves something behind for the next
gate run: a git hook, a git config (hooksPath, fsmonitor, a smudge filter through info/attributes,
an include from $HOME), or a tool's rc file in $HOME, $TMPDIR or `..`. Every plant, if it ran,
would make the next tree look green (delete the type error, turn every test into `exit 0`). The
next branch is broken (a type error and a failing test): it must be the culprit, and main must
never point at it. Real Postgres, a real hub, the gate's real bubblewrap sandboxes.
"""

from __future__ import annotations

import pytest

from agentswarm.merge.queue import merge_task
from tests.git.hubkit import git
from tests.merge.test_gate_batch import attempts, complete

pytestmark = pytest.mark.bwrap

# The target's own check script (like a tool that reads ~/.npmrc, it reads an rc file if there is one).
CHECK = """for rc in "$HOME/.checkrc" "$TMPDIR/.checkrc" ../.checkrc; do [ -f "$rc" ] && . "$rc"; done
case "$1" in
types) ! grep -rqs 'TYPE ERROR' src ;;
tests) for t in tests/*.sh; do [ -e "$t" ] || continue; sh "$t" || exit 1; done ;;
esac
"""
COMMANDS = ["sh check.sh types", "sh check.sh tests"]
# What every plant runs: the broken tree made to look green (its type error gone, every test `exit 0`).
EVIL = """mkdir -p "$HOME/h"
cat > "$HOME/h/post-checkout" <<'EOF'
#!/bin/sh
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
grep -rl 'TYPE ERROR' src | xargs rm -f
for t in tests/*.sh; do echo 'exit 0' > "$t"; done
exit 0
EOF
chmod +x "$HOME/h/post-checkout"
"""
PLANTS = {
    "hook": EVIL + 'mkdir -p .git/hooks; cp "$HOME/h/post-checkout" .git/hooks/\n',
    "hooks-path": EVIL + 'git config core.hooksPath "$HOME/h"\n',
    "fsmonitor": EVIL + 'git config core.fsmonitor "$HOME/h/post-checkout"\n',
    "smudge-filter": "mkdir -p .git/info; echo '* filter=x' > .git/info/attributes\n"
                     "git config filter.x.smudge \"sh -c 'cat >/dev/null; echo exit 0'\"\n",
    "home-gitconfig": EVIL + 'printf "[core]\\n\\thooksPath = %s/h\\n" "$HOME" > "$HOME/.gitconfig"\n',
    "rc-files": 'for d in "$HOME" "$TMPDIR" ..; do echo "exit 0" > "$d/.checkrc"; done\n',
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_what_a_landed_branch_plants_never_reaches_the_next_gate_run(gate_hub, db, plant):
    hub, root, run_id, configure = gate_hub
    settings = configure(COMMANDS)
    seeded = complete(db, hub, root, run_id, "seed", {"check.sh": CHECK, "src/ok.ts": "export const ok = 1\n",
                                                       "tests/ok.sh": "exit 0\n"})
    assert merge_task(seeded, settings) == "merged"
    hostile = complete(db, hub, root, run_id, "hostile", {"tests/plant.sh": PLANTS[plant] + "exit 0\n"})
    assert merge_task(hostile, settings) == "merged"  # its test passed: it lands, and its plant is left behind
    broken = complete(db, hub, root, run_id, "broken", {"src/broken.ts": "const x: number = 'TYPE ERROR'\n",
                                                        "tests/broken.sh": "echo 'broken test'; exit 1\n"})
    broken_head = git(hub, "rev-parse", "swarm/broken")
    outcome = merge_task(broken, settings)
    by_task = {r.task_id: r for r in attempts(db)}
    assert outcome == "rejected" and by_task[broken].status == "rejected", (plant, by_task[broken].gate)
    main = git(hub, "rev-parse", "main")
    assert git(hub, "ls-tree", "-r", "--name-only", main).split() == ["README.md", "check.sh", "src/ok.ts", "tests/ok.sh",
                                                                       "tests/plant.sh"]
    assert broken_head not in git(hub, "rev-list", "main").split()
    assert all(r.main_after is None or "src/broken.ts" not in git(hub, "ls-tree", "-r", "--name-only", r.main_after)
               for r in by_task.values())
