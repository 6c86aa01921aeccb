"""Result files: the versioned schema and the store (atomic writes, resume, history)."""

from dlrs_bench.results.schema import SCHEMA_VERSION, ResultFile
from dlrs_bench.results.store import ResultStore

__all__ = ["SCHEMA_VERSION", "ResultFile", "ResultStore"]
