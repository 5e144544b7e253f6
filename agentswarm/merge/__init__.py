"""The merge stage: the queue that alone writes `main`, and conflict-resolution tasks."""
