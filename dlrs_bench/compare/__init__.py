"""Comparing results with published reference tables: loading, matching, verdicts."""
