"""Planning: the root planner, the subplanner, and the parsing and validation of the tasks they propose."""
