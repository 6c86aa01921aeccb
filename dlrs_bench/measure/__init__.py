"""Measurements: quality metrics, step timing, memory, environment, MLPerf-style event log."""
