"""Git on the orchestrator side, in one layer: repository handles, plumbing, the hub, landing strategies."""
