"""Training to a target: the loop, evaluation cadence, budgets, and the suite runner."""
