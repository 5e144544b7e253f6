"""The operator's surface: the CLI, `make swarm`, services, status, steering, endpoint checks."""
