"""The monitor stage: stuck tasks, lost messages, orphan sandboxes, metrics."""
