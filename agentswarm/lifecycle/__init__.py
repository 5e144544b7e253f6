"""A task's life, shared by every stage: dispatch, handoffs, parents, runs, budgets, features, accounting."""
