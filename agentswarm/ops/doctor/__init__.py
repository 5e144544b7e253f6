"""`agentswarm doctor`: the validation ladder before a run, one line per step with ✓/✗ and the fix.

Steps run in order; a step whose prerequisite failed is skipped (–) and says which one. The ladder
fails (exit 1) when any step fails. Nothing here prints a key: URLs are shown without their
credentials and every detail is scrubbed of the settings' secrets.
"""

from __future__ import annotations

from agentswarm.ops.doctor.ladder import Ladder, Step, StepStatus
from agentswarm.ops.doctor.run import run_doctor

__all__ = ["Ladder", "Step", "StepStatus", "run_doctor"]
