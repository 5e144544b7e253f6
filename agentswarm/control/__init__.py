"""What a person reads and steers: the run's status and a task's story (read views), and the steering commands.

Used by the CLI, the dashboard and the monitor; no stage imports it.
"""
