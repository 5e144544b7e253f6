"""The work stage: take a task, drive one sandboxed agent through it, keep it alive, hand off."""
